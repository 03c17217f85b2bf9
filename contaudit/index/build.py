"""``contaudit index``: search a training corpus for every benchmark item.

The corpus is streamed document by document, cut into shards of about ``shard_mb``
of text, and scanned in batches by ``workers`` processes. Memory depends on the
benchmark (n-gram keys, MinHash bands), not on the corpus. Each finished shard's
partial result is saved under ``OUT.partial/``, so an interrupted build resumes where
it stopped; the index directory itself appears only when complete.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from contaudit.config import IndexConfig
from contaudit.errors import InputError
from contaudit.index.ngram import NgramScanner, build_table, item_batches, item_stats
from contaudit.index.wordhash import split_words
from contaudit.index.neardup import NeardupConfig, NeardupHit, NeardupIndex, NeardupScanner
from contaudit.index.store import INDEX_FORMAT, CorpusIndex, load_index
from contaudit.io import (Document, Item, ReadStats, is_jsonl, is_parquet, is_saved_dataset, iter_documents,
                          list_text_files, load_items, read_text_file)
from contaudit.manifest import (check_can_create, describe_path, hash_bytes, make_manifest, replace_dir,
                                write_json_atomic, write_jsonl_atomic)
from contaudit.text import NORMALIZATION

UNSEEN_N = 8  # an item is unseen only if none of its 8-grams occurs in the corpus


def classify(stats: dict, config: IndexConfig) -> str:
    """``seen`` / ``unseen`` / ``ambiguous`` for one item's evidence (the rule in docs/index.md)."""
    exact_seen = stats["matched_ngrams"] > 0 and stats["coverage"] >= config.min_coverage
    near_seen = stats["neardup_jaccard"] >= config.neardup_threshold
    if exact_seen or near_seen:
        return "seen"
    if stats["n_words"] >= UNSEEN_N and stats["matched_8grams"] == 0:
        return "unseen"
    return "ambiguous"  # partial overlap, or too short to establish absence


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class CorpusUnit:
    """One corpus input: a record file / saved dataset, or a directory of text files."""

    path: Path
    files: tuple[Path, ...] = ()  # for text directories

    @property
    def is_text_dir(self) -> bool:
        return bool(self.files) or (self.path.is_dir() and not is_saved_dataset(self.path))


def corpus_units(paths: list[str | Path], config: IndexConfig) -> list[CorpusUnit]:
    """Resolve corpus paths into units, checking each exists and has a known format."""
    units = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError("no such file or directory", path=p)
        if p.is_dir() and not is_saved_dataset(p):
            files = list_text_files(p, list(config.include) or None, list(config.exclude) or None)
            if not files:
                raise InputError("no files matched in this directory (check --include/--exclude)", path=p)
            units.append(CorpusUnit(p, tuple(files)))
        elif is_saved_dataset(p) or is_parquet(p) or is_jsonl(p):
            units.append(CorpusUnit(p))
        elif p.is_file():
            units.append(CorpusUnit(p, (p,)))  # a single text file
        else:
            raise InputError("unknown corpus format", path=p)
    return units


def iter_unit_documents(unit: CorpusUnit, config: IndexConfig, stats: ReadStats) -> Iterator[Document]:
    """Documents of one unit, in a fixed order."""
    if unit.is_text_dir:
        for f in unit.files:
            text = read_text_file(f, skip_bad=config.skip_bad, stats=stats)
            if text is None:
                continue
            stats.read += 1
            yield Document(str(f), 0, text)
    else:
        yield from iter_documents(unit.path, text_field=config.text_field, skip_bad=config.skip_bad, stats=stats)


def iter_shards(units: list[CorpusUnit], config: IndexConfig, stats: ReadStats) -> Iterator[tuple[str, list[list[Document]]]]:
    """Yield ``(shard_id, batches)`` in corpus order; shards never span units.

    Shard cuts depend only on the documents' text sizes, so a rerun on the same
    inputs cuts the same shards (what makes resuming safe).
    """
    shard_bytes, batch_bytes = config.shard_mb * 1e6, config.batch_mb * 1e6
    for u, unit in enumerate(units):
        ordinal, batches, batch, size, bsize = 0, [], [], 0.0, 0.0
        for doc in iter_unit_documents(unit, config, stats):
            batch.append(doc)
            n = len(doc.text)
            size += n
            bsize += n
            if bsize >= batch_bytes:
                batches.append(batch)
                batch, bsize = [], 0.0
            if size >= shard_bytes:
                if batch:
                    batches.append(batch)
                yield f"{u}-{ordinal}", batches
                ordinal, batches, batch, size, bsize = ordinal + 1, [], [], 0.0, 0.0
        if batch:
            batches.append(batch)
        if batches:
            yield f"{u}-{ordinal}", batches


# ----------------------------------------------------------------------------- scanning


_WORKER: dict = {}


def _make_searchers(item_words, config: IndexConfig) -> dict:
    ns = tuple(sorted({config.n, UNSEEN_N}))
    table = build_table(item_words, ns, config.n)
    searchers = {"table": table, "config": config}
    if config.neardup:
        searchers["neardup"] = NeardupIndex(item_words, NeardupConfig(threshold=config.neardup_threshold))
    return searchers


def _init_worker(item_words, config) -> None:
    if "table" not in _WORKER:  # already inherited through fork
        _WORKER.update(_make_searchers(item_words, config))


def _scan_batch(docs: list[Document]) -> tuple[np.ndarray, dict, dict, dict, int]:
    """Scan one batch of documents; returns the hits to merge in corpus order."""
    w = _WORKER
    config: IndexConfig = w["config"]
    ngram = NgramScanner(w["table"], config.n, config.max_locations)
    near = NeardupScanner(w["neardup"]) if config.neardup else None
    batch = split_words(docs)
    nbytes = sum(len(d.text) if d.text.isascii() else len(d.text.encode("utf-8", "surrogatepass")) for d in docs)
    ngram.scan(batch)
    if near is not None:
        near.scan(batch)
    hits = ngram.result()
    keys = np.nonzero(hits.counts)[0]
    sparse_counts = np.stack([keys, hits.counts[keys]])  # (2, n_matched_keys)
    return sparse_counts, hits.locations, (near.best if near else {}), (near.copies if near else {}), nbytes


@dataclass
class Accumulator:
    """Everything merged so far, in corpus order."""

    counts: np.ndarray
    max_locations: int
    locations: dict[int, list] = field(default_factory=dict)
    near_best: dict[int, NeardupHit] = field(default_factory=dict)
    near_copies: dict[int, int] = field(default_factory=dict)
    nbytes: int = 0

    def add(self, counts_sparse: np.ndarray, locations: dict, near_best: dict, near_copies: dict, nbytes: int) -> None:
        keys, counts = counts_sparse
        np.add.at(self.counts, keys.astype(np.int64), counts.astype(np.int64))
        for item, locs in locations.items():
            mine = self.locations.setdefault(int(item), [])
            mine.extend(locs[: max(0, self.max_locations - len(mine))])
        for item, hit in near_best.items():
            item = int(item)
            mine = self.near_best.get(item)
            if mine is None or hit.jaccard > mine.jaccard:
                self.near_best[item] = hit
        for item, n in near_copies.items():
            self.near_copies[int(item)] = self.near_copies.get(int(item), 0) + n
        self.nbytes += nbytes

    def sparse_counts(self) -> np.ndarray:
        keys = np.nonzero(self.counts)[0]
        return np.stack([keys, self.counts[keys]])

    def save(self, path: Path, stats: ReadStats) -> None:
        """Write this (one shard's) result as JSON, atomically."""
        write_json_atomic(path, {
            "counts": self.sparse_counts().tolist(),
            "locations": {str(k): v for k, v in self.locations.items()},
            "near_best": {str(k): [h.jaccard, h.location] for k, h in self.near_best.items()},
            "near_copies": {str(k): v for k, v in self.near_copies.items()},
            "nbytes": self.nbytes,
            "stats": stats.as_dict(),
        })

    def add_saved(self, path: Path) -> ReadStats:
        data = json.loads(path.read_text(encoding="utf-8"))
        counts = np.asarray(data["counts"], dtype=np.int64).reshape(2, -1)
        near = {int(k): NeardupHit(v[0], v[1]) for k, v in data["near_best"].items()}
        self.add(counts, {int(k): v for k, v in data["locations"].items()}, near,
                 {int(k): v for k, v in data["near_copies"].items()}, data["nbytes"])
        s = data["stats"]
        return ReadStats(s["read"], s["skipped"], s["skip_examples"])


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


def _plan(units, items, config: IndexConfig, text_field, template, id_field) -> tuple[list[dict], dict, dict]:
    """Input descriptions, parameters, and the plan a resumed or reused build must match."""
    inputs = [describe_path(u.path) for u in units]
    parameters = {**{k: v for k, v in asdict(config).items() if k not in ("workers", "batch_mb")},
                  "include": list(config.include), "exclude": list(config.exclude), "unseen_n": UNSEEN_N,
                  "normalization": NORMALIZATION, "text_field": config.text_field,
                  "benchmark_text_field": text_field, "benchmark_template": template, "benchmark_id_field": id_field,
                  "neardup_settings": asdict(NeardupConfig(threshold=config.neardup_threshold)) if config.neardup else None}
    plan = json.loads(json.dumps({"parameters": parameters, "benchmark": _benchmark_description(items),
                                  "inputs": [(d["path"], d["sha256"]) for d in inputs]}))
    return inputs, parameters, plan


def plan_matches(out: str | Path, corpus: list[str | Path], benchmark: str | Path, config: IndexConfig = IndexConfig(),
                 *, text_field: str | None = "text", template: str | None = None, id_field: str | None = "id") -> bool:
    """True when ``out`` holds a finished index built from these inputs and settings."""
    manifest_path = Path(out) / "manifest.json"
    if not manifest_path.exists():
        return False
    items = load_items(benchmark, text_field=text_field, template=template, id_field=id_field, skip_bad=config.skip_bad)
    _, _, plan = _plan(corpus_units(corpus, config), items, config, text_field, template, id_field)
    return json.loads(manifest_path.read_text(encoding="utf-8")).get("plan_sha256") == _plan_hash(plan)


def _plan_hash(plan: dict) -> str:
    return hash_bytes(json.dumps(plan, sort_keys=True).encode())


def build_index(corpus: list[str | Path], benchmark: str | Path, out: str | Path, *,
                config: IndexConfig = IndexConfig(), text_field: str | None = "text", template: str | None = None,
                id_field: str | None = "id", progress: Callable[[int], None] | None = None) -> IndexSummary:
    """Build an index of ``benchmark`` items in ``corpus`` and write it to ``out``.

    ``progress`` (optional) is called with the number of corpus bytes scanned after
    each batch. Returns an :class:`IndexSummary`; the index is at ``out``.

    Example::

        summary = build_index(["corpus.jsonl.zst"], "bench.jsonl", "indexes/bench")
        seen = [it for it in summary.index.items if it["status"] == "seen"]
    """
    t0 = time.perf_counter()
    config.validate()
    out = Path(out)
    _check_out(out)
    bench_stats = ReadStats()
    items = load_items(benchmark, text_field=text_field, template=template, id_field=id_field,
                       skip_bad=config.skip_bad, stats=bench_stats)
    units = corpus_units(corpus, config)
    inputs, parameters, plan = _plan(units, items, config, text_field, template, id_field)
    bench_desc = describe_path(benchmark)

    partial = out.with_name(out.name + ".partial")
    plan_path = partial / "plan.json"
    if partial.exists() and (not plan_path.exists() or json.loads(plan_path.read_text()) != plan):
        shutil.rmtree(partial)  # inputs or settings changed: partial results are stale
    partial.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_path, plan)

    item_words = item_batches([it.text for it in items])
    searchers = _make_searchers(item_words, config)
    total = Accumulator(np.zeros(searchers["table"].n_keys, dtype=np.int64), config.max_locations)
    stats = ReadStats()
    shards_total = shards_resumed = 0

    _WORKER.clear()
    _WORKER.update(searchers)
    pool = None
    if config.workers > 1:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        pool = ctx.Pool(config.workers, initializer=_init_worker,
                        initargs=(item_words, config) if method == "spawn" else (None, config))
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
            shard = Accumulator(np.zeros_like(total.counts), config.max_locations)
            results = pool.imap(_scan_batch, batches) if pool else map(_scan_batch, batches)
            for counts, locations, near_best, near_copies, nbytes in results:
                shard.add(counts, locations, near_best, near_copies, nbytes)
                if progress:
                    progress(nbytes)
            shard_stats = ReadStats(stats.read - before.read, stats.skipped - before.skipped,
                                    stats.examples[len(before.examples):])
            shard.save(shard_path, shard_stats)
            total.add(shard.sparse_counts(), shard.locations, shard.near_best, shard.near_copies, shard.nbytes)
    finally:
        if pool is not None:
            pool.terminate()
        _WORKER.clear()

    records = _item_records(items, item_words, searchers["table"], total, config)
    counts = {"items": len(items), "seen": sum(r["status"] == "seen" for r in records),
              "unseen": sum(r["status"] == "unseen" for r in records),
              "ambiguous": sum(r["status"] == "ambiguous" for r in records)}
    manifest = make_manifest("index", inputs=inputs, parameters=parameters, format=INDEX_FORMAT,
                             benchmark={**bench_desc, **bench_stats.as_dict()},
                             corpus={"documents": stats.as_dict(), "bytes": total.nbytes, "shards": shards_total,
                                     "shards_resumed": shards_resumed},
                             counts=counts, plan_sha256=_plan_hash(plan), seconds=round(time.perf_counter() - t0, 3))
    _publish(out, partial, records, manifest)
    return IndexSummary(load_index(out), time.perf_counter() - t0, total.nbytes, shards_total, shards_resumed, stats)


def _item_records(items, item_words, table, total: Accumulator, config: IndexConfig) -> list[dict]:
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
        rec["text"] = item.text
        records.append(rec)
    return records


def _check_out(out: Path) -> None:
    """Refuse to replace anything at ``out`` that is not a previous index."""
    partial = out.with_name(out.name + ".partial")  # where build_index stages shards (its own directory)
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        kind = "a symbolic link" if partial.is_symlink() else "not a directory"
        raise InputError(f"is {kind}, not the staging directory of an index build; move it away or choose "
                         f"another --out (it is neither followed nor deleted)", path=partial)
    if partial.is_dir() and any(partial.iterdir()) and not (partial / "plan.json").exists():
        raise InputError("is not the staging directory of an index build (no plan.json); move it away or "
                         "choose another --out (it is not deleted)", path=partial)
    check_can_create(out)  # out, OUT.partial and the index's files all go in out's parent
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        raise InputError("is a symbolic link; choose another --out (it is neither followed nor replaced)", path=out)
    if not out.is_dir():
        raise InputError("exists and is not a directory; choose another --out", path=out)
    if any(out.iterdir()) and not (out / "manifest.json").exists():
        raise InputError("exists and is not a contaudit index (no manifest.json); refusing to replace it", path=out)


def _publish(out: Path, partial: Path, records: list[dict], manifest: dict) -> None:
    """Write the finished index into a temporary directory, then swap it into place."""
    staging = partial / "final"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    write_jsonl_atomic(staging / "items.jsonl", records)
    write_json_atomic(staging / "manifest.json", manifest)
    replace_dir(staging, out, partial / "old")  # the previous index goes into our own staging directory
    shutil.rmtree(partial, ignore_errors=True)
