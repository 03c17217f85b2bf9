"""Near-duplicate search: word 3-gram seeds, then exact weighted Jaccard of every candidate span.

A near duplicate of an item is a corpus span whose weighted (multiset) Jaccard with the
item's words, ``sum(min(a_w, b_w)) / sum(max(a_w, b_w))``, reaches the threshold:
changing 10 % of an item's words gives 0.82, deleting 10 % gives 0.90. Spans are
``L - e`` to ``L + e`` words long for an item of ``L`` words (``e = length_slack * L``).

**Seeds.** Every word 3-gram of every item is hashed into a sorted table (with a
bitmap in front that rules out almost every corpus 3-gram with one random read). A
batch of corpus text is scanned with array operations: each corpus 3-gram that is
some item's 3-gram is a seed for that item. A span start ``s`` is a *candidate* for
an item when ``[s, s + L + e)`` holds at least ``T`` seeds of that item at distinct
positions, with ``T`` a fraction of the item's 3-grams (``seed_fraction``, derived from
the threshold). A copy made by editing the item (substitutions, insertions,
deletions) keeps every 3-gram that no edit touches, and each edit touches at most
three: a copy with Jaccard 0.8 keeps about 40 % of them however its edits are spread
(an edit every 9 words, so that no 13-gram survives, keeps 2/3), twice ``T``.
Unrelated prose shares common 3-grams with items ("one of the") but almost never a
fifth of one item's 3-grams within one item's length.

**Verification.** For every candidate start, the weighted Jaccard of every span length
is computed exactly with array operations (a cumulative count of each item word), so
the reported similarity is that of an actual span, and the best span is the best of
all candidate spans (earliest on ties). Starts that an upper bound (the item words
within ``L + e`` of the start) keeps below the threshold and below the item's best so
far are not scored. ``copies`` counts the places where a span reaches the threshold:
starts that reach it with no start reaching it within half the item's length before.
Both depend only on the words near a start, which is what lets one huge document be
scanned in overlapping windows with the same result (:meth:`NeardupScanner.scan`'s
``owned``).

Memory is the seed table (benchmark size) plus arrays the size of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contaudit.index.wordhash import WordBatch, distinct_sorted, document_word_starts, ngram_hashes

_FILTER_BITS = 24  # a 16 MB bitmap over the top bits of a seed hash
_FILTER_SHIFT = np.uint64(64 - _FILTER_BITS)
_CELLS = 1 << 18  # bound on the (start, offset) cells verified at once


@dataclass(frozen=True)
class NeardupConfig:
    """Settings of the near-duplicate search (recorded in the index manifest)."""

    threshold: float = 0.8  # verified Jaccard at which a span counts as a copy
    verify_floor: float = 0.5  # best spans below this are not reported
    length_slack: float = 0.1  # spans may be this fraction longer/shorter than the item
    seed_words: int = 3  # seeds are word n-grams of this size
    seed_fraction: float | None = None  # of an item's seeds a candidate holds; None: from the threshold
    min_words: int = 9  # shorter items are not searched

    @property
    def min_seed_fraction(self) -> float:
        """Half the fraction of seeds an edited copy at the threshold keeps in the worst case.

        Each edit destroys at most ``seed_words`` seeds, and a copy at Jaccard ``t`` has
        at most about ``(1 - t) * L`` edits (deletions are the cheapest), so it keeps at
        least ``1 - seed_words * (1 - t)`` of them.
        """
        if self.seed_fraction is not None:
            return self.seed_fraction
        return round(max(0.05, 0.5 * (1 - self.seed_words * (1 - self.threshold))), 6)


@dataclass
class NeardupHit:
    """The best verified match of one item."""

    jaccard: float
    location: list  # [source, record, char_offset]


class NeardupIndex:
    """The seeds of every item (sorted hashes and the items holding each) and each item's word bag."""

    def __init__(self, items: list[WordBatch], config: NeardupConfig = NeardupConfig()):
        self.config = config
        k = config.seed_words
        n_items = len(items)
        self.length = np.asarray([len(b.hashes) for b in items], dtype=np.int64)
        extra = np.rint(config.length_slack * self.length).astype(np.int64)
        self.min_len = np.maximum(1, self.length - extra)
        self.max_len = self.length + extra
        searched = self.length >= max(config.min_words, k)
        n_seeds = np.maximum(self.length - k + 1, 0)
        self.min_seeds = np.maximum(1, np.ceil(config.min_seed_fraction * n_seeds - 1e-9)).astype(np.int64)
        self.bags: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted distinct word hashes, counts)
        seed_hashes, seed_items = [], []
        for i, batch in enumerate(items):
            self.bags.append(np.unique(batch.hashes, return_counts=True))
            if searched[i]:
                grams = np.unique(ngram_hashes(batch.hashes, k))
                seed_hashes.append(grams)
                seed_items.append(np.full(len(grams), i, dtype=np.int64))
        hashes = np.concatenate(seed_hashes) if seed_hashes else np.empty(0, dtype=np.uint64)
        owners = np.concatenate(seed_items) if seed_items else np.empty(0, dtype=np.int64)
        order = np.lexsort((owners, hashes))
        hashes, owners = hashes[order], owners[order]
        self.keys, first = np.unique(hashes, return_index=True)
        self.key_ptr = np.append(first, len(hashes)).astype(np.int64)  # items of key j: owners[ptr[j]:ptr[j+1]]
        self.key_items = owners
        self.filter = np.zeros(1 << _FILTER_BITS, dtype=bool)
        self.filter[(self.keys >> _FILTER_SHIFT).astype(np.int64)] = True
        self.n_items = n_items
        self.max_span = int(self.max_len.max()) if n_items else 0
        self.gap = self.length // 2  # spans starting closer than this are one copy
        self.lead = int(self.gap.max()) if n_items else 0  # starts before a window's own that it must score
        # Every searched item's word counts, under one key: item * len(vocab) + word id.
        self.vocab = np.unique(np.concatenate([self.bags[i][0] for i in np.flatnonzero(searched)] or
                                              [np.empty(0, dtype=np.uint64)]))
        keys, counts = [], []
        for i in np.flatnonzero(searched):
            words, c = self.bags[i]
            keys.append(i * len(self.vocab) + np.searchsorted(self.vocab, words))
            counts.append(c)
        self.bag_keys = np.concatenate(keys) if keys else np.empty(0, dtype=np.int64)  # sorted: items, words sorted
        self.bag_counts = np.concatenate(counts) if counts else np.empty(0, dtype=np.int64)

    @property
    def searching(self) -> bool:
        return len(self.keys) > 0

    def seeds(self, batch: WordBatch) -> tuple[np.ndarray, np.ndarray]:
        """``(items, positions)`` of every seed in ``batch``, sorted by item then position."""
        k = self.config.seed_words
        grams = ngram_hashes(batch.hashes, k)
        if not len(grams) or not len(self.keys):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        maybe = np.flatnonzero(self.filter[(grams >> _FILTER_SHIFT).astype(np.intp)])
        idx = np.searchsorted(self.keys, grams[maybe])
        idx[idx == len(self.keys)] = 0
        hit = self.keys[idx] == grams[maybe]
        hit &= batch.doc_of_word[maybe] == batch.doc_of_word[maybe + k - 1]
        positions, keys = maybe[hit], idx[hit]
        lo, counts = self.key_ptr[keys], self.key_ptr[keys + 1] - self.key_ptr[keys]
        # the items of every hit: key_items[lo:lo + count], concatenated
        owner = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        width = len(batch.hashes) + 1
        key = distinct_sorted(np.sort(self.key_items[owner] * width + np.repeat(positions, counts)))
        return key // width, key % width

    def candidate_ranges(self, batch: WordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(items, docs, lo, hi)``: maximal runs ``[lo, hi]`` of candidate span starts (batch word indices).

        Start ``s`` is a candidate when ``[s, s + max_len)`` holds ``min_seeds`` of the
        item's seeds, all in one document. Sorted by item, then position.
        """
        items, pos = self.seeds(batch)
        empty = np.empty(0, dtype=np.int64)
        if not len(items):
            return empty, empty, empty, empty
        k = self.config.seed_words
        need = self.min_seeds[items]
        reach = self.max_len[items] - k  # last seed of a span starts at most this far after the span
        j2 = np.arange(len(items)) + need - 1
        ok = j2 < len(items)
        j2 = np.minimum(j2, len(items) - 1)
        doc = batch.doc_of_word[pos]
        ok &= (items[j2] == items) & (doc[j2] == doc) & (pos[j2] - pos <= reach)
        sel = np.flatnonzero(ok)
        if not len(sel):
            return empty, empty, empty, empty
        items, doc = items[sel], doc[sel]
        lo = np.maximum(pos[j2[sel]] - reach[sel], np.searchsorted(batch.doc_of_word, doc))
        hi = pos[sel]
        # lo and hi never decrease within an item; merge overlapping or touching runs.
        new = np.ones(len(sel), dtype=bool)
        new[1:] = (items[1:] != items[:-1]) | (doc[1:] != doc[:-1]) | (lo[1:] > hi[:-1] + 1)
        heads = np.flatnonzero(new)
        tails = np.append(heads[1:], len(sel)) - 1
        return items[heads], doc[heads], lo[heads], hi[tails]

    def span_scores(self, item: int, words: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Best weighted Jaccard over span lengths for each start ``lo..hi`` of ``words`` (one document).

        Spans must fit in ``words``; a start with no such span scores 0.
        """
        item_, lo_, hi_, end_ = (np.asarray([v], dtype=np.int64) for v in (item, lo, hi, len(words)))
        return self.score_ranges(words, item_, lo_, hi_, end_, np.zeros(1))[2]

    def score_ranges(self, hashes: np.ndarray, item: np.ndarray, lo: np.ndarray, hi: np.ndarray, end: np.ndarray,
                     level: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score every start of every range ``r``: ``lo[r]..hi[r]`` for ``item[r]``, spans ending by ``end[r]``.

        Returns ``(range, start, score)`` per start, ranges in order; the score is the
        best weighted Jaccard over span lengths, exact where it can reach ``level[r]``
        and 0 where an upper bound shows it cannot.
        """
        out = [], [], []
        budget = _CELLS
        r0 = 0
        region = np.minimum(hi + self.max_len[item], end) - lo
        while r0 < len(item):  # ranges in chunks of about _CELLS region words
            r1 = r0 + max(1, int(np.searchsorted(np.cumsum(region[r0:]), budget, side="right")))
            rid, start, score = self._score_chunk(hashes, item[r0:r1], lo[r0:r1], hi[r0:r1], end[r0:r1],
                                                  level[r0:r1])
            for acc, part in zip(out, (rid + r0, start, score)):
                acc.append(part)
            r0 = r1
        if not out[0]:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
        return tuple(np.concatenate(parts) for parts in out)

    def _score_chunk(self, hashes, item, lo, hi, end, level):
        length, min_len, max_len = self.length[item], self.min_len[item], self.max_len[item]
        n_ranges = len(item)
        n_starts = hi - lo + 1
        start_base = np.cumsum(n_starts) - n_starts
        srid = np.repeat(np.arange(n_ranges), n_starts)
        s = np.arange(int(n_starts.sum())) - start_base[srid] + lo[srid]
        # The region of range r: the words any of its spans can hold.
        region = np.minimum(hi + max_len, end) - lo
        elem_base = np.cumsum(region) - region
        rid = np.repeat(np.arange(n_ranges), region)
        x = np.arange(int(region.sum())) - elem_base[rid] + lo[rid]
        words = hashes[x]
        wid = np.searchsorted(self.vocab, words)
        wid[wid == len(self.vocab)] = 0
        key = item[rid] * len(self.vocab) + wid
        at = np.searchsorted(self.bag_keys, key)
        at[at == len(self.bag_keys)] = 0
        known = (self.bag_keys[at] == key) & (self.vocab[wid] == words)
        # prev[x]: where, within the region, the item's count of the word x was last reached
        # before x (the count-th previous occurrence), -1 if never: word x is shared (counted
        # in the min) in every span that starts after prev[x] and holds x.
        m = np.flatnonzero(known)
        group = rid[m] * len(self.vocab) + wid[m]
        order = np.argsort(group, kind="stable")
        group, xm = group[order], x[m][order]
        heads = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        head_of = np.repeat(heads, np.diff(np.r_[heads, len(group)]))
        back = np.arange(len(group)) - self.bag_counts[at[m][order]]
        prev = np.full(len(x), np.iinfo(np.int64).max)
        prev[m[order]] = np.where(back >= head_of, xm[np.maximum(back, 0)], -1)

        def shared_in(width: np.ndarray) -> np.ndarray:
            """For every start: shared words in the span of ``width[r]`` words from it."""
            r = rid[m]
            left = np.maximum(np.maximum(prev[m] + 1, x[m] - width[r] + 1), lo[r])
            right = np.minimum(x[m], hi[r])
            ok = left <= right
            left, right, base = left[ok] - lo[r[ok]], right[ok] - lo[r[ok]] + 1, start_base[r[ok]]
            n = len(s) + 1
            return np.cumsum(np.bincount(base + left, minlength=n) - np.bincount(base + right, minlength=n))[:-1]

        most = shared_in(max_len)  # no span from s shares more
        L, lmin = length[srid], min_len[srid]
        bound = most / (L + lmin - most)
        score = np.zeros(len(s))
        sel = np.flatnonzero((s + lmin <= end[srid]) & (bound >= level[srid]))
        if not len(sel):
            return srid, s, score
        first = shared_in(min_len)[sel]  # spans of min_len words
        r, ss = srid[sel], s[sel]
        best = first / (L[sel] + min_len[r] - first)
        extra = max_len[r] - min_len[r]
        width = int(extra.max()) if len(extra) else 0
        rows = max(1, _CELLS // max(1, width))
        for a in range(0, len(sel) if width else 0, rows):  # longer spans, word by word
            b = slice(a, a + rows)
            j = np.arange(width)
            xs = ss[b, None] + min_len[r[b], None] + j  # the word that makes the span min_len + j + 1 long
            valid = (j < extra[b, None]) & (xs < end[r[b], None])
            el = np.where(valid, elem_base[r[b], None] + xs - lo[r[b], None], 0)
            inter = first[b, None] + np.cumsum(valid & (prev[el] < ss[b, None]), axis=1)
            jac = inter / (L[sel][b, None] + min_len[r[b], None] + j + 1 - inter)
            best[b] = np.maximum(best[b], np.where(valid, jac, 0).max(axis=1))
        score[sel] = best
        return srid, s, score


class NeardupScanner:
    """Accumulates, per item, the best verified near duplicate in scanned documents."""

    def __init__(self, index: NeardupIndex):
        self.index = index
        self.best: dict[int, NeardupHit] = {}
        self.copies: dict[int, int] = {}  # places where a span reaches the threshold

    def scan(self, batch: WordBatch, owned: tuple[int, int] | None = None) -> None:
        """Search a tokenized batch of documents for near duplicates of any item.

        ``owned`` (word indices ``[a, b)``) restricts the spans reported to those starting
        there: how one huge document scanned in overlapping windows gives the result of
        scanning it whole (each window must hold ``index.max_span - 1`` words past ``b``
        and ``index.lead`` words before ``a``).
        """
        index = self.index
        if not index.searching or not len(batch.hashes):
            return
        a, b = owned if owned is not None else (0, len(batch.hashes))
        threshold, floor = index.config.threshold, index.config.verify_floor
        items, docs, lo, hi = index.candidate_ranges(batch)
        lo, hi = np.maximum(lo, a - index.lead), np.minimum(hi, b - 1)
        keep = lo <= hi
        items, docs, lo, hi = items[keep], docs[keep], lo[keep], hi[keep]
        if not len(items):
            return
        doc_first = np.searchsorted(batch.doc_of_word, np.arange(len(batch.docs) + 1))
        # Starts whose bound stays below this need no exact score: they can neither reach
        # the threshold nor beat the item's best so far.
        prior = np.asarray([self.best[i].jaccard if i in self.best else 0.0 for i in items.tolist()])
        level = np.where(prior >= threshold, threshold, np.maximum(floor, prior))
        rid, start, score = index.score_ranges(batch.hashes, items, lo, hi, doc_first[docs + 1], level)
        # A copy is where a start reaches the threshold with no start within the item's
        # gap before it reaching it (all such starts are scored: candidates are in ranges).
        hit = np.flatnonzero(score >= threshold)  # sorted by item, document, start
        same = np.r_[False, (items[rid[hit[1:]]] == items[rid[hit[:-1]]]) & (docs[rid[hit[1:]]] == docs[rid[hit[:-1]]])]
        new = ~same | (start[hit] - np.r_[0, start[hit[:-1]]] > index.gap[items[rid[hit]]])
        copy = hit[new & (start[hit] >= a)]
        for item, n in zip(*np.unique(items[rid[copy]], return_counts=True)):
            self.copies[int(item)] = self.copies.get(int(item), 0) + int(n)
        ok = np.flatnonzero((start >= a) & (score >= floor))
        if not len(ok):
            return
        order = ok[np.lexsort((start[ok], -score[ok], items[rid[ok]]))]  # per item: best, then earliest
        top = order[np.r_[True, items[rid[order[1:]]] != items[rid[order[:-1]]]]]
        offsets: dict[int, list[int]] = {}
        for t in top.tolist():
            item, jac, s, d = int(items[rid[t]]), float(score[t]), int(start[t]), int(docs[rid[t]])
            prior_hit = self.best.get(item)
            if prior_hit is not None and jac <= prior_hit.jaccard:
                continue
            doc = batch.docs[d]
            if batch.doc_ascii[d]:
                offset = int(batch.starts[s] - batch.doc_offsets[d])
            else:
                if d not in offsets:
                    offsets[d] = document_word_starts(doc.text)
                k = s - int(doc_first[d])
                offset = offsets[d][k] if k < len(offsets[d]) else None
            self.best[item] = NeardupHit(jac, [doc.source, doc.record, offset])
