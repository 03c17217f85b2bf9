"""Near-duplicate search: MinHash LSH over benchmark items, queried with corpus windows.

Items are cut into overlapping chunks of ``chunk_words`` word bigrams whose MinHash
signatures (datasketch, ``scheme="affine32"``) are banded as datasketch's
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

from contaudit.index.wordhash import WordBatch
from contaudit.text import word_starts

CHUNK_SIZES = (8, 12, 16, 24)  # window sizes in bigrams; items shorter than 9 words are not searched
_MAX_HASH = np.uint64((1 << 32) - 1)
_FILTER_BITS = 22
_FILTER_MASK = np.uint64((1 << _FILTER_BITS) - 1)


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


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (what datasketch's affine32 scheme applies first)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def bigrams(hashes: np.ndarray) -> np.ndarray:
    """32-bit hashes of consecutive word pairs (the shingles used for candidates)."""
    h = hashes.astype(np.uint64)
    return ((h[:-1] * np.uint64(0x9E3779B1)) ^ h[1:]) & _MAX_HASH


class NeardupIndex:
    """Banded MinHash signatures of every item chunk, ready to query corpus windows."""

    def __init__(self, items: list[WordBatch], config: NeardupConfig = NeardupConfig()):
        self.config = config
        lsh = MinHashLSH(threshold=config.candidate_threshold, num_perm=config.num_perm)
        self.bands, self.rows = lsh.b, lsh.r
        probe = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=int, scheme="affine32")
        self.perm_a, self.perm_b = (np.asarray(p, dtype=np.uint32)[:, None] for p in probe.permutations)
        rng = np.random.default_rng(config.seed)
        self._mix = rng.integers(1, 2**63, size=self.rows, dtype=np.uint64) | np.uint64(1)

        self.item_hashes = [b.hashes & _MAX_HASH for b in items]
        self.item_bags = [Counter(h.tolist()) for h in self.item_hashes]
        # chunks[size] = (item index, chunk start) per chunk, and band keys per band
        self.sizes: list[int] = []
        self._chunks: dict[int, np.ndarray] = {}
        self._band_keys: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._band_filter: dict[int, np.ndarray] = {}  # could any band key end in these bits?
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
            self._band_filter[size] = np.zeros(1 << _FILTER_BITS, dtype=bool)
            self._band_filter[size][(keys & _FILTER_MASK).astype(np.int64).ravel()] = True

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """MinHash signature of a set of 32-bit hashes; equals datasketch's affine32 MinHash."""
        return self._permute(hashes).min(axis=1)

    def _permute(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm, n) permuted values: fmix32, then a*h + b modulo 2**32."""
        hv = _fmix32(hashes.astype(np.uint32))[None, :]
        return self.perm_a * hv + self.perm_b

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
            return np.empty(0, dtype=np.int64), np.empty((0, self.config.num_perm), dtype=np.uint32)
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
            maybe = self._band_filter[size][(keys & _FILTER_MASK).astype(np.int64)]  # (n_windows, bands)
            for j, (sorted_keys, order) in enumerate(self._band_keys[size]):
                windows = np.flatnonzero(maybe[:, j])
                q = keys[windows, j]
                lo = np.searchsorted(sorted_keys, q, side="left")
                hi = np.searchsorted(sorted_keys, q, side="right")
                for w_i in np.flatnonzero(hi > lo):
                    w = windows[w_i]
                    for c in order[lo[w_i]:hi[w_i]]:
                        item, chunk_start = chunks[c]
                        out.append((int(item), int(starts[w] - chunk_start)))
        return out


def best_alignment(doc: np.ndarray, bag: Counter, length: int, lo: int, hi: int, slack: float) -> tuple[float, int]:
    """Best weighted Jaccard between ``bag`` and a span of ``doc`` starting in ``[lo, hi]``.

    First slides a window of ``length`` words over the starts (O(1) per step), then
    lets the best few starts grow or shrink by up to ``slack * length`` words (for
    copies with insertions or deletions). Returns ``(jaccard, start)`` of an actual
    span, so the value is exact for that span.
    """
    n = len(doc)
    lo, hi = max(0, lo), min(hi, n - 1)
    if lo > hi:
        return 0.0, lo
    words = doc.tolist()
    total = sum(bag.values())
    scores = _fixed_length_scores(words, bag, total, length, lo, hi)
    best, best_start = 0.0, lo
    extra = int(round(slack * length))
    for start in sorted(range(len(scores)), key=lambda i: -scores[i])[:3]:
        s = lo + start
        jac = _best_length(words, bag, total, s, max(1, length - extra), length + extra)
        if jac > best:
            best, best_start = jac, s
    return best, best_start


def _fixed_length_scores(words: list, bag: Counter, total: int, length: int, lo: int, hi: int) -> list[float]:
    """Jaccard of the window ``words[s:s+length]`` for every start s in [lo, hi]."""
    window: Counter = Counter()
    inter = 0
    end = min(len(words), lo + length)
    for w in words[lo:end]:
        if window[w] < bag.get(w, 0):
            inter += 1
        window[w] += 1
    size = end - lo
    scores = [inter / (total + size - inter)]
    for s in range(lo + 1, hi + 1):
        out_w = words[s - 1]
        window[out_w] -= 1
        if window[out_w] < bag.get(out_w, 0):
            inter -= 1
        size -= 1
        if s + length - 1 < len(words):
            in_w = words[s + length - 1]
            if window[in_w] < bag.get(in_w, 0):
                inter += 1
            window[in_w] += 1
            size += 1
        scores.append(inter / (total + size - inter))
    return scores


def _best_length(words: list, bag: Counter, total: int, start: int, min_len: int, max_len: int) -> float:
    """Best Jaccard of ``words[start:start+k]`` over k in [min_len, max_len]."""
    window: Counter = Counter()
    inter = best = 0
    for e in range(start, min(len(words), start + max_len)):
        w = words[e]
        if window[w] < bag.get(w, 0):
            inter += 1
        window[w] += 1
        size = e - start + 1
        if size >= min_len:
            best = max(best, inter / (total + size - inter))
    return best


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

    def scan(self, batch: WordBatch) -> None:
        """Search a tokenized batch of documents for near duplicates of any item."""
        index = self.index
        if not index.sizes or not len(batch.hashes):
            return
        hashes = batch.hashes & _MAX_HASH
        cands = index.candidates(hashes)
        if not cands:
            return
        # Verify within the document where each candidate copy starts.
        doc_first = np.searchsorted(batch.doc_of_word, np.arange(len(batch.docs) + 1))
        by_doc: dict[int, list[tuple[int, int]]] = {}
        for item, begin in cands:
            d = int(batch.doc_of_word[min(max(begin, 0), len(hashes) - 1)])
            by_doc.setdefault(d, []).append((item, begin - int(doc_first[d])))
        slack, stride, floor = index.config.length_slack, index.config.window_stride, index.config.verify_floor
        for d, doc_cands in sorted(by_doc.items()):
            doc_hashes = hashes[doc_first[d]:doc_first[d + 1]]
            starts = None
            for item, lo, hi in _clusters(doc_cands, stride, slack, index.item_hashes):
                length = len(index.item_hashes[item])
                if _jaccard_bound(doc_hashes, index.item_bags[item], length, lo, hi + length + int(slack * length)) < floor:
                    continue
                jac, start = best_alignment(doc_hashes, index.item_bags[item], length, lo, hi, slack)
                if jac >= index.config.threshold:
                    self.copies[item] = self.copies.get(item, 0) + 1
                prior = self.best.get(item)
                if prior is None or jac > prior.jaccard:
                    doc = batch.docs[d]
                    if batch.doc_ascii[d]:
                        offset = int(batch.starts[doc_first[d] + start] - batch.doc_offsets[d])
                    else:
                        starts = starts if starts is not None else word_starts(doc.text)
                        offset = starts[start] if start < len(starts) else None
                    self.best[item] = NeardupHit(jac, [doc.source, doc.record, offset])
