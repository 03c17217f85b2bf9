"""Exact word n-gram search of a corpus for benchmark items.

Every n-gram of every item (for each configured n) is hashed (64-bit polynomial over
word hashes, :mod:`contaudit.index.wordhash`) into a sorted table. A batch of corpus
text is tokenized and hashed with array operations, each corpus n-gram is looked up
with a binary search, and every hit is then verified word by word against the item's
bytes, so counts are exact. Memory depends on the benchmark, never on the corpus.

An item shorter than the main n but of at least :data:`MIN_WHOLE_WORDS` words is
matched whole: its full word sequence is one more key, of size its length (GPT-3
lowered n for short items), so it can be ``seen`` with coverage 1.0. Those sizes are
not scanned one by one: the corpus's ``MIN_WHOLE_WORDS``-grams are looked up among the
short items' first words, and only the few places that match are hashed at each short
length (:func:`find_whole`), one pass however many lengths the short items have.

(A pyahocorasick automaton over the same 13-grams, the classic tool, ran at 8.9 MB/s
against 26-31 MB/s for this design on 33 MB of stdlib source with a 1,000-item
benchmark; ``benchmarks/index_throughput.py`` measures both in one run.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contaudit.index.wordhash import (WordBatch, document_word_starts, ngram_hashes, pack_words, same_words,
                                      split_words)
from contaudit.io import Document

MIN_WHOLE_WORDS = 5  # shorter items are matched by no n-gram (they would occur everywhere)
FILTER_BITS = 24  # a 16 MB table: one random read rules out almost every corpus n-gram
_FILTER_MASK = np.uint64((1 << FILTER_BITS) - 1)


@dataclass
class NgramTable:
    """The distinct n-grams of a benchmark.

    Key k is an n-gram of size ``key_n[k]`` first seen in item ``key_item[k]`` at word
    ``key_pos[k]``. For item i and size n, ``item_keys[n][i]`` lists the key at each
    n-gram position of the item. ``lookup[n]`` is ``(sorted hashes, key ids)``.
    ``key_items[k]`` lists the items containing key k (main n) or equal to it (whole keys).
    ``ns`` are the sizes scanned n-gram by n-gram. ``item_whole[i]`` is the key of item
    i's whole word sequence when it is matched whole (``MIN_WHOLE_WORDS <= length <
    main n``), else -1; ``whole_ns`` are the lengths of such items, ``whole_only_ns``
    those not in ``ns`` (found by :func:`find_whole`), and ``whole_prefix`` the sorted
    hashes of the first ``MIN_WHOLE_WORDS`` words of those items.
    """

    ns: tuple[int, ...]
    item_words: list[list[bytes]]
    key_n: np.ndarray
    key_item: np.ndarray
    key_pos: np.ndarray
    item_keys: dict[int, list[np.ndarray]]
    lookup: dict[int, tuple[np.ndarray, np.ndarray]]
    key_items: dict[int, list[int]]
    prefilter: np.ndarray  # (2**FILTER_BITS,) bool: could a hash with these low bits be a key?
    item_whole: np.ndarray  # (n_items,) int64
    whole_ns: tuple[int, ...]
    whole_only_ns: tuple[int, ...]
    whole_prefix: np.ndarray  # sorted uint64
    located: np.ndarray  # (n_keys,) bool: key k is in key_items (its matches give locations)

    @property
    def n_keys(self) -> int:
        return len(self.key_n)


def item_batches(texts: list[str]) -> list[WordBatch]:
    """Tokenize each item on its own (items are short; one batch each)."""
    return [split_words([Document("", 0, t)]) for t in texts]


def build_table(items: list[WordBatch], ns: tuple[int, ...], main_n: int) -> NgramTable:
    """Collect and hash the n-grams (for every n in ``ns``) of each tokenized item.

    Items of ``MIN_WHOLE_WORDS`` to ``main_n - 1`` words also get their whole word
    sequence as a key (``item_whole``).
    """
    lengths = [len(b.hashes) for b in items]
    whole_ns = tuple(sorted({m for m in lengths if MIN_WHOLE_WORDS <= m < main_n}))
    whole_only_ns = tuple(m for m in whole_ns if m not in ns)
    all_ns = tuple(sorted(set(ns) | set(whole_ns)))
    key_n, key_item, key_pos = [], [], []
    item_keys: dict[int, list[np.ndarray]] = {n: [] for n in ns}
    item_whole = np.full(len(items), -1, dtype=np.int64)
    lookup = {}
    key_items: dict[int, list[int]] = {}
    for n in all_ns:
        ids_of: dict[int, int] = {}
        for i, batch in enumerate(items):
            if n not in ns and lengths[i] != n:
                continue  # a size only for whole short items
            hashes = ngram_hashes(batch.hashes, n).tolist()
            ids = []
            for p, h in enumerate(hashes):
                k = ids_of.get(h)
                if k is None:
                    k = ids_of[h] = len(key_n)
                    key_n.append(n)
                    key_item.append(i)
                    key_pos.append(p)
                ids.append(k)
                if n == main_n:
                    owners = key_items.setdefault(k, [])
                    if not owners or owners[-1] != i:
                        owners.append(i)
            if n in whole_ns and lengths[i] == n:
                item_whole[i] = ids[0]
                key_items.setdefault(ids[0], []).append(i)
            if n in ns:
                item_keys[n].append(np.asarray(ids, dtype=np.int64))
        hashes = np.fromiter(ids_of.keys(), dtype=np.uint64, count=len(ids_of))
        keys = np.fromiter(ids_of.values(), dtype=np.int64, count=len(ids_of))
        order = np.argsort(hashes)
        lookup[n] = (hashes[order], keys[order])
    item_words = [[b.word(j) for j in range(len(b.starts))] for b in items]
    located = np.zeros(len(key_n), dtype=bool)
    located[list(key_items)] = True
    prefixes = [ngram_hashes(b.hashes[:MIN_WHOLE_WORDS], MIN_WHOLE_WORDS) for b, m in zip(items, lengths)
                if m in whole_only_ns]
    whole_prefix = np.unique(np.concatenate(prefixes)) if prefixes else np.empty(0, dtype=np.uint64)
    prefilter = np.zeros(1 << FILTER_BITS, dtype=bool)
    for sorted_hashes in [lookup[n][0] for n in ns] + [whole_prefix]:
        prefilter[(sorted_hashes & _FILTER_MASK).astype(np.int64)] = True
    return NgramTable(tuple(ns), item_words, np.asarray(key_n, dtype=np.int64), np.asarray(key_item, dtype=np.int64),
                      np.asarray(key_pos, dtype=np.int64), item_keys, lookup, key_items, prefilter, item_whole,
                      whole_ns, whole_only_ns, whole_prefix, located)


def find_ngrams(table: NgramTable, batch: WordBatch, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, keys)``: corpus word positions where a benchmark n-gram starts.

    N-grams spanning two documents are excluded; hash hits are verified word by word.
    """
    sorted_hashes, sorted_keys = table.lookup[n]
    h = ngram_hashes(batch.hashes, n)
    if not len(h) or not len(sorted_hashes):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    maybe = np.flatnonzero(table.prefilter[(h & _FILTER_MASK).astype(np.int64)])
    idx = np.searchsorted(sorted_hashes, h[maybe])
    idx[idx == len(sorted_hashes)] = 0
    hit = sorted_hashes[idx] == h[maybe]
    hit &= batch.doc_of_word[maybe] == batch.doc_of_word[maybe + n - 1]
    positions = maybe[hit]
    keys = sorted_keys[idx[hit]]
    ok = _same_words(table, batch, positions, keys, n)
    return positions[ok], keys[ok]


def find_whole(table: NgramTable, batch: WordBatch) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, keys)``: corpus word positions where a short item (``whole_only_ns``) occurs whole.

    One pass of ``MIN_WHOLE_WORDS``-gram hashes finds the places where some short
    item's first words occur; only there is each short length hashed and looked up.
    Like :func:`find_ngrams`, matches spanning two documents are excluded and hash hits
    are verified word by word.
    """
    empty = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if not table.whole_only_ns or len(batch.hashes) < MIN_WHOLE_WORDS:
        return empty
    h = ngram_hashes(batch.hashes, MIN_WHOLE_WORDS)
    maybe = np.flatnonzero(table.prefilter[(h & _FILTER_MASK).astype(np.int64)])
    idx = np.searchsorted(table.whole_prefix, h[maybe])
    idx[idx == len(table.whole_prefix)] = 0
    starts = maybe[table.whole_prefix[idx] == h[maybe]]
    if not len(starts):
        return empty
    # The longest short length's words from each start (clipped at the end of the batch):
    # the hash of a window's first n words is then one n-gram hash of the windows laid end to end.
    n_words, longest = len(batch.hashes), max(table.whole_only_ns)
    windows = batch.hashes[np.minimum(starts[:, None] + np.arange(longest), n_words - 1)].reshape(-1)
    positions, keys = [], []
    for n in table.whole_only_ns:
        hn = ngram_hashes(windows, n)[::longest]
        sorted_hashes, sorted_keys = table.lookup[n]
        idx = np.searchsorted(sorted_hashes, hn)
        idx[idx == len(sorted_hashes)] = 0
        end = np.minimum(starts + n - 1, n_words - 1)
        hit = (sorted_hashes[idx] == hn) & (starts + n <= n_words) & (batch.doc_of_word[starts] == batch.doc_of_word[end])
        found, found_keys = starts[hit], sorted_keys[idx[hit]]
        ok = _same_words(table, batch, found, found_keys, n)
        positions.append(found[ok])
        keys.append(found_keys[ok])
    order = np.argsort(np.concatenate(positions), kind="stable")  # corpus order, for first locations
    return np.concatenate(positions)[order], np.concatenate(keys)[order]


def _same_words(table: NgramTable, batch: WordBatch, positions: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """For each hit: are the corpus words from ``positions[i]`` the words of key ``keys[i]`` (bytes)?"""
    if "_packed" not in table.__dict__:  # every item's words in one buffer, made once
        table.__dict__["_packed"] = pack_words(table.item_words)
    packed, first = table.__dict__["_packed"]
    return same_words(batch, positions, n, packed, first[table.key_item[keys]] + table.key_pos[keys])


@dataclass
class NgramHits:
    """What a stretch of corpus contributed: per-key counts and first locations."""

    counts: np.ndarray  # (n_keys,) occurrences of each key
    locations: dict[int, list[list]]  # item -> [[source, record, char_offset], ...]


class NgramScanner:
    """Scans tokenized batches of documents and accumulates hits."""

    def __init__(self, table: NgramTable, main_n: int, max_locations: int):
        self.table = table
        self.main_n = main_n
        self.max_locations = max_locations
        self.hits = NgramHits(np.zeros(table.n_keys, dtype=np.int64), {})

    def scan(self, batch: WordBatch) -> None:
        """Count every benchmark n-gram in ``batch`` and note first locations per item."""
        for n in self.table.ns:
            positions, keys = find_ngrams(self.table, batch, n)
            if len(keys):
                self.hits.counts += np.bincount(keys, minlength=self.table.n_keys)
            if n == self.main_n and len(keys):
                self._note_locations(batch, positions, keys)
            elif n in self.table.whole_ns and len(keys):
                whole = self.table.located[keys]  # among the n-grams of this size, the short items
                if whole.any():
                    self._note_locations(batch, positions[whole], keys[whole])
        positions, keys = find_whole(self.table, batch)  # short items of the other lengths
        if len(keys):
            self.hits.counts += np.bincount(keys, minlength=self.table.n_keys)
            self._note_locations(batch, positions, keys)

    def _note_locations(self, batch: WordBatch, positions: np.ndarray, keys: np.ndarray) -> None:
        """Record, for each item matched, its first main-n (or whole) match in each document."""
        locations = self.hits.locations
        done: set[tuple[int, int]] = set()
        word_offsets: dict[int, list[int]] = {}
        for p, k in zip(positions.tolist(), keys.tolist()):
            d = int(batch.doc_of_word[p])
            for item in self.table.key_items.get(k, ()):
                if (item, d) in done or len(locations.get(item, ())) >= self.max_locations:
                    continue
                done.add((item, d))
                doc = batch.docs[d]
                if batch.doc_ascii[d]:  # normalization kept every character in place
                    offset = int(batch.starts[p] - batch.doc_offsets[d])
                else:
                    if d not in word_offsets:
                        word_offsets[d] = document_word_starts(doc.text)
                    first = int(np.searchsorted(batch.doc_of_word, d))
                    k_in_doc = p - first
                    offset = word_offsets[d][k_in_doc] if k_in_doc < len(word_offsets[d]) else None
                locations.setdefault(item, []).append([doc.source, doc.record, offset])

    def result(self) -> NgramHits:
        """The accumulated hits."""
        return self.hits


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a boolean array."""
    best = run = 0
    for v in mask:
        run = run + 1 if v else 0
        best = max(best, run)
    return best


def item_stats(table: NgramTable, counts: np.ndarray, item: int, main_n: int, small_n: int) -> dict:
    """Per-item exact-overlap statistics from corpus key counts.

    An item matched whole (``table.item_whole``) has one "n-gram": itself.
    """
    whole = int(table.item_whole[item])
    main = counts[[whole]] if whole >= 0 else counts[table.item_keys[main_n][item]]
    small = counts[table.item_keys[small_n][item]]
    matched = main > 0
    small_matched = small > 0
    run = longest_run(small_matched)
    longest = int(run + small_n - 1) if run else 0
    if whole >= 0 and matched[0]:
        longest = len(table.item_words[item])
    return {
        "n_ngrams": int(main.size),
        "matched_ngrams": int(matched.sum()),
        "coverage": float(matched.mean()) if main.size else 0.0,
        "longest_match": longest,
        "occurrences": int(np.median(main[matched])) if matched.any() else 0,
        "total_hits": int(main.sum()),
        "matched_8grams": int(small_matched.sum()),
        "coverage8": float(small_matched.mean()) if small.size else 0.0,
    }
