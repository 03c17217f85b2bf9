"""The scan of corpus shards for benchmark items, shared by a one-machine build and Ray tasks.

:func:`iter_shards` cuts the corpus into shards and batches; a :class:`Searcher` holds
what a worker searches with (the items' n-gram table, their near-duplicate index, the
settings) and scans one batch; an :class:`Accumulator` merges batch and shard results
in corpus order. :mod:`contaudit.index.build` runs the scan in this process and a pool
of processes, :mod:`contaudit.index.distributed` as Ray tasks, with the same code, so
both write the same index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contaudit.config import IndexConfig
from contaudit.index.neardup import NeardupConfig, NeardupHit, NeardupIndex, NeardupScanner
from contaudit.index.ngram import NgramScanner, NgramTable, build_table
from contaudit.index.semantic import Candidate, SemanticIndex, SemanticScanner, merge_candidates
from contaudit.index.wordhash import WordBatch, iter_windows, split_words
from contaudit.io import CorpusUnit, Document, ReadStats
from contaudit.io import iter_unit_documents as io_unit_documents
from contaudit.manifest import write_json_atomic

UNSEEN_N = 8  # an item is unseen only if none of its 8-grams occurs in the corpus
WINDOW_CHARS = 1 << 20  # a document over twice this is scanned in windows of about this size

BatchResult = tuple[np.ndarray, dict, dict, dict, int, dict, float]  # (sparse counts, locations, near best,
#                                              near copies, bytes, semantic candidates, semantic stage seconds)


# ----------------------------------------------------------------------------- corpus


def iter_unit_documents(unit: CorpusUnit, config: IndexConfig, stats: ReadStats) -> Iterator[Document]:
    """Non-empty documents of one unit, in a fixed order (empty ones are skipped and counted)."""
    yield from io_unit_documents(unit, text_field=config.text_field, skip_bad=config.skip_bad, stats=stats)


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


@dataclass(eq=False)
class Searcher:
    """What a worker searches the corpus with: the items' n-gram table, their near-duplicate
    index (None without ``config.neardup``), their semantic index (None without
    ``config.semantic``) and the settings. Built once per scan and
    handed to every worker (inherited through fork, rebuilt after spawn, or sent to Ray tasks)."""

    table: NgramTable
    config: IndexConfig
    neardup: NeardupIndex | None = None
    semantic: SemanticIndex | None = None

    @classmethod
    def build(cls, item_words: list[WordBatch], config: IndexConfig, semantic: SemanticIndex | None = None) -> Searcher:
        """The searcher of the items ``item_words`` (:func:`~contaudit.index.ngram.item_batches`) for ``config``
        (``semantic``: the items' :class:`~contaudit.index.semantic.SemanticIndex`, with the calibrated floor)."""
        ns = tuple(sorted({config.n, UNSEEN_N}))
        table = build_table(item_words, ns, config.n)
        neardup = NeardupIndex(item_words, NeardupConfig(threshold=config.neardup_threshold)) if config.neardup \
            else None
        return cls(table, config, neardup, semantic)

    def scan_batch(self, docs: list[Document]) -> BatchResult:
        """Scan one batch of documents; returns the hits to merge in corpus order (:meth:`Accumulator.add`).

        A document longer than ``2 * WINDOW_CHARS`` is scanned in overlapping windows
        (:meth:`_scan_windows`), so memory does not grow with a document's size.
        """
        config = self.config
        ngram = NgramScanner(self.table, config.n, config.max_locations)
        near = NeardupScanner(self.neardup) if config.neardup else None
        nbytes = sum(len(d.text) if d.text.isascii() else len(d.text.encode("utf-8", "surrogatepass")) for d in docs)
        group: list[Document] = []
        for doc in [*docs, None]:
            if doc is not None and len(doc.text) <= 2 * WINDOW_CHARS:
                group.append(doc)
                continue
            if group:  # the short documents so far, together
                batch = split_words(group)
                ngram.scan(batch)
                if near is not None:
                    near.scan(batch)
                group = []
            if doc is not None:
                self._scan_windows(doc, ngram, near)
        semantic, semantic_seconds = {}, 0.0
        if self.semantic is not None:  # whole documents: it cuts long ones into chunks itself
            started = time.perf_counter()
            scanner = SemanticScanner(self.semantic)
            scanner.scan(docs)
            semantic, semantic_seconds = scanner.candidates, time.perf_counter() - started
        hits = ngram.result()
        keys = np.nonzero(hits.counts)[0]
        sparse_counts = np.stack([keys, hits.counts[keys]])  # (2, n_matched_keys)
        return (sparse_counts, hits.locations, (near.best if near else {}), (near.copies if near else {}), nbytes,
                semantic, semantic_seconds)

    def _scan_windows(self, doc: Document, ngram: NgramScanner, near: NeardupScanner | None) -> None:
        """Scan one long document window by window (:func:`iter_windows`), with the result of scanning it whole.

        Windows share ``overlap`` words: at least any exact match's length, and a near
        duplicate's longest span plus the words before its start that tell whether it is a
        new copy (``lead``). Exact counts are those of every window less
        those of the shared words; each item keeps its first location in the document; near
        duplicates are reported by the window that owns their start. Offsets are shifted
        to the document's.
        """
        config = self.config
        lead = near.index.lead if near is not None else 1
        overlap = max(config.n, UNSEEN_N, lead + near.index.max_span if near is not None else 0)
        shared = NgramScanner(ngram.table, config.n, 0)  # counts matches in the shared words (no locations)
        locations = ngram.hits.locations
        before_doc = {item: len(locs) for item, locs in locations.items()}
        for window in iter_windows(doc, WINDOW_CHARS, overlap, lead):
            before = {item: len(locs) for item, locs in locations.items()}
            ngram.scan(window.batch)
            for item, locs in locations.items():
                for loc in locs[before.get(item, 0):]:
                    loc[2] = None if loc[2] is None else loc[2] + window.shift
            if window.overlap is not None:
                shared.scan(window.overlap)
            if near is not None:
                prior = dict(near.best)
                near.scan(window.batch, owned=window.owned)
                for item, hit in near.best.items():
                    if hit is not prior.get(item) and hit.location[2] is not None:
                        hit.location[2] += window.shift
        ngram.hits.counts -= shared.result().counts
        for item, locs in locations.items():  # one location per document: the first
            del locs[before_doc.get(item, 0) + 1:]


@dataclass
class Accumulator:
    """Everything merged so far, in corpus order."""

    counts: np.ndarray
    max_locations: int
    locations: dict[int, list] = field(default_factory=dict)
    near_best: dict[int, NeardupHit] = field(default_factory=dict)
    near_copies: dict[int, int] = field(default_factory=dict)
    nbytes: int = 0
    semantic_k: int = 0  # semantic candidates kept per item (the stage's ``semantic_candidates``; 0: off)
    semantic_candidates: dict[int, list[Candidate]] = field(default_factory=dict)
    semantic_seconds: float = 0.0  # the semantic stage's scan time, summed over batches (workers' seconds)

    def add(self, counts_sparse: np.ndarray, locations: dict, near_best: dict, near_copies: dict, nbytes: int,
            semantic_candidates: dict | None = None, semantic_seconds: float = 0.0) -> None:
        """Merge one result (a :data:`BatchResult`, or a shard's) that comes next in corpus order."""
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
        merge_candidates(self.semantic_candidates, semantic_candidates or {}, self.semantic_k)
        self.semantic_seconds += semantic_seconds

    def result(self) -> BatchResult:
        """Everything merged, as one result to :meth:`add` to another accumulator (a shard's to the total's)."""
        return (self.sparse_counts(), self.locations, self.near_best, self.near_copies, self.nbytes,
                self.semantic_candidates, self.semantic_seconds)

    def sparse_counts(self) -> np.ndarray:
        """``(2, n_matched_keys)``: the keys with a count, and their counts."""
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
            **({"semantic_candidates": {str(k): [c.as_list() for c in cs]
                                        for k, cs in self.semantic_candidates.items()}}
               if self.semantic_candidates else {}),
            **({"semantic_seconds": self.semantic_seconds} if self.semantic_seconds else {}),
        })

    def add_saved(self, path: Path) -> ReadStats:
        """Merge a shard result :meth:`save` wrote; returns that shard's read stats."""
        data = json.loads(path.read_text(encoding="utf-8"))
        counts = np.asarray(data["counts"], dtype=np.int64).reshape(2, -1)
        near = {int(k): NeardupHit(v[0], v[1]) for k, v in data["near_best"].items()}
        self.add(counts, {int(k): v for k, v in data["locations"].items()}, near,
                 {int(k): v for k, v in data["near_copies"].items()}, data["nbytes"],
                 {int(k): [Candidate(*c) for c in v] for k, v in data.get("semantic_candidates", {}).items()},
                 data.get("semantic_seconds", 0.0))
        s = data["stats"]
        return ReadStats(s["read"], s["skipped"], s["skip_examples"])
