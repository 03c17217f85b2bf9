"""``contaudit index``: search a training corpus for every benchmark item.

The corpus is streamed document by document, cut into shards of about ``shard_mb``
of text, and scanned in batches by ``workers`` processes. Memory depends on the
benchmark (n-gram keys, near-duplicate seed tables), not on the corpus. Each finished shard's
partial result is saved under ``OUT.partial/``, so an interrupted build resumes where
it stopped; the index directory itself appears only when complete. A build holds a lock
on ``OUT.partial/lock`` throughout, so a second build of the same ``OUT`` fails at once
instead of mixing its shards in. With ``config.ray`` the same shards are scanned as Ray
tasks (:mod:`contaudit.index.distributed`) and the index is the same, byte for byte.

:func:`build_indexes` screens several benchmarks with one corpus pass: their items are
searched together (by position: ids may repeat across benchmarks), one staging directory
holds the lock and the shards, and each benchmark gets the index directory
:func:`build_index` would write for it alone. :func:`build_index` is its one-target case.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contaudit.config import IndexConfig
from contaudit.errors import InputError
from contaudit.index.ngram import MIN_WHOLE_WORDS, item_batches, item_stats
from contaudit.index.neardup import NeardupConfig
import contaudit.index.semantic as sem
from contaudit.index.scan import UNSEEN_N, Accumulator, BatchResult, Searcher, iter_shards, iter_unit_documents
from contaudit.index.store import INDEX_FORMAT, CorpusIndex, load_index
from contaudit.io import (CorpusUnit, Document, Item, ReadStats, check_corpus_has_documents, check_output_apart,
                          contaudit_manifest, is_index_plan, load_items)
from contaudit.io import corpus_units as io_corpus_units
from contaudit.manifest import (INDEX_MANIFEST, INDEX_PLAN, check_can_create, describe_path, hash_bytes,
                               make_manifest, replace_dir, write_json_atomic, write_jsonl_atomic)
from contaudit.text import NORMALIZATION

def classify(stats: dict, config: IndexConfig) -> str:
    """``seen`` / ``unseen`` / ``ambiguous`` for one item's evidence (the rule in docs/index.md).

    An item shorter than n words is seen only when it occurs whole (its one "n-gram"):
    one changed word in ten is a near duplicate by Jaccard, and often another question,
    so a near duplicate of a short item only makes it ambiguous.
    """
    exact_seen = stats["matched_ngrams"] > 0 and stats["coverage"] >= config.min_coverage
    near = stats["neardup_jaccard"] >= config.neardup_threshold
    if exact_seen or (near and stats["n_words"] >= config.n):
        return "seen"
    if not near and stats["n_words"] >= UNSEEN_N and stats["matched_8grams"] == 0:
        return "unseen"
    return "ambiguous"  # partial overlap, a near duplicate of a short item, or too short to establish absence


# ----------------------------------------------------------------------------- corpus


def corpus_units(paths: list[str | Path], config: IndexConfig) -> list[CorpusUnit]:
    """Resolve corpus paths into units (:func:`contaudit.io.corpus_units`, the reader ``finetune`` shares).

    Reads up to the first document, so a corpus that holds none (no records, only empty
    documents, every record skipped as bad) fails here, before anything is written.
    """
    units = io_corpus_units(paths, include=list(config.include) or None, exclude=list(config.exclude) or None)
    check_corpus_has_documents(units, text_field=config.text_field, skip_bad=config.skip_bad)
    return units


# ----------------------------------------------------------------------------- build


@dataclass
class IndexSummary:
    """What a build did, for the CLI to render."""

    index: CorpusIndex
    seconds: float
    corpus_bytes: int
    shards_total: int
    shards_resumed: int
    stats: ReadStats


def _benchmark_description(items: list[Item]) -> str:
    return hash_bytes("\n".join(f"{it.id}\t{it.text}" for it in items).encode("utf-8", "surrogatepass"))


def _describe_inputs(units: list[CorpusUnit]) -> list[dict]:
    """Path, size and content hash of every corpus input (reads the whole corpus: once per build)."""
    return [describe_path(u.path) for u in units]


def _parameters(config: IndexConfig, text_field, template, id_field) -> dict:
    """Every setting that changes an index (recorded in its manifest and its plan)."""
    semantic = _semantic_parameters(config)
    return {**{k: v for k, v in asdict(config).items()
               if k not in ("workers", "batch_mb", "ray") and not k.startswith("semantic")},
            "include": list(config.include), "exclude": list(config.exclude), "unseen_n": UNSEEN_N,
            "min_whole_words": MIN_WHOLE_WORDS,
            "normalization": NORMALIZATION, "text_field": config.text_field,
            "benchmark_text_field": text_field, "benchmark_template": template, "benchmark_id_field": id_field,
            "neardup_settings": asdict(NeardupConfig(threshold=config.neardup_threshold)) if config.neardup else None,
            **({"semantic_settings": semantic} if semantic else {})}  # absent when off: today's plans unchanged


def _semantic_parameters(config: IndexConfig) -> dict | None:
    """The semantic stage's settings and model fingerprint (None when the stage is off)."""
    if not config.semantic:
        return None
    model = sem.load_model(config.semantic_model)
    step, score = ((sem.SIZE_STEP, "weighted soft-alignment F1 of the best-aligned span") if model.encoder is None
                   else (sem.ENCODER_SIZE_STEP, "cosine of the best item-length window, every quarter length"))
    return {"model": model.fingerprint(),
            "threshold": config.semantic_threshold, "max_false_rate": config.semantic_max_false_rate,
            "candidates": config.semantic_candidates, "calibration_mb": config.semantic_calibration_mb,
            "window_sizes": f"{sem.MIN_TOKENS}*{step}^k tokens, stride half a window",
            "score": score, "status": sem.SEMANTIC_STATUS,
            "threshold_scale": "the unrelated passages searched in the whole corpus with the items"}


def _plan(inputs: list[dict], parameters: dict, benchmark: str | list[str]) -> dict:
    """The plan a resumed or reused build must match; ``benchmark``: one description, or a list (several)."""
    return json.loads(json.dumps({"parameters": parameters, "benchmark": benchmark,
                                  "inputs": [(d["path"], d["sha256"]) for d in inputs]}))


def plan_matches(out: str | Path, corpus: list[str | Path], benchmark: str | Path, config: IndexConfig = IndexConfig(),
                 *, text_field: str | None = "text", template: str | None = None, id_field: str | None = "id") -> bool:
    """True when ``out`` holds a finished index built from these inputs and settings
    (by :func:`build_index`, or by :func:`build_indexes` along with other benchmarks)."""
    return not stale_targets({out: benchmark}, corpus, config, text_field=text_field, template=template,
                             id_field=id_field)


def stale_targets(targets: Mapping[str | Path, str | Path], corpus: list[str | Path], config: IndexConfig = IndexConfig(),
                  *, text_field: str | None = "text", template: str | None = None, id_field: str | None = "id"
                  ) -> list[Path]:
    """The index directories of ``targets`` (index -> benchmark) that need building: missing, or
    built from other inputs or settings. The corpus is hashed once for all of them."""
    stale, inputs = [], None
    parameters = _parameters(config, text_field, template, id_field)
    for out, benchmark in targets.items():
        manifest_path = Path(out) / INDEX_MANIFEST
        if not manifest_path.exists():
            stale.append(Path(out))
            continue
        if inputs is None:
            inputs = _describe_inputs(corpus_units(corpus, config))
        items = load_items(benchmark, text_field=text_field, template=template, id_field=id_field,
                           skip_bad=config.skip_bad)
        plan = _plan(inputs, parameters, _benchmark_description(items))
        if json.loads(manifest_path.read_text(encoding="utf-8")).get("plan_sha256") != _plan_hash(plan):
            stale.append(Path(out))
    return stale


def _plan_hash(plan: dict) -> str:
    return hash_bytes(json.dumps(plan, sort_keys=True).encode())


def build_index(corpus: list[str | Path], benchmark: str | Path, out: str | Path, *,
                config: IndexConfig = IndexConfig(), text_field: str | None = "text", template: str | None = None,
                id_field: str | None = "id", progress: Callable[[int], None] | None = None) -> IndexSummary:
    """Build an index of ``benchmark`` items in ``corpus`` and write it to ``out``.

    ``progress`` (optional) is called with the number of corpus bytes scanned after
    each batch. Returns an :class:`IndexSummary`; the index is at ``out``. With
    ``config.ray`` the batches are scanned as Ray tasks (same result). Raises
    :class:`InputError` at once when another build is writing ``out``. The one-target
    case of :func:`build_indexes`, staging in ``OUT.partial``.

    Example::

        summary = build_index(["corpus.jsonl.zst"], "bench.jsonl", "indexes/bench")
        seen = [it for it in summary.index.items if it["status"] == "seen"]
    """
    out = Path(out)
    return build_indexes(corpus, {out: benchmark}, out.with_name(out.name + ".partial"), config=config,
                         text_field=text_field, template=template, id_field=id_field, progress=progress)[0]


def build_indexes(corpus: list[str | Path], targets: Mapping[str | Path, str | Path], staging: str | Path, *,
                  config: IndexConfig = IndexConfig(), text_field: str | None = "text", template: str | None = None,
                  id_field: str | None = "id", progress: Callable[[int], None] | None = None) -> list[IndexSummary]:
    """Index several benchmarks with one pass over ``corpus``: ``targets`` maps each index directory to its benchmark.

    Every target is the index :func:`build_index` would write for its benchmark alone,
    byte for byte, with the same ``plan_sha256`` (so :func:`plan_matches` reuses it);
    its manifest adds a ``scan`` section naming the targets that shared the scan.
    ``staging`` holds the lock and the shards of the whole scan (resumed after an
    interruption); it is removed once every target is published. Returns one
    :class:`IndexSummary` per target, in order.

    Example::

        build_indexes(["corpus/"], {"run/index/humaneval": "sets/humaneval.jsonl",
                                    "run/index/changelogs": "sets/changelogs.jsonl"}, "run/index.partial")
    """
    t0 = time.perf_counter()
    config.validate()
    if config.ray:
        from contaudit.ray_support import import_ray
        import_ray()  # without the extra, fail before any work
    pairs = [(Path(out), Path(benchmark)) for out, benchmark in targets.items()]
    staging = Path(staging)
    _check_outputs(pairs, staging, corpus)
    with _build_lock([out for out, _ in pairs], staging):
        return _build_locked(corpus, pairs, staging, t0, config=config, text_field=text_field, template=template,
                             id_field=id_field, progress=progress)


@dataclass
class _Target:
    """One index to write: where, and its benchmark (the file's description and read stats, and its items)."""

    out: Path
    benchmark: dict
    items: list[Item]


def _build_locked(corpus, pairs: list[tuple[Path, Path]], staging: Path, t0: float, *, config: IndexConfig,
                  text_field, template, id_field, progress) -> list[IndexSummary]:
    """:func:`build_indexes` once it holds the lock on ``staging``: load, plan, scan once, publish each target."""
    targets = [_load_target(out, benchmark, config, text_field, template, id_field) for out, benchmark in pairs]
    units = corpus_units(corpus, config)
    inputs = _describe_inputs(units)
    parameters = _parameters(config, text_field, template, id_field)
    plans = [_plan(inputs, parameters, _benchmark_description(t.items)) for t in targets]
    staging_plan = _staging_plan(plans, inputs, parameters)
    _prepare_staging(staging, staging_plan)

    records, corpus_section, stats, semantic = _scan_once(units, [it for t in targets for it in t.items], config,
                                                          staging, progress)
    scan = None if len(targets) == 1 else {"benchmarks": len(targets), "targets": [str(t.out) for t in targets],
                                           "staging_plan_sha256": _plan_hash(staging_plan)}
    start = 0
    for t, plan in zip(targets, plans):
        mine, start = records[start:start + len(t.items)], start + len(t.items)
        manifest = make_manifest("index", inputs=inputs, parameters=parameters, format=INDEX_FORMAT,
                                 benchmark=t.benchmark, corpus=corpus_section, counts=_counts(mine),
                                 plan_sha256=_plan_hash(plan), **({"scan": scan} if scan else {}),
                                 **({"semantic": semantic} if semantic else {}),
                                 seconds=round(time.perf_counter() - t0, 3))
        _publish(t.out, staging, mine, manifest)
    _clear_partial(staging, and_lock=True)
    seconds = time.perf_counter() - t0
    return [IndexSummary(load_index(t.out), seconds, corpus_section["bytes"], corpus_section["shards"],
                         corpus_section["shards_resumed"], stats) for t in targets]


def _load_target(out: Path, benchmark: Path, config: IndexConfig, text_field, template, id_field) -> _Target:
    """Read one target's benchmark items (and describe the file, for its manifest)."""
    stats = ReadStats()
    items = load_items(benchmark, text_field=text_field, template=template, id_field=id_field,
                       skip_bad=config.skip_bad, stats=stats)
    return _Target(out, {**describe_path(benchmark), **stats.as_dict()}, items)


def _staging_plan(plans: list[dict], inputs: list[dict], parameters: dict) -> dict:
    """The plan of the staged shards: the one target's plan, or the same with every benchmark's description."""
    if len(plans) == 1:
        return plans[0]
    return _plan(inputs, parameters, [p["benchmark"] for p in plans])


def _prepare_staging(staging: Path, plan: dict) -> None:
    """Keep the shards staged for this same plan (resume); clear any others, then record the plan."""
    plan_path = staging / INDEX_PLAN
    if staging.exists() and (not plan_path.exists() or json.loads(plan_path.read_text()) != plan):
        _clear_partial(staging)  # inputs or settings changed: partial results are stale
    staging.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_path, plan)


def _scan_once(units, items: list[Item], config: IndexConfig, staging: Path,
               progress) -> tuple[list[dict], dict, ReadStats, dict | None]:
    """Search the corpus for all ``items`` (those of every target, by position) in one pass.

    Returns their records in order, the manifest's ``corpus`` section, the read stats
    and the manifest's ``semantic`` section (None when the stage is off).
    """
    item_words = item_batches([it.text for it in items])
    started = time.perf_counter()
    semantic_index, semantic, calibration = (_semantic_index(units, items, config) if config.semantic
                                             else (None, None, None))
    prepared = time.perf_counter() - started
    searcher = Searcher.build(item_words, config, semantic_index)
    total = Accumulator(np.zeros(searcher.table.n_keys, dtype=np.int64), config.max_locations,
                        semantic_k=config.semantic_candidates if config.semantic else 0)
    if config.ray:
        from contaudit.index.distributed import scan_with_ray
        stats, shards_total, shards_resumed = scan_with_ray(units, config, searcher, staging, total, progress)
    else:
        stats, shards_total, shards_resumed = _scan_here(units, config, searcher, item_words, staging, total,
                                                         progress)
    started = time.perf_counter()
    hits = _verify_semantic(semantic_index, total, len(items), semantic, calibration) if config.semantic else None
    if semantic is not None:
        scan = total.semantic_seconds
        semantic["seconds"] = {"calibration": round(prepared, 3), "scan": round(scan, 3),
                               "verify": round(time.perf_counter() - started, 3)}
        semantic["scan_mb_per_s"] = round(total.nbytes / 1e6 / scan, 4) if scan > 0 else None
    records = _item_records(items, item_words, searcher.table, total, config, hits,
                            semantic["threshold"] if semantic else None)
    corpus_section = {"documents": stats.as_dict(), "bytes": total.nbytes, "shards": shards_total,
                      "shards_resumed": shards_resumed}
    return records, corpus_section, stats, semantic


def _verify_semantic(index, total: Accumulator, n_items: int, section: dict,
                     calibration: sem.Calibration | None) -> dict:
    """Item -> its best verified semantic match (:func:`~contaudit.index.semantic.verify` of its candidates).

    With a calibrated threshold, the calibration's unrelated passages (indices ``n_items`` on) are verified
    too, copies of each aside, and ``section``'s threshold becomes the corpus-scale one."""
    model = index.model
    with sem.one_blas_thread():
        hits = {i: sem.verify(model, index.item_ids[i], cands) for i, cands in total.semantic_candidates.items()
                if i < n_items}
        if calibration is not None:
            nulls = []
            for j, passage in enumerate(calibration.passages):
                hit = sem.verify(model, index.item_ids[n_items + j],
                                 total.semantic_candidates.get(n_items + j, []), copy_of=passage)
                nulls.append(hit.score if hit else 0.0)
            corpus = sem.corpus_threshold(calibration, nulls, total.nbytes)
            section["calibration"]["corpus"] = corpus
            section["threshold"] = corpus["threshold"]
    return {i: h for i, h in hits.items() if h is not None}


def _semantic_index(units, items: list[Item], config: IndexConfig):
    """The items' semantic index, the manifest's ``semantic`` section and the calibration (None when the
    threshold is given). The section holds the threshold (given, or calibrated on the corpus's first
    ``semantic_calibration_mb`` of text, read on up to four times that until it holds 200 prose passages,
    then raised to the corpus's scale after the scan) and the model's fingerprint."""
    model = sem.load_model(config.semantic_model)
    section = {"model": model.fingerprint(), "status": sem.SEMANTIC_STATUS}
    if config.semantic_threshold is not None:
        section.update(threshold=config.semantic_threshold, calibration=None)
        index = sem.SemanticIndex.build([it.text for it in items], config.semantic_model, floor=sem.DEFAULT_FLOOR,
                                        candidates=config.semantic_candidates)
        return index, section, None
    sample, size, prose = [], 0, 0  # at least semantic_calibration_mb, more (up to 4x) until enough prose passages
    limit = config.semantic_calibration_mb * 1e6
    for unit in units:
        for doc in iter_unit_documents(unit, config, ReadStats()):
            sample.append(doc)
            size += len(doc.text)
            prose += min(sem.PASSAGES_PER_DOC, sum(1 for _ in sem.prose_paragraphs(doc.text)))
            if size >= 4 * limit or (size >= limit and prose >= sem.CALIBRATION_PASSAGES):
                break
        if size >= 4 * limit or (size >= limit and prose >= sem.CALIBRATION_PASSAGES):
            break
    calibration = sem.calibrate(sample, [len(ids) for ids in model.encode_ids([it.text for it in items])],
                                {"model_spec": config.semantic_model, "floor": -1.0,
                                 "candidates": config.semantic_candidates},
                                max_false_rate=config.semantic_max_false_rate, batch_chars=config.batch_mb * 1e6)
    # the unrelated passages are searched in the whole corpus with the items (each skipping its own
    # document): the threshold is then set at the corpus's scale (sem.corpus_threshold), not the sample's
    index = sem.SemanticIndex.build([it.text for it in items] + calibration.passages, config.semantic_model,
                                    floor=calibration.floor, candidates=config.semantic_candidates)
    index.exclude_doc = {len(items) + j: home for j, home in enumerate(calibration.homes)}
    section.update(threshold=calibration.threshold, calibration=calibration.as_dict())
    return index, section, calibration


def _counts(records: list[dict]) -> dict:
    """Items per status, for the manifest (``paraphrased`` only when the semantic stage ran)."""
    statuses = ("seen", "unseen", "ambiguous") + (("paraphrased",) if any("semantic_score" in r for r in records)
                                                  else ())
    return {"items": len(records), **{s: sum(r["status"] == s for r in records) for s in statuses}}


_searcher: Searcher | None = None  # this process's searcher during a one-machine scan (:func:`_scan_here`)


def _start_worker(item_words, config: IndexConfig, semantic=None) -> None:
    """Initializer of a pool process: a forked one has its parent's searcher already, a spawned one builds it."""
    global _searcher
    if _searcher is None:
        _searcher = Searcher.build(item_words, config, semantic)


def _scan_batch(docs: list[Document]) -> BatchResult:
    """Scan one batch with this process's searcher (what a one-machine scan runs per batch, here or in its pool)."""
    return _searcher.scan_batch(docs)


def _scan_here(units, config: IndexConfig, searcher: Searcher, item_words, partial: Path, total: Accumulator,
               progress) -> tuple[ReadStats, int, int]:
    """Scan ``units`` in this process (and ``config.workers`` processes), saving and merging shard by shard.

    The searcher is this process's for the scan, so that forked pool processes inherit it.
    """
    global _searcher
    stats = ReadStats()
    shards_total = shards_resumed = 0
    _searcher = searcher
    pool = None
    if config.workers > 1:
        encoder = searcher.semantic is not None and searcher.semantic.model.encoder is not None
        # a forked child of a process that ran torch can hang in its thread pool: an encoder's workers start anew
        method = "fork" if "fork" in mp.get_all_start_methods() and not encoder else "spawn"
        ctx = mp.get_context(method)
        pool = ctx.Pool(config.workers, initializer=_start_worker,
                        initargs=(item_words, config, searcher.semantic) if method == "spawn" else (None, config))
    try:
        for shard_id, batches in iter_shards(units, config, stats):
            shards_total += 1
            shard_path = partial / f"shard-{shard_id}.json"
            if shard_path.exists():
                shard_stats = total.add_saved(shard_path)
                shards_resumed += 1
                if progress:
                    progress(sum(len(d.text) for b in batches for d in b))
                continue
            before = ReadStats(stats.read, stats.skipped, list(stats.examples))
            shard = Accumulator(np.zeros_like(total.counts), config.max_locations, semantic_k=total.semantic_k)
            results = pool.imap(_scan_batch, batches) if pool else map(_scan_batch, batches)
            for result in results:
                shard.add(*result)
                nbytes = result[4]
                if progress:
                    progress(nbytes)
            shard_stats = ReadStats(stats.read - before.read, stats.skipped - before.skipped,
                                    stats.examples[len(before.examples):])
            shard.save(shard_path, shard_stats)
            total.add(*shard.result())
    finally:
        if pool is not None:
            pool.terminate()
        _searcher = None
    return stats, shards_total, shards_resumed


def _item_records(items, item_words, table, total: Accumulator, config: IndexConfig, semantic_hits: dict | None = None,
                  semantic_threshold: float | None = None) -> list[dict]:
    """Each item's record; with the semantic stage, its best semantic match, and status ``paraphrased`` when
    that match reaches ``semantic_threshold`` and the exact and near-duplicate evidence does not make it seen."""
    records = []
    for i, (item, ws) in enumerate(zip(items, item_words)):
        rec = {"id": item.id, "n_words": len(ws.starts)}
        rec.update(item_stats(table, total.counts, i, config.n, UNSEEN_N))
        near = total.near_best.get(i)
        rec["neardup_jaccard"] = round(near.jaccard, 6) if near else 0.0
        rec["neardup_copies"] = total.near_copies.get(i, 0)
        rec["neardup_location"] = near.location if near else None
        rec["locations"] = total.locations.get(i, [])
        rec["status"] = classify(rec, config)
        if semantic_threshold is not None:
            hit = semantic_hits.get(i)
            rec["semantic_score"] = hit.score if hit else 0.0
            rec["semantic_cosine"] = hit.cosine if hit else 0.0
            rec["semantic_location"] = hit.location if hit else None
            rec["semantic_text"] = hit.text if hit else None
            rec["lexical_status"] = rec["status"]
            if rec["status"] != "seen" and rec["semantic_score"] >= semantic_threshold:
                rec["status"] = "paraphrased"
        rec["text"] = item.text
        records.append(rec)
    return records


INDEX_FILES = (INDEX_MANIFEST, "items.jsonl")  # all an index directory holds (contaudit.index.store)


def _check_outputs(pairs: list[tuple[Path, Path]], staging: Path, corpus: list[str | Path]) -> None:
    """Every check before any work: the targets and ``staging`` are apart from each other and from the
    inputs (corpus, benchmarks); ``staging`` is absent or staged by an index build; each target is absent,
    empty or a previous index (nothing else is ever replaced or deleted)."""
    if not pairs:
        raise InputError("no index to build: give at least one index directory and its benchmark")
    outs = [out for out, _ in pairs]
    _check_distinct(outs, staging)
    benchmarks = {"benchmark" if len(pairs) == 1 else f"benchmark of {out}": b for out, b in pairs}
    check_output_apart(outs[0], list(corpus), benchmarks, written=[staging, *outs[1:]])
    _check_staging(staging)
    for out in outs:
        _check_target(out)
        _check_same_filesystem(out, staging)
    check_can_create(staging)  # (one target: OUT.partial, in the parent just checked for OUT)


def _check_distinct(outs: list[Path], staging: Path) -> None:
    """Refuse a target given twice, or inside another target or ``staging`` (or holding it)."""
    paths = [*outs, staging]
    real = [Path(os.path.realpath(p)) for p in paths]
    for i, (a, ra) in enumerate(zip(paths, real)):
        for j, (b, rb) in enumerate(zip(paths, real)):
            if i < j and ra == rb:
                raise InputError(f"is written twice by this build (also as {b}); give each index its own directory",
                                 path=a)
            if i != j and ra.is_relative_to(rb):
                raise InputError(f"is inside {b}, which this build also writes; give each index its own directory, "
                                 "apart from the others", path=a)


def _check_staging(staging: Path) -> None:
    """Refuse a ``staging`` that is not a directory an index build staged (a lock file and a plan.json)."""
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        kind = "a symbolic link" if staging.is_symlink() else "not a directory"
        raise InputError(f"is {kind}, not the staging directory of an index build; move it away or choose "
                         f"another --out (it is neither followed nor deleted)", path=staging)
    staged = staging.is_dir() and any(p.name != LOCK_NAME for p in staging.iterdir())  # more than a lock file
    if staged and not is_index_plan(staging / INDEX_PLAN):
        raise InputError("is not the staging directory of an index build (no plan.json of one); move it away or "
                         "choose another --out (it is not deleted)", path=staging)


def _check_target(out: Path) -> None:
    """Refuse to replace anything at ``out`` that is not a previous index, or to write where nothing can be."""
    check_can_create(out)  # out and its files all go in out's parent
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise InputError("is a symbolic link; choose another --out (it is neither followed nor replaced)", path=out)
    if not out.is_dir():
        raise InputError("exists and is not a directory; choose another --out", path=out)
    if not any(out.iterdir()):
        return
    manifest = contaudit_manifest(out / INDEX_MANIFEST)
    if manifest is None or manifest.get("stage") != "index":
        raise InputError("exists and is not a contaudit index (no manifest.json written by `contaudit index`); "
                         "refusing to replace it (nothing was deleted): choose another --out", path=out)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in INDEX_FILES)
    if foreign:
        raise InputError(f"holds files a contaudit index does not ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); refusing to replace it (nothing was deleted): "
                         f"move them or choose another --out", path=out)


def _check_same_filesystem(out: Path, staging: Path) -> None:
    """Refuse a target that cannot be renamed into place from ``staging`` (another filesystem)."""
    def device(p: Path) -> int:
        p = Path(os.path.abspath(p))
        while not p.exists() and p != p.parent:
            p = p.parent
        return p.stat().st_dev

    if device(out.parent) != device(staging):
        raise InputError(f"is on another filesystem than the staging directory {staging}; the finished index is "
                         "renamed into place from there: put the staging directory beside the indexes", path=out)


def _publish(out: Path, staging: Path, records: list[dict], manifest: dict) -> None:
    """Write one finished index into ``staging/final``, then swap it into place at ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    final = staging / "final"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir()
    write_jsonl_atomic(final / "items.jsonl", records)
    write_json_atomic(final / INDEX_MANIFEST, manifest)
    replace_dir(final, out, staging / "old")  # the previous index goes into our own staging directory


# ----------------------------------------------------------------------------- one build at a time

LOCK_NAME = "lock"  # STAGING/lock: held (flock) for the whole build, so two builds cannot mix their shards


@contextlib.contextmanager
def _build_lock(outs: list[Path], partial: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``partial/lock`` for the whole build (of ``outs``), or fail at once.

    A finished build removes the lock file while still holding it (see
    :func:`_clear_partial`); a run that locked that removed file retries on the file
    now at the path, so two runs never both hold the lock of one ``partial``.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no protection against concurrent runs
        yield
        return
    created = not partial.exists()
    path = partial / LOCK_NAME
    while True:
        partial.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # partial was just removed by a run that finished
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise InputError(f"another contaudit index run is writing {', '.join(map(str, outs))} (lock {path}); "
                             "wait for it or choose another --out") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a lock file its finished holder had removed: lock the current one
    try:
        yield
    finally:
        if created and partial.is_dir() and [p.name for p in partial.iterdir()] == [LOCK_NAME]:
            _clear_partial(partial, and_lock=True)  # failed before writing anything: leave no trace
        os.close(fd)


def _clear_partial(partial: Path, *, and_lock: bool = False) -> None:
    """Delete what ``partial`` holds, except the lock file unless ``and_lock`` (then ``partial`` too).

    The lock file goes last, while still locked, so no other run ever deletes a lock file it does not hold.
    """
    for p in partial.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if and_lock:
        (partial / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            partial.rmdir()  # fails, harmlessly, when a new run has already put its lock file here
