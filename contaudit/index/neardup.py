"""Near-duplicate search: MinHash LSH over benchmark items, queried with corpus windows.

Items are cut into overlapping chunks of ``chunk_words`` word bigrams whose MinHash
signatures (datasketch, ``scheme="legacy"``) are banded as datasketch's
``MinHashLSH`` would band them for ``candidate_threshold``. Every corpus window of the
same size (at a stride of ``window_stride`` words) is signed with the same
permutations, vectorized with NumPy, and looked up band by band. Each candidate is
verified by computing the actual Jaccard similarity between the whole item and the
best-aligned corpus span, so the reported similarity is exact, not an estimate.

The verified similarity is the weighted (multiset) Jaccard of the two word bags,
``sum(min(a_w, b_w)) / sum(max(a_w, b_w))``: changing 10 % of an item's words gives
0.82, deleting 10 % gives 0.90.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32

from contaudit.io import Document
from contaudit.text import normalize, word_starts

CHUNK_SIZES = (8, 12, 16, 24)  # window sizes in bigrams; items shorter than 9 words are not searched
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
_WORD_CACHE_LIMIT = 2_000_000


@dataclass(frozen=True)
class NeardupConfig:
    """Settings of the near-duplicate search (recorded in the index manifest)."""

    num_perm: int = 64
    chunk_words: int = 24
    window_stride: int = 4
    candidate_threshold: float = 0.5  # LSH threshold on the Jaccard of chunk bigram sets
    threshold: float = 0.8  # verified Jaccard at which a span counts as a copy
    verify_floor: float = 0.5  # candidates whose Jaccard cannot reach this are not verified
    length_slack: float = 0.1  # verified spans may be this fraction longer/shorter than the item
    seed: int = 1


@dataclass
class NeardupHit:
    """The best verified match of one item."""

    jaccard: float
    location: list  # [source, record, char_offset]


def _chunk_size(n_words: int, chunk_words: int) -> int | None:
    sizes = [c for c in CHUNK_SIZES if c <= min(n_words, chunk_words)]
    return max(sizes) if sizes else None


def _chunk_starts(n_words: int, size: int) -> list[int]:
    step = max(1, size // 2)
    starts = list(range(0, n_words - size + 1, step))
    if starts[-1] != n_words - size:
        starts.append(n_words - size)
    return starts


def bigrams(hashes: np.ndarray) -> np.ndarray:
    """32-bit hashes of consecutive word pairs (the shingles used for candidates)."""
    h = hashes.astype(np.uint64)
    return ((h[:-1] * np.uint64(0x9E3779B1)) ^ h[1:]) & _MAX_HASH


class WordHasher:
    """32-bit word hashes (datasketch's sha1_hash32), cached per process."""

    def __init__(self):
        self._cache: dict[str, int] = {}

    def __call__(self, words: list[str]) -> np.ndarray:
        cache = self._cache
        if len(cache) > _WORD_CACHE_LIMIT:
            cache.clear()
        out = np.empty(len(words), dtype=np.uint64)
        for i, w in enumerate(words):
            h = cache.get(w)
            if h is None:
                h = cache[w] = sha1_hash32(w.encode("utf-8"))
            out[i] = h
        return out


class NeardupIndex:
    """Banded MinHash signatures of every item chunk, ready to query corpus windows."""

    def __init__(self, item_words: list[list[str]], config: NeardupConfig = NeardupConfig()):
        self.config = config
        self.hasher = WordHasher()
        lsh = MinHashLSH(threshold=config.candidate_threshold, num_perm=config.num_perm)
        self.bands, self.rows = lsh.b, lsh.r
        probe = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=int, scheme="legacy")
        self.perm_a, self.perm_b = (np.asarray(p, dtype=np.uint64) for p in probe.permutations)
        rng = np.random.default_rng(config.seed)
        self._mix = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) | np.uint64(1)

        self.item_hashes = [self.hasher(ws) for ws in item_words]
        self.item_bags = [Counter(h.tolist()) for h in self.item_hashes]
        # chunks[size] = (item index, chunk start) per chunk, and band keys per band
        self.sizes: list[int] = []
        self._chunks: dict[int, np.ndarray] = {}
        self._band_keys: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        by_size: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for i, hashes in enumerate(self.item_hashes):
            shingles = bigrams(hashes)
            size = _chunk_size(len(shingles), config.chunk_words)
            if size is None:
                continue
            for start in _chunk_starts(len(shingles), size):
                sig = self.signature(shingles[start:start + size])
                by_size.setdefault(size, []).append((i, start, sig))
        for size, chunks in sorted(by_size.items()):
            self.sizes.append(size)
            self._chunks[size] = np.asarray([(i, s) for i, s, _ in chunks], dtype=np.int64)
            keys = self._band_hash(np.stack([sig for _, _, sig in chunks]))  # (n_chunks, bands)
            per_band = []
            for j in range(self.bands):
                order = np.argsort(keys[:, j], kind="stable")
                per_band.append((keys[order, j], order))
            self._band_keys[size] = per_band

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """MinHash signature of a set of 32-bit hashes; equals datasketch's legacy MinHash."""
        phv = self._permute(hashes)  # (num_perm, n)
        return phv.min(axis=1)

    def _permute(self, hashes: np.ndarray) -> np.ndarray:
        hv = hashes.astype(np.uint64)[None, :]
        return np.bitwise_and((self.perm_a[:, None] * hv + self.perm_b[:, None]) % _MERSENNE, _MAX_HASH)

    def _band_hash(self, sigs: np.ndarray) -> np.ndarray:
        """(n, num_perm) signatures -> (n, bands) 64-bit keys, one per LSH band."""
        n = sigs.shape[0]
        banded = sigs[:, : self.bands * self.rows].reshape(n, self.bands, self.rows).astype(np.uint64)
        return (banded * self._mix).sum(axis=2)  # wraps mod 2**64

    def window_signatures(self, hashes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Signatures of the windows ``hashes[q:q+size]`` for q = 0, stride, 2*stride, ...

        Returns ``(starts, sigs)`` with sigs of shape (n_windows, num_perm).
        """
        stride = self.config.window_stride
        n = len(hashes)
        if n < size:
            return np.empty(0, dtype=np.int64), np.empty((0, self.config.num_perm), dtype=np.uint64)
        phv = self._permute(hashes)  # (P, n)
        block_starts = np.arange(0, n, stride)
        blocks = np.minimum.reduceat(phv, block_starts, axis=1)  # (P, n_blocks)
        per_window = -(-size // stride)  # blocks per window (size is a multiple of stride here)
        starts = np.arange(0, n - size + 1, stride)
        sigs = blocks[:, : len(starts)].copy()
        for k in range(1, per_window):
            np.minimum(sigs, blocks[:, k: k + len(starts)], out=sigs)
        return starts, sigs.T

    def candidates(self, hashes: np.ndarray) -> list[tuple[int, int]]:
        """(item, estimated start of the item in the words ``hashes``) for each LSH hit."""
        out = []
        shingles = bigrams(hashes)
        for size in self.sizes:
            starts, sigs = self.window_signatures(shingles, size)
            if not len(starts):
                continue
            keys = self._band_hash(sigs)
            chunks = self._chunks[size]
            for j, (sorted_keys, order) in enumerate(self._band_keys[size]):
                q = keys[:, j]
                lo = np.searchsorted(sorted_keys, q, side="left")
                hi = np.searchsorted(sorted_keys, q, side="right")
                for w in np.nonzero(hi > lo)[0]:
                    for c in order[lo[w]:hi[w]]:
                        item, chunk_start = chunks[c]
                        out.append((int(item), int(starts[w] - chunk_start)))
        return out


def best_alignment(doc: np.ndarray, bag: Counter, length: int, lo: int, hi: int, slack: float) -> tuple[float, int]:
    """Best weighted Jaccard between ``bag`` and any span ``doc[s:e]``.

    Spans start in ``[lo, hi]`` and are ``length`` words long give or take
    ``slack * length``. Returns ``(jaccard, start)``. Window counts are updated
    incrementally, so each (start, end) pair costs O(1).
    """
    n = len(doc)
    extra = int(round(slack * length))
    min_len, max_len = max(1, length - extra), length + extra
    lo, hi = max(0, lo), min(hi, n - 1)
    total_item = sum(bag.values())
    best, best_start = 0.0, lo
    doc_list = doc.tolist()
    for s in range(lo, hi + 1):
        window: Counter = Counter()
        inter = 0
        end = min(n, s + max_len)
        for e in range(s, end):
            w = doc_list[e]
            if window[w] < bag.get(w, 0):
                inter += 1
            window[w] += 1
            size = e - s + 1
            if size >= min_len:
                jac = inter / (total_item + size - inter)
                if jac > best:
                    best, best_start = jac, s
    return best, best_start


def _jaccard_bound(doc: np.ndarray, bag: Counter, length: int, lo: int, hi: int) -> float:
    """Upper bound on the Jaccard of ``bag`` with any span inside ``doc[lo:hi]``.

    A span's intersection with the item is at most the region's, and its union is at
    least the item's size, so ``inter(region) / |item|`` bounds every span.
    """
    region = Counter(doc[max(0, lo):max(0, hi)].tolist())
    inter = sum(min(c, region.get(w, 0)) for w, c in bag.items())
    return inter / length


def _clusters(cands, stride, slack, item_hashes):
    """Group each item's candidate starts into clusters, one per likely copy.

    Yields ``(item, lo, hi)``: the range of span starts to verify for the cluster.
    """
    by_item: dict[int, list[int]] = {}
    for item, begin in cands:
        by_item.setdefault(item, []).append(begin)
    for item in sorted(by_item):
        margin = stride + int(slack * len(item_hashes[item]))
        begins = sorted(set(by_item[item]))
        lo = hi = begins[0]
        for b in begins[1:]:
            if b - hi > 2 * margin:
                yield item, lo - margin, hi + margin
                lo = b
            hi = b
        yield item, lo - margin, hi + margin


class NeardupScanner:
    """Accumulates, per item, the best verified near duplicate in scanned documents."""

    def __init__(self, index: NeardupIndex):
        self.index = index
        self.best: dict[int, NeardupHit] = {}
        self.copies: dict[int, int] = {}  # verified spans with Jaccard >= threshold
        self.windows_checked = 0
        self.candidates_verified = 0

    def scan(self, doc: Document, norm: str | None = None) -> None:
        """Search one document for near duplicates of any item."""
        index = self.index
        if not index.sizes:
            return
        ws = (norm if norm is not None else normalize(doc.text)).split()
        if len(ws) < min(index.sizes):
            return
        hashes = index.hasher(ws)
        cands = index.candidates(hashes)
        if not cands:
            return
        slack = index.config.length_slack
        stride = index.config.window_stride
        starts = None
        floor = index.config.verify_floor
        for item, lo, hi in _clusters(cands, stride, slack, index.item_hashes):
            length = len(index.item_hashes[item])
            if _jaccard_bound(hashes, index.item_bags[item], length, lo, hi + length + int(slack * length)) < floor:
                continue
            jac, start = best_alignment(hashes, index.item_bags[item], len(index.item_hashes[item]), lo, hi, slack)
            self.candidates_verified += 1
            if jac >= index.config.threshold:
                self.copies[item] = self.copies.get(item, 0) + 1
            prior = self.best.get(item)
            if prior is None or jac > prior.jaccard:
                if starts is None:
                    starts = word_starts(doc.text)
                offset = starts[start] if start < len(starts) else None
                self.best[item] = NeardupHit(jac, [doc.source, doc.record, offset])

    def merge(self, later: "NeardupScanner") -> None:
        """Keep the better hit per item; on ties the earlier one (this) wins."""
        for item, n in later.copies.items():
            self.copies[item] = self.copies.get(item, 0) + n
        for item, hit in later.best.items():
            mine = self.best.get(item)
            if mine is None or hit.jaccard > mine.jaccard:
                self.best[item] = hit
