"""``contaudit order``: the item-order statistic of Oren et al. (2023), computed for one model.

A model that trained on a benchmark *file* saw its items in the published order, and
finds that order more likely than shuffled ones; a model that never saw the file has
no reason to prefer it. The test needs no clean model. Here:

1. the items, in their published (file) order, are cut into ``shards`` runs of
   consecutive items (:func:`shard_bounds`; sizes differ by at most one);
2. shard ``s`` is scored as one text, its items joined with ``separator``, in the
   published order and in ``permutations`` random orders drawn from
   ``SeedSequence(seed).spawn(shards)[s]`` (:func:`draw_permutations`), so every order
   is reproducible from the seed;
3. each text's log-likelihood is the sum of the natural-log probabilities of all its
   tokens, the first conditioned on the model's context token (BOS, else EOS) as in
   ``score``, the same for every order. A text longer than the context is scored with
   the sliding window of :func:`~contaudit.scoring.likelihood.plan_windows`
   (``max_length``, ``stride``), each token once, with at least
   ``max_length - stride`` tokens of context;
4. the file this writes (``{"canonical": [per shard], "shuffled": [[per order] per
   shard], ...}``) is what ``contaudit analyze --item-order`` reads; the test itself
   (the mean over shards of the gap ``canonical - mean(shuffled)``, an exact
   stratified randomisation test: in each shard the published order could have been
   any of its ``permutations + 1`` orders) is :func:`contaudit.analysis.did.item_order_test`.

**Validity.** Under the null hypothesis (the model never saw the items in this order)
the published order must be *exchangeable* with the random ones: as likely a priori as
any other. That holds when the benchmark's order carries no information a model could
know without the file (items in random order, or ordered by an id unrelated to
content). A benchmark sorted by something the model can read off the text (length,
topic, difficulty, date when style drifts) breaks it: the published order can then be
more likely for an honest model too. A test set whose ids are sorted in the published
order (:func:`sorted_ids`) is such a case: its order may be nothing but a sort by id,
and ids or texts that count up (``problem/0``, ``problem/1``, ...) can make the sorted
order more likely for an honest model. The stage then warns
(:class:`PublishedOrderWarning`), and the file and its manifest record
``"published_order_sorted": true`` with the sentence under ``"warnings"``, for the
analysis to repeat. Beyond exchangeability the p-value assumes nothing: it is exact
for any distribution of the log-likelihoods.

Results are cached per text (SHA-256 of the text) under a key of model fingerprint,
dtype, device, context token and window settings, in ``.contaudit-cache`` beside the
output, like the scores of ``score``; a rerun computes nothing.

Example::

    from contaudit.scoring.item_order import item_order_scores
    r = item_order_scores("models/suspect", "sets/test.jsonl", "runs/a/item_order.json")
    print(r.test().pvalue)
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from contaudit.config import AnalysisSettings, ItemOrderConfig, ScoreSettings
from contaudit.errors import InputError
from contaudit.io import Item
from contaudit.manifest import describe_path, make_manifest, write_json_atomic
from contaudit.models import resolve_model
from contaudit.scoring.cache import ScoreCache, text_hash
from contaudit.scoring.engine import (ModelSession, Progress, batch_budgets, cache_keys, check_job,
                                      manifest_path, open_model, resolve_lengths, tokenize)
from contaudit.scoring.likelihood import Row, plan_windows

ORDER_FORMAT = 1
CACHE_VERSION = 1


class PublishedOrderWarning(UserWarning):
    """The published order looks like a sort (by id), so it may not be exchangeable with random orders."""


# --- the orders ---------------------------------------------------------------------------


def _natural_key(text: str) -> tuple:
    """``"problem/10"`` -> ``("problem/", 10, "")``: digit runs compare as numbers."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text)))


def sorted_ids(ids: list[str]) -> str | None:
    """How ``ids``, in their published order, are sorted; None when they are not.

    Ids that all parse as integers are compared as numbers; other ids as strings, and
    "naturally" (digit runs as numbers, so ``q2`` comes before ``q10``). Descending
    counts too. Fewer than three ids are never called sorted (two are by chance half
    the time).

    >>> sorted_ids(["HumanEval/0", "HumanEval/1", "HumanEval/2", "HumanEval/10"])
    'ascending (digit runs as numbers)'
    >>> sorted_ids(["7", "12", "3"]) is None
    True
    """
    if len(ids) < 3:
        return None
    try:
        keys = {"as integers": [int(i) for i in ids]}
    except ValueError:  # text and digit runs alternate in every natural key, so any two compare
        keys = {"as strings": list(ids), "digit runs as numbers": [_natural_key(i) for i in ids]}
    for how, k in keys.items():
        if all(a < b for a, b in zip(k, k[1:])):
            return f"ascending ({how})"
        if all(a > b for a, b in zip(k, k[1:])):
            return f"descending ({how})"
    return None


def sorted_order_warning(ids: list[str]) -> str | None:
    """The warning sentence when ``ids`` are sorted in the published order (:func:`sorted_ids`), else None."""
    how = sorted_ids(ids)
    if how is None:
        return None
    first = ", ".join(repr(i) for i in ids[:3])
    return (f"The test set's ids are sorted in the published order ({how}: {first}, ...): the order may be "
            f"nothing but a sort by id, not the order of a training file, and a model can prefer a sorted "
            f"order for reasons other than contamination (ids or texts that count up). The order test then "
            f"needs the sorted order to be exchangeable with random orders; treat a small p-value with caution.")


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """``(start, end)`` of ``n_shards`` runs of consecutive items; sizes differ by at most one.

    Every shard needs two items, or there is no other order to compare with.

    >>> shard_bounds(7, 3)
    [(0, 3), (3, 5), (5, 7)]
    """
    if n_shards < 1:
        raise InputError(f"`shards` must be a positive integer; got {n_shards!r}")
    if n_items < 2 * n_shards:
        raise InputError(f"`shards` ({n_shards}) must be at most half the number of items ({n_items}): every "
                         f"shard needs 2+ items to be put in another order; lower `shards` (at most "
                         f"{max(n_items // 2, 1)})")
    size, extra = divmod(n_items, n_shards)
    edges = np.cumsum([0] + [size + (1 if s < extra else 0) for s in range(n_shards)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def draw_permutations(sizes: list[int], n_permutations: int, seed: int) -> list[list[list[int]]]:
    """``n_permutations`` random orders of each shard, ``[shard][permutation] -> item positions``.

    Shard ``s`` draws from ``numpy.random.default_rng(SeedSequence(seed).spawn(len(sizes))[s])``,
    so a shard's orders do not depend on the other shards' sizes. The published order
    itself may be drawn (with probability 1/m! for m items); it counts like any other.
    """
    if n_permutations < 1:
        raise InputError(f"`permutations` must be a positive integer; got {n_permutations!r}")
    streams = np.random.SeedSequence(seed).spawn(len(sizes))
    out = []
    for size, stream in zip(sizes, streams):
        rng = np.random.default_rng(stream)
        out.append([rng.permutation(size).tolist() for _ in range(n_permutations)])
    return out


@dataclass(frozen=True)
class Shard:
    """One shard: its items' ids, the published-order text and the shuffled texts."""

    ids: tuple[str, ...]
    canonical: str
    shuffled: tuple[str, ...]
    permutations: tuple[tuple[int, ...], ...]


def build_shards(items: list[Item], config: ItemOrderConfig, seed: int) -> list[Shard]:
    """The shards of ``items`` (published order) with their texts in every order (see the module doc)."""
    bounds = shard_bounds(len(items), config.shards)
    perms = draw_permutations([b - a for a, b in bounds], config.permutations, seed)
    shards = []
    for (a, b), orders in zip(bounds, perms):
        texts = [it.text for it in items[a:b]]
        shards.append(Shard(tuple(it.id for it in items[a:b]), config.separator.join(texts),
                            tuple(config.separator.join(texts[i] for i in order) for order in orders),
                            tuple(tuple(order) for order in orders)))
    return shards


# --- scoring --------------------------------------------------------------------------------


@dataclass
class ItemOrderScores:
    """What :func:`item_order_scores` computed and wrote."""

    out: Path
    manifest: Path
    canonical: np.ndarray  # (n_shards,) log-likelihood of each shard in the published order, nats
    shuffled: np.ndarray  # (n_shards, n_permutations)
    n_items: int
    seed: int
    from_cache: int  # distinct texts found in the cache
    tokens_computed: int
    seconds: float
    compute_seconds: float
    model_id: str
    settings: dict = field(default_factory=dict)
    published_order_sorted: bool = False  # the ids are sorted in the published order (see :func:`sorted_ids`)
    warnings: list[str] = field(default_factory=list)  # also in the file and its manifest

    def test(self, *, confidence_level: float = 0.95, n_resamples: int = 100_000, rng=None):
        """The order test on these log-likelihoods (:func:`~contaudit.analysis.did.item_order_test`)."""
        from contaudit.analysis.did import item_order_test

        return item_order_test(self.canonical, self.shuffled, n_resamples=n_resamples,
                               confidence_level=confidence_level, rng=rng)


def _cache_key(session: ModelSession, max_length: int, stride: int) -> dict:
    """What a cached log-likelihood depends on besides its text: the engine's keys
    (:func:`~contaudit.scoring.engine.cache_keys`), the stride, this stage's kind and version."""
    common = cache_keys(session.loaded, max_length, session.runner.facts.get("transformers"))
    return {"kind": "item_order", **{k: common[k] for k in ("model", "dtype", "device", "context_token", "max_length")},
            "stride": stride, "transformers": common["transformers"], "version": CACHE_VERSION}


def _log_likelihoods(session: ModelSession, texts: dict[str, str], cache: ScoreCache, found: dict, *,
                     max_length: int, stride: int, batch_tokens: int, progress: Progress | None) -> int:
    """Score every text (by hash) not in ``found`` on the session's runner (one model here, or its
    replicas); add ``{"logprob", "n_tokens"}`` to ``found`` and the cache. Returns the tokens computed.
    """
    loaded = session.loaded
    todo = {h: t for h, t in texts.items() if h not in found}
    ctx = [loaded.context_token] if loaded.context_token is not None else []
    keys = list(todo)
    encoded = tokenize([todo[h] for h in keys], loaded.tokenizer)
    rows, n_windows, n_tokens = [], {}, {}
    for h, text_ids in zip(keys, encoded):
        ids = ctx + list(text_ids)
        if len(ids) < 2:
            raise InputError("a shard has fewer than two tokens and the tokenizer has no BOS/EOS token to "
                             "condition the first one on")
        windows = plan_windows(len(ids), max_length=max_length, stride=stride)
        n_windows[h], n_tokens[h] = len(windows), len(ids) - 1
        rows += [Row((h, w), ids[a:b], first - a) for w, (a, b, first) in enumerate(windows)]
    total = sum(len(r.ids) - r.first_target for r in rows)
    if progress and total:
        progress("item order", 0, total)
    pending: dict[str, dict[int, float]] = {}
    done = 0
    for group, stats, n in session.runner.likelihood(rows, batch_tokens=batch_tokens,
                                                     pad_id=loaded.context_token or 0):
        finished = {}
        for row, s in zip(group, stats):
            h, w = row.key
            pending.setdefault(h, {})[w] = float(np.sum(s[:, 0], dtype=np.float64))
            if len(pending[h]) == n_windows[h]:
                parts = pending.pop(h)
                finished[h] = {"logprob": math.fsum(parts[i] for i in range(len(parts))),
                               "n_tokens": n_tokens[h]}
        cache.add(finished)  # on disk before the next batch: a kill loses at most one batch
        found.update(finished)
        done += n
        if progress:
            progress("item order", done, total)
    return done


def item_order_scores(model: str | Path, data: str | Path, out: str | Path, config: ItemOrderConfig | None = None,
                      settings: ScoreSettings | None = None, *, progress: Progress | None = None,
                      session: ModelSession | None = None) -> ItemOrderScores:
    """Score ``data``'s shards in the published and in shuffled orders with ``model``; write ``out``.

    Parameters
    ----------
    model : path
        A local Hugging Face directory or ``.gguf`` file (see ``contaudit score``).
    data : path
        The benchmark items (JSON Lines / Parquet), in their published order.
    out : path
        A ``.json`` file (``contaudit analyze --item-order`` reads it); a manifest
        (``NAME.manifest.json``: model fingerprint, settings, seed, timing) goes beside it.
    config : ItemOrderConfig
        Shards, permutations, separator and seed (None: the ``[analysis]`` default seed).
    settings : ScoreSettings
        Device, dtype, batch size, window (``max_length``, ``stride``), threads, fields
        and cache, as for ``score``.
    progress : callable, optional
        ``progress(phase, done_tokens, total_tokens)`` as batches finish.
    session : ModelSession, optional
        ``model`` already open (:func:`~contaudit.scoring.open_model`: here, or as
        replicas), to use instead of opening it again. Without it ``model`` is opened
        as ``score`` opens it, with ``settings``' ``devices`` and ``replicas``.

    Returns
    -------
    ItemOrderScores
        The log-likelihoods; ``.test()`` runs the order test on them.

    Warns
    -----
    PublishedOrderWarning
        When the ids are sorted in the published order (:func:`sorted_order_warning`;
        not with ``settings.id_field=None``, where the ids are record numbers). The
        sentence is also in ``.warnings``, and under ``"warnings"`` (with
        ``"published_order_sorted": true``) in the file and its manifest.
    """
    config = config or ItemOrderConfig()
    settings = replace(settings or ScoreSettings(), completion=False)  # whole texts only
    config.validate()
    settings.validate()
    seed = config.seed if config.seed is not None else AnalysisSettings().seed
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    if out.is_dir() or not out.name.endswith(".json"):
        raise InputError("the output must be a .json file path, e.g. runs/NAME/item_order.json", path=out)
    job = check_job(data, out, settings, model=model)
    items = job.items
    empty = next((it for it in items if not it.text.strip()), None)
    if empty is not None:
        raise InputError(f"item {empty.id!r} has an empty text; every item must have text to be ordered",
                         path=data, record=empty.record)
    try:
        shards = build_shards(items, config, seed)
    except InputError as e:
        raise InputError(str(e), path=data) from None
    sorted_warning = sorted_order_warning([it.id for it in items]) if settings.id_field is not None else None
    notes = [sorted_warning] if sorted_warning else []
    if sorted_warning:
        warnings.warn(sorted_warning, PublishedOrderWarning, stacklevel=2)

    reuse = session is not None and session.source == resolve_model(model, settings.gguf_file)
    opened = contextlib.nullcontext(session) if reuse else open_model(model, settings, hashes_dir=job.cache_dir)
    with opened as session:
        loaded, fp, facts = session.loaded, session.fingerprint, session.runner.facts
        max_length, stride = resolve_lengths(settings, loaded)
        batch_tokens = batch_budgets(settings, loaded.device.type)["likelihood"]
        cache = ScoreCache(job.cache_dir, _cache_key(session, max_length, stride))
        found = cache.load()
        texts = {text_hash(t): t for s in shards for t in (s.canonical, *s.shuffled)}
        from_cache = sum(1 for h in texts if h in found)
        t0 = time.perf_counter()
        computed = _log_likelihoods(session, texts, cache, found, max_length=max_length, stride=stride,
                                    batch_tokens=batch_tokens, progress=progress)
        compute_seconds = time.perf_counter() - t0

    canonical = np.array([found[text_hash(s.canonical)]["logprob"] for s in shards])
    shuffled = np.array([[found[text_hash(t)]["logprob"] for t in s.shuffled] for s in shards])
    resolved = {**asdict(config), "seed": seed, "max_length": max_length, "stride": stride,
                "device": str(loaded.device), "dtype": str(loaded.dtype).removeprefix("torch."),
                "batch_tokens": batch_tokens, "cpu_workers": facts["cpu_workers"],
                "threads_per_worker": facts["threads_per_worker"],
                "cache_dir": str(job.cache_dir) if job.cache_dir else None, "context_token_id": loaded.context_token}
    result = ItemOrderScores(out, manifest_path(out), canonical, shuffled, len(items), seed, from_cache, computed,
                             0.0, compute_seconds, fp["id"], resolved, sorted_warning is not None, notes)
    test = result.test()
    write_json_atomic(out, {
        "kind": "contaudit-item-order", "format": ORDER_FORMAT,
        "canonical": canonical.tolist(), "shuffled": shuffled.tolist(),
        "n_tokens": [found[text_hash(s.canonical)]["n_tokens"] for s in shards],
        "shards": [{"ids": list(s.ids), "n_items": len(s.ids)} for s in shards],
        "permutations": [[list(p) for p in s.permutations] for s in shards],
        "settings": {k: resolved[k] for k in ("shards", "permutations", "separator", "seed", "max_length",
                                               "stride")},
        "model": {"id": fp["id"], "path": fp["path"]},
        "test": test.to_dict(),
        "published_order_sorted": result.published_order_sorted,
        "warnings": notes,
    })
    result.seconds = time.perf_counter() - started
    manifest = make_manifest(
        "item_order", inputs=[describe_path(data)], parameters=resolved, model=fp,
        tokenizer=loaded.describe_tokenizer(), outputs=[describe_path(out)],
        counts={"items": len(items), "shards": len(shards), "permutations": config.permutations,
                "texts": len(texts), "from_cache": from_cache},
        timing={"seconds": round(result.seconds, 3), "compute_seconds": round(compute_seconds, 3),
                "tokens_computed": computed,
                "tokens_per_second": round(computed / compute_seconds, 1) if compute_seconds > 0 else None},
        published_order_sorted=result.published_order_sorted, warnings=notes)
    write_json_atomic(result.manifest, manifest)
    return result

