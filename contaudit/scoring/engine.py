"""``score``: per-item metrics of one model on one item file, resumable, with a manifest.

The steps: check the model path and read the items (errors name the path and record),
fingerprint the weights, load the model, tokenize, decide which items are skipped and
why, take finished scores from the cache, score the rest in length-sorted batches
(appending each batch to the cache), then write the scores in input order and the
manifest, both atomically.

The batches run on a *runner*: :class:`LocalRunner` (one model in this process, on one
device or split across ``devices``; on CPU on single-threaded workers) or a pool of
model replicas (:mod:`contaudit.scoring.replicas`: processes or Ray actors), chosen by
:func:`open_runner` from the settings. Either way this module plans the batches, joins
windows into items and writes the cache, so the scores do not depend on the runner.
"""

from __future__ import annotations

import contextlib
import math
import time
from importlib import metadata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from contaudit.config import ScoreSettings
from contaudit.errors import InputError
from contaudit.io import Item, load_items
from contaudit.manifest import (check_can_create, describe_path, make_manifest, manifest_beside, write_json_atomic,
                                write_jsonl_atomic)
from contaudit.scoring.cache import ScoreCache, text_hash
from contaudit.scoring.completion import completion_metrics
from contaudit.scoring.likelihood import Row, byte_metrics, likelihood_metrics, plan_windows
from contaudit.models import FileHashes, LoadedModel, ModelSource, fingerprint, load_model, resolve_model
from contaudit.scoring.runner import LocalRunner

# CPU values chosen by measurement (benchmarks/scoring_throughput.py, docs/scoring.md);
# the GPU values are not measured here (no GPU was available).
DEFAULT_BATCH_TOKENS = {"cpu": 256, "cuda": 16384}
DEFAULT_COMPLETION_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
CACHE_DIR_NAME = ".contaudit-cache"
METRICS_VERSION = 2  # 2: completion rows carry suffix_logprob

Progress = Callable[[str, int, int], None]


@dataclass
class Skip:
    """An item that was not scored, and why."""

    id: str
    record: int
    reason: str  # short code, e.g. "empty_text"
    detail: str


@dataclass
class ScoreResult:
    """What :func:`score` did: where it wrote, what it scored and skipped, how fast."""

    out: Path
    manifest: Path
    n_items: int
    n_scored: int
    skipped: list[Skip]
    from_cache: int
    tokens_computed: int
    seconds: float  # the whole call, loading included
    compute_seconds: float  # the forward passes and decoding only
    model_id: str
    device: str
    dtype: str
    settings: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_computed / self.compute_seconds if self.compute_seconds > 0 else 0.0


@dataclass
class _Plan:
    """One item's tokenized inputs, or why it is skipped."""

    item: Item
    text_key: str = ""
    ids: list[int] = field(default_factory=list)  # context token + text tokens
    prompt_key: str = ""
    prompt: list[int] = field(default_factory=list)  # context token + (truncated) prefix tokens
    suffix: list[int] = field(default_factory=list)
    prefix_tokens: int = 0
    skip: Skip | None = None


def manifest_path(out: Path) -> Path:
    """Where the manifest of ``out`` goes: ``NAME.manifest.json`` beside ``NAME.jsonl`` (or ``NAME.json``)."""
    return manifest_beside(out)


def _load_items(data: Path, settings: ScoreSettings) -> list[Item]:
    try:
        items = load_items(data, text_field=settings.text_field, id_field=settings.id_field)
    except OSError as e:  # unreadable file or directory
        raise InputError(f"cannot read the data file ({e.strerror or e})", path=data) from None
    if settings.completion:
        for item in items:
            for name in ("prefix", "suffix"):
                value = item.fields.get(name)
                if not isinstance(value, str):
                    what = "missing" if value is None else f"a {type(value).__name__}, not a string"
                    raise InputError(f"completion needs string fields 'prefix' and 'suffix'; {name!r} is {what} "
                                     "(write probe files with `contaudit probes`)", path=data, record=item.record)
    return items


def tokenize(texts: list[str], tokenizer) -> list[list[int]]:
    """The token ids of each text, without special tokens."""
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _split_boundary(prefix: str, suffix: str) -> tuple[str, str]:
    """Move whitespace at the end of the prefix to the start of the suffix.

    Tokenizers attach a space to the word after it (" The"), so "dog. " + "The" would
    otherwise end the prompt with a lone space token the model almost never sees.
    """
    stripped = prefix.rstrip()
    return stripped, prefix[len(stripped):] + suffix


def _plan_items(items: list[Item], loaded: LoadedModel, *, completion: bool, max_length: int) -> list[_Plan]:
    """Tokenize every item and decide which are skipped (with a reason)."""
    ctx = [loaded.context_token] if loaded.context_token is not None else []
    tok = loaded.tokenizer
    plans = [_Plan(item) for item in items]
    text_ids = tokenize([it.text for it in items], tok)
    if completion:
        pairs = [_split_boundary(it.fields["prefix"], it.fields["suffix"]) for it in items]
        prefix_ids = tokenize([p for p, _ in pairs], tok)
        suffix_ids = tokenize([s for _, s in pairs], tok)
    for n, plan in enumerate(plans):
        item = plan.item

        def skip(reason: str, detail: str) -> None:
            plan.skip = Skip(item.id, item.record, reason, detail)

        plan.ids = ctx + text_ids[n]
        if not item.text.strip():
            skip("empty_text", "text is empty or whitespace")
        elif len(plan.ids) < 2:
            skip("too_short", f"text has {len(text_ids[n])} token(s) and the tokenizer has no BOS/EOS token "
                              "to condition the first one on")
        elif completion:
            prefix, suffix = item.fields["prefix"], item.fields["suffix"]
            room = max_length - len(ctx) - len(suffix_ids[n])
            if not prefix.strip():
                skip("empty_prefix", "prefix is empty or whitespace")
            elif not suffix.strip() or not suffix_ids[n]:
                skip("empty_suffix", "suffix is empty or whitespace")
            elif room < 1:
                skip("suffix_too_long", f"suffix has {len(suffix_ids[n])} tokens; with the prefix it cannot fit "
                                        f"max-length {max_length}")
            else:
                kept = prefix_ids[n][-room:]  # a long prefix keeps its last tokens, nearest the suffix
                plan.prompt, plan.suffix, plan.prefix_tokens = ctx + kept, suffix_ids[n], len(kept)
                plan.prompt_key = text_hash(prefix, suffix)
        if plan.skip is None:
            plan.text_key = text_hash(item.text)
    return plans


def _pending(plans: list[_Plan], key: str, found: dict) -> dict[str, _Plan]:
    """Scoreable plans whose ``key`` attribute has no result yet, one per distinct key."""
    todo: dict[str, _Plan] = {}
    for plan in plans:
        if plan.skip is None and getattr(plan, key) not in found:
            todo.setdefault(getattr(plan, key), plan)
    return todo


def _store(finished: dict, cache: ScoreCache, found: dict) -> None:
    cache.add(finished)  # on disk before the next batch starts: a kill loses at most one batch
    found.update(finished)


def _score_likelihood(runner: "LocalRunner", plans: list[_Plan], cache: ScoreCache, found: dict, *,
                      max_length: int, stride: int, batch_tokens: int, pad_id: int,
                      progress: Progress | None) -> int:
    """Score every text not in ``found``; add results to ``found`` and the cache. Returns tokens scored."""
    todo = _pending(plans, "text_key", found)
    rows, n_windows = [], {}
    for key, plan in todo.items():
        windows = plan_windows(len(plan.ids), max_length=max_length, stride=stride)
        n_windows[key] = len(windows)
        for w, (start, end, first) in enumerate(windows):
            rows.append(Row((key, w), plan.ids[start:end], first - start))
    total = sum(len(r.ids) - r.first_target for r in rows)
    if progress and total:
        progress("likelihood", 0, total)
    pending: dict[str, dict] = {}  # item key -> {window number: stats} until all its windows are in
    done = 0
    for group, stats, n in runner.likelihood(rows, batch_tokens=batch_tokens, pad_id=pad_id):
        finished = {}
        for row, s in zip(group, stats):
            key, w = row.key
            pending.setdefault(key, {})[w] = s
            if len(pending[key]) == n_windows[key]:
                parts = pending.pop(key)
                joined = np.concatenate([parts[i] for i in range(len(parts))])
                finished[key] = likelihood_metrics(joined, todo[key].item.text)
        _store(finished, cache, found)
        done += n
        if progress:
            progress("likelihood", done, total)
    return done


def _suffix_logprobs(runner: "LocalRunner", todo: dict[str, _Plan], *, batch_tokens: int, pad_id: int,
                     progress: Progress | None) -> tuple[dict[str, float], int]:
    """Mean log-probability of each suffix token given the prompt and the true suffix before it.

    One teacher-forced pass over ``prompt + suffix`` per probe, scoring the suffix only.
    """
    rows = [Row(key, plan.prompt + plan.suffix, len(plan.prompt)) for key, plan in todo.items()]
    total = sum(len(plan.suffix) for plan in todo.values())
    if progress and total:
        progress("suffix log-prob", 0, total)
    means, done = {}, 0
    for group, stats, n in runner.likelihood(rows, batch_tokens=batch_tokens, pad_id=pad_id):
        means.update({row.key: float(np.mean(s[:, 0], dtype=np.float64)) for row, s in zip(group, stats)})
        done += n
        if progress:
            progress("suffix log-prob", done, total)
    return means, done


def _score_completion(runner: "LocalRunner", plans: list[_Plan], cache: ScoreCache, found: dict, *,
                      likelihood_batch_tokens: int, batch_tokens: int, pad_id: int, max_positions: int | None,
                      progress: Progress | None) -> int:
    """Greedy-complete every prefix not in ``found`` and score its suffix teacher-forced.

    Adds results to ``found`` and the cache; returns the tokens computed.
    """
    todo = _pending(plans, "prompt_key", found)
    keys = list(todo)
    n_new = [len(todo[k].suffix) for k in keys]
    total = sum(n_new)
    logprob, computed = _suffix_logprobs(runner, todo, batch_tokens=likelihood_batch_tokens, pad_id=pad_id,
                                         progress=progress)
    if progress and total:
        progress("completion", 0, total)
    done = 0
    for batch, continuations, n in runner.complete([todo[k].prompt for k in keys], n_new, batch_tokens=batch_tokens,
                                                   pad_id=pad_id, max_positions=max_positions):
        plans_done = [(keys[i], todo[keys[i]], generated) for i, generated in zip(batch, continuations)]
        _store({key: {**completion_metrics(generated, plan.suffix), "suffix_logprob": logprob[key],
                      "prefix_tokens": plan.prefix_tokens}
                for key, plan, generated in plans_done}, cache, found)
        done += n
        if progress:
            progress("completion", done, total)
    return computed + done


@contextlib.contextmanager
def open_runner(source: ModelSource, settings: ScoreSettings, *, expected_weights: list | None = None
                ) -> Iterator[tuple[LoadedModel, "LocalRunner"]]:
    """``(loaded, runner)`` for ``settings``: one model here, or replicas (processes or Ray actors).

    With replicas, ``loaded`` holds the tokenizer and what the replicas report (device
    type, dtype, context length) but no model. ``expected_weights`` (the fingerprint's
    weight list) lets each replica check that it loaded the same files.
    """
    if settings.replicas > 1 or settings.ray:
        from contaudit.scoring.replicas import start_replicas

        with start_replicas(source, settings, expected_weights=expected_weights) as (loaded, pool):
            yield loaded, pool
        return
    loaded = load_model(source, device=settings.device, dtype=settings.dtype,
                        trust_remote_code=settings.trust_remote_code, devices=settings.devices)
    runner = LocalRunner(loaded, threads=settings.threads)
    with runner.running():
        yield loaded, runner


def resolve_lengths(settings: ScoreSettings, loaded: LoadedModel) -> tuple[int, int]:
    """``(max_length, stride)`` of the sliding windows: the settings', else the model's context and half of it."""
    context = loaded.context_length
    max_length = settings.max_length or context
    if max_length is None:
        raise InputError("the model states no context length; pass `max_length` (--max-length)",
                         path=loaded.source.display)
    if context is not None and max_length > context:
        raise InputError(f"`max_length` {max_length} exceeds the model's context length {context}",
                         path=loaded.source.display)
    stride = settings.stride or max(1, max_length // 2)
    if stride >= max_length:
        raise InputError(f"`stride` ({stride}) must be smaller than `max_length` ({max_length})")
    return max_length, stride


def batch_budgets(settings: ScoreSettings, device_type: str) -> dict[str, int]:
    """Tokens per batch, ``{"likelihood": ..., "completion": ...}``: the settings', else the device's defaults."""
    return {"likelihood": settings.batch_tokens or DEFAULT_BATCH_TOKENS.get(device_type, DEFAULT_BATCH_TOKENS["cpu"]),
            "completion": settings.completion_batch_tokens or DEFAULT_COMPLETION_BATCH_TOKENS.get(device_type, 2048)}


def cache_keys(loaded: LoadedModel, max_length: int, transformers_version: str | None = None) -> dict:
    """What every cached score depends on, besides the item itself (``transformers_version``: the replicas')."""
    return {"model": loaded.fingerprint["id"], "dtype": str(loaded.dtype).removeprefix("torch."),
            "device": loaded.device.type, "context_token": loaded.context_token, "max_length": max_length,
            "transformers": transformers_version or metadata.version("transformers"),
            "metrics_version": METRICS_VERSION}


def _score_all(loaded: LoadedModel, runner: LocalRunner, plans: list[_Plan], settings: ScoreSettings,
               cache_dir: Path | None, *, max_length: int, stride: int, budgets: dict[str, int],
               progress: Progress | None) -> tuple[dict, dict, dict]:
    """Scores of every scoreable plan, from the cache or computed: ``(likelihood, completion, run facts)``."""
    common = cache_keys(loaded, max_length, runner.facts.get("transformers"))
    lik_cache = ScoreCache(cache_dir, {"kind": "likelihood", **common, "stride": stride})
    comp_cache = ScoreCache(cache_dir, {"kind": "completion", **common}) if settings.completion else None
    lik = lik_cache.load()
    comp = comp_cache.load() if comp_cache else {}
    scoreable = [p for p in plans if p.skip is None]
    from_cache = sum(1 for p in scoreable if p.text_key in lik and (comp_cache is None or p.prompt_key in comp))
    started = time.perf_counter()
    pad_id = loaded.context_token or 0
    computed = _score_likelihood(runner, plans, lik_cache, lik, max_length=max_length, stride=stride,
                                 batch_tokens=budgets["likelihood"], pad_id=pad_id, progress=progress)
    if comp_cache is not None:
        computed += _score_completion(runner, plans, comp_cache, comp, likelihood_batch_tokens=budgets["likelihood"],
                                      batch_tokens=budgets["completion"], pad_id=pad_id,
                                      max_positions=loaded.context_length, progress=progress)
    facts = {"from_cache": from_cache, "tokens_computed": computed, "compute_seconds": time.perf_counter() - started,
             **{k: v for k, v in runner.facts.items() if k != "transformers"}}
    return lik, comp, facts


@dataclass
class ScoreJob:
    """One item file to score and where its scores go, checked and read before any model loads."""

    data: Path
    out: Path
    items: list[Item]
    completion: bool
    cache_dir: Path | None


def prepare_job(data: str | Path, out: str | Path, settings: ScoreSettings, *, model: str | Path | None = None
                ) -> ScoreJob:
    """Check ``out`` (and ``model``'s path, when given) and read ``data``'s items, before any model loads.

    Errors are one line naming the path and record.
    """
    data, out = Path(data), Path(out)
    if out.is_dir():
        raise InputError("is a directory; --out must be a .jsonl file path, e.g. scores/NAME.jsonl", path=out)
    if not out.name.endswith(".jsonl"):
        raise InputError("the output file must end with .jsonl (a manifest .manifest.json goes beside it)", path=out)
    return check_job(data, out, settings, model=model)


def check_job(data: Path, out: Path, settings: ScoreSettings, *, model: str | Path | None = None) -> ScoreJob:
    """:func:`prepare_job` once ``out``'s name is checked (each kind of output checks its own suffix).

    ``out`` is not ``data`` and can be created, with its manifest (:func:`manifest_path`)
    beside it; ``model``'s path (when given) resolves; ``data``'s items are read; the
    cache defaults to ``.contaudit-cache`` beside ``out``. Used by ``score`` and by the
    order test (:mod:`contaudit.scoring.item_order`).
    """
    if data.exists() and out.exists() and out.resolve() == data.resolve():
        raise InputError("the output file is the data file; choose another output path", path=out)
    if manifest_path(out).is_dir():
        raise InputError("is a directory; the manifest of --out goes there", path=manifest_path(out))
    check_can_create(out)
    if model is not None:
        resolve_model(model, settings.gguf_file)
    cache_dir = None
    if settings.use_cache:
        cache_dir = Path(settings.cache_dir) if settings.cache_dir is not None else out.parent / CACHE_DIR_NAME
    return ScoreJob(data, out, _load_items(data, settings), settings.completion, cache_dir)


class ModelSession:
    """One model, loaded once (or its replicas), scoring any number of item files through the cache.

    Open it with :func:`open_model`; :func:`score` is one session with one job.
    """

    def __init__(self, source: ModelSource, settings: ScoreSettings, loaded: LoadedModel, runner: LocalRunner):
        self.source, self.settings, self.loaded, self.runner = source, settings, loaded, runner
        self.max_length, self.stride = resolve_lengths(settings, loaded)
        self.budgets = batch_budgets(settings, loaded.device.type)

    @property
    def fingerprint(self) -> dict:
        return self.loaded.fingerprint

    def score(self, job: ScoreJob, *, progress: Progress | None = None, started: float | None = None) -> ScoreResult:
        """Score ``job``'s items (finished ones from the cache); write its scores and manifest.

        ``started`` (a ``time.perf_counter()`` value) is when the call began, for the
        manifest's wall time (default: now).
        """
        started = time.perf_counter() if started is None else started
        settings = replace(self.settings, completion=job.completion)
        loaded = self.loaded
        plans = _plan_items(job.items, loaded, completion=job.completion, max_length=self.max_length)
        lik, comp, facts = _score_all(loaded, self.runner, plans, settings, job.cache_dir, max_length=self.max_length,
                                      stride=self.stride, budgets=self.budgets, progress=progress)
        # byte_metrics again: likelihood scores cached before n_bytes and nll_per_byte existed gain them here
        rows = [{"id": p.item.id, **byte_metrics(lik[p.text_key], p.item.text),
                 **(comp[p.prompt_key] if job.completion else {})} for p in plans if p.skip is None]
        write_jsonl_atomic(job.out, rows)
        resolved = {**asdict(settings), "cache_dir": str(job.cache_dir) if job.cache_dir else None,
                    "max_length": self.max_length, "stride": self.stride, "batch_tokens": self.budgets["likelihood"],
                    "completion_batch_tokens": self.budgets["completion"],
                    **{k: v for k, v in facts.items() if k not in ("from_cache", "tokens_computed", "compute_seconds")}}
        result = ScoreResult(job.out, manifest_path(job.out), len(job.items), len(rows),
                             [p.skip for p in plans if p.skip], facts["from_cache"], facts["tokens_computed"],
                             time.perf_counter() - started, facts["compute_seconds"], self.fingerprint["id"],
                             ", ".join(facts["devices_used"]), str(loaded.dtype).removeprefix("torch."), resolved)
        _write_manifest(result, job.data, loaded)
        return result


@contextlib.contextmanager
def open_model(model: str | Path, settings: ScoreSettings, *, hashes_dir: Path | None = None
               ) -> Iterator[ModelSession]:
    """Fingerprint and load ``model`` once for ``settings``; yield a :class:`ModelSession`.

    ``hashes_dir`` keeps the weights' SHA-256 on disk between runs (``file-hashes.json``),
    so large checkpoints are hashed once.

    Example::

        with open_model("models/gpt2", ScoreSettings()) as session:
            for name in ("test", "shadow"):
                session.score(prepare_job(f"{name}.jsonl", f"scores/{name}.jsonl", ScoreSettings()))
    """
    settings.validate()
    source = resolve_model(model, settings.gguf_file)
    fp = fingerprint(source, FileHashes(hashes_dir / "file-hashes.json" if hashes_dir else None),
                     include_code=settings.trust_remote_code)
    with open_runner(source, settings, expected_weights=fp["weights"]) as (loaded, runner):
        loaded.fingerprint = fp
        yield ModelSession(source, settings, loaded, runner)


def score(model: str | Path, data: str | Path, out: str | Path, settings: ScoreSettings | None = None, *,
          progress: Progress | None = None, **options) -> ScoreResult:
    """Score every item of ``data`` with ``model``; write ``out`` (JSON Lines) and its manifest.

    ``options`` override fields of ``settings`` (see :class:`ScoreSettings`).
    ``progress(phase, done_tokens, total_tokens)`` is called as batches finish. To score
    several files with one model loaded once, use :func:`open_model`.

    Example::

        from contaudit.scoring import score
        result = score("models/gpt2", "probes.jsonl", "scores/gpt2.jsonl", completion=True)
        print(result.n_scored, result.tokens_per_second)
    """
    settings = replace(settings or ScoreSettings(), **options)
    settings.validate()
    started = time.perf_counter()
    job = prepare_job(data, out, settings, model=model)
    with open_model(model, settings, hashes_dir=job.cache_dir) as session:
        return session.score(job, progress=progress, started=started)  # its wall time includes loading


def _write_manifest(result: ScoreResult, data: Path, loaded: LoadedModel) -> None:
    reasons = Counter(s.reason for s in result.skipped)
    manifest = make_manifest(
        "score",
        inputs=[describe_path(data)],
        parameters=result.settings,
        model=loaded.fingerprint,
        tokenizer=loaded.describe_tokenizer(),
        device=result.device,
        dtype=result.dtype,
        outputs=[describe_path(result.out)],
        counts={"items": result.n_items, "scored": result.n_scored, "skipped": len(result.skipped),
                "skip_reasons": dict(reasons), "from_cache": result.from_cache},
        skipped=[asdict(s) for s in result.skipped],
        timing={"seconds": round(result.seconds, 3), "compute_seconds": round(result.compute_seconds, 3),
                "tokens_computed": result.tokens_computed,
                "tokens_per_second": round(result.tokens_per_second, 1) if math.isfinite(result.tokens_per_second)
                else None},
    )
    write_json_atomic(result.manifest, manifest)
