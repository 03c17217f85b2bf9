"""Exact word n-gram search of a corpus for benchmark items (Aho-Corasick).

Every n-gram of every item (for each configured n) becomes a key ``" w1 ... wn "`` in
one pyahocorasick automaton. A corpus document is normalized to ``" w w w ... "`` and
scanned once; the spaces around each key make matches align to word boundaries.
Memory depends on the benchmark (the keys), never on the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ahocorasick
import numpy as np

from contaudit.io import Document
from contaudit.text import normalize, word_starts


@dataclass
class NgramTable:
    """The distinct n-grams of a benchmark and where each occurs in the items.

    ``keys[k]`` is the n-gram string of key k and ``key_n[k]`` its n. For item i and
    size n, ``item_keys[n][i]`` lists the key id at each n-gram position of the item.
    """

    ns: tuple[int, ...]
    keys: list[str]
    key_n: np.ndarray
    item_keys: dict[int, list[np.ndarray]]
    key_items: dict[int, list[int]] = field(default_factory=dict)  # key -> items (main n only)


def build_table(item_words: list[list[str]], ns: tuple[int, ...], main_n: int) -> NgramTable:
    """Collect the n-grams (for every n in ``ns``) of each item's word list."""
    key_ids: dict[str, int] = {}
    key_n: list[int] = []
    item_keys: dict[int, list[np.ndarray]] = {n: [] for n in ns}
    key_items: dict[int, list[int]] = {}
    for n in ns:
        for i, ws in enumerate(item_words):
            ids = []
            for p in range(len(ws) - n + 1):
                key = " " + " ".join(ws[p:p + n]) + " "
                k = key_ids.get(key)
                if k is None:
                    k = key_ids[key] = len(key_n)
                    key_n.append(n)
                ids.append(k)
                if n == main_n:
                    owners = key_items.setdefault(k, [])
                    if not owners or owners[-1] != i:
                        owners.append(i)
            item_keys[n].append(np.asarray(ids, dtype=np.int64))
    return NgramTable(ns, list(key_ids), np.asarray(key_n, dtype=np.int64), item_keys, key_items)


def build_automaton(table: NgramTable) -> ahocorasick.Automaton:
    """An Aho-Corasick automaton mapping each key string to its key id."""
    automaton = ahocorasick.Automaton()
    for k, key in enumerate(table.keys):
        automaton.add_word(key, k)
    if len(table.keys):
        automaton.make_automaton()
    return automaton


@dataclass
class NgramHits:
    """What one stretch of corpus contributed: per-key counts and first locations."""

    counts: np.ndarray  # (n_keys,) occurrences of each key
    locations: dict[int, list[list]]  # item -> [[source, record, char_offset], ...]

    def merge(self, later: "NgramHits", max_locations: int) -> None:
        """Add ``later`` (which comes after this in corpus order) into this."""
        self.counts += later.counts
        for item, locs in later.locations.items():
            mine = self.locations.setdefault(item, [])
            mine.extend(locs[: max(0, max_locations - len(mine))])


class NgramScanner:
    """Scans normalized documents with a built automaton and accumulates hits."""

    def __init__(self, table: NgramTable, automaton: ahocorasick.Automaton, main_n: int, max_locations: int):
        self.table = table
        self.automaton = automaton
        self.main_is = table.key_n == main_n
        self.max_locations = max_locations
        self._pending: list[int] = []
        self.hits = NgramHits(np.zeros(len(table.keys), dtype=np.int64), {})

    def scan(self, doc: Document, norm: str | None = None) -> None:
        """Count every key occurring in ``doc`` and note first locations per item."""
        if not self.table.keys:
            return
        if norm is None:
            norm = normalize(doc.text)
        text = " " + norm + " "
        found = [(end, k) for end, k in self.automaton.iter(text)]
        if not found:
            return
        self._pending.extend(k for _, k in found)
        if len(self._pending) > 1_000_000:
            self._flush()
        self._note_locations(doc, text, found)

    def _note_locations(self, doc: Document, text: str, found: list[tuple[int, int]]) -> None:
        """Record, for each item matched here, the first main-n match in this document."""
        locations = self.hits.locations
        done: set[int] = set()
        starts = None
        for end, k in found:
            if not self.main_is[k]:
                continue
            for item in self.table.key_items.get(k, ()):
                if item in done or len(locations.get(item, ())) >= self.max_locations:
                    continue
                done.add(item)
                if starts is None:
                    starts = word_starts(doc.text)
                begin = end - len(self.table.keys[k]) + 2  # first char of the first word
                word_index = text.count(" ", 0, begin) - 1
                offset = starts[word_index] if word_index < len(starts) else None
                locations.setdefault(item, []).append([doc.source, doc.record, offset])

    def _flush(self) -> None:
        if self._pending:
            self.hits.counts += np.bincount(np.asarray(self._pending, dtype=np.int64),
                                            minlength=len(self.table.keys))
            self._pending = []

    def result(self) -> NgramHits:
        """The accumulated hits (call once scanning is done)."""
        self._flush()
        return self.hits


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a boolean array."""
    best = run = 0
    for v in mask:
        run = run + 1 if v else 0
        best = max(best, run)
    return best


def item_stats(table: NgramTable, counts: np.ndarray, item: int, main_n: int, small_n: int) -> dict:
    """Per-item exact-overlap statistics from corpus key counts."""
    main = counts[table.item_keys[main_n][item]]
    small = counts[table.item_keys[small_n][item]]
    matched = main > 0
    small_matched = small > 0
    run = longest_run(small_matched)
    return {
        "n_ngrams": int(main.size),
        "matched_ngrams": int(matched.sum()),
        "coverage": float(matched.mean()) if main.size else 0.0,
        "longest_match": int(run + small_n - 1) if run else 0,
        "occurrences": int(np.median(main[matched])) if matched.any() else 0,
        "total_hits": int(main.sum()),
        "matched_8grams": int(small_matched.sum()),
        "coverage8": float(small_matched.mean()) if small.size else 0.0,
    }
