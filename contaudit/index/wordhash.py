"""Vectorized word tokenization and hashing of corpus text (NumPy, no per-word Python).

A batch of documents is normalized (:mod:`contaudit.text` rule) into one byte buffer
with a space after each document. Word boundaries, 64-bit polynomial word hashes and
n-gram hashes are then computed with array operations over the whole buffer, which is
what lets the index run at tens of MB/s per core in Python. Items and corpus are hashed
by the same functions, so equal words have equal hashes.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from contaudit.io import Document
from contaudit.text import _ASCII_BYTES_TABLE, normalize, word_starts

_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_NGRAM_BASE = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 1 << 22  # bytes hashed at once; bounds the power tables


def _powers(base: int, n: int) -> np.ndarray:
    """``base**i mod 2**64`` for i = 0..n."""
    steps = np.full(n + 1, base, dtype=np.uint64)
    steps[0] = 1
    return np.cumprod(steps, dtype=np.uint64)


_POW = _powers(_BASE, _CHUNK)
_POW_INV = _powers(_BASE_INV, _CHUNK)


@dataclass
class WordBatch:
    """The words of a batch of documents, as arrays over one normalized byte buffer."""

    docs: list[Document]
    buf: bytes
    starts: np.ndarray  # (W,) byte offset of each word in buf
    ends: np.ndarray  # (W,)
    hashes: np.ndarray  # (W,) uint64 word hashes
    doc_of_word: np.ndarray  # (W,) index into docs
    doc_offsets: np.ndarray  # (D,) byte offset of each document in buf
    doc_ascii: list[bool]  # ASCII documents keep their character offsets in buf

    def word(self, i: int) -> bytes:
        return self.buf[self.starts[i]:self.ends[i]]


def distinct_sorted(sorted_values: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (what ``np.unique`` gives, without its hashing: many times faster)."""
    return sorted_values[np.r_[True, sorted_values[1:] != sorted_values[:-1]]] if len(sorted_values) else sorted_values


def _non_ascii_lines(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the runs of consecutive lines holding a code >= 128 (bytes or code points)."""
    newlines = np.flatnonzero(codes == 10)
    lines = distinct_sorted(np.searchsorted(newlines, np.flatnonzero(codes >= 128)))
    if not len(lines):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    cut = np.flatnonzero(np.diff(lines) > 1)
    bounds = np.concatenate(([-1], newlines, [len(codes)]))  # line j is codes[bounds[j] + 1:bounds[j + 1]]
    return bounds[lines[np.r_[0, cut + 1]]] + 1, bounds[lines[np.r_[cut, len(lines) - 1]] + 1]


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def nfkc_length(text: str) -> int:
    """``len(unicodedata.normalize("NFKC", text))``, normalizing only the lines that are not ASCII."""
    if text.isascii():
        return len(text)
    starts, ends = _non_ascii_lines(_code_points(text))
    return len(text) + sum(len(unicodedata.normalize("NFKC", text[a:b])) - (b - a)
                           for a, b in zip(starts.tolist(), ends.tolist()))


def _normalized_bytes(text: str) -> tuple[bytes, bool]:
    """The normalized words of ``text`` separated by spaces, and whether it is ASCII.

    Only the lines holding a non-ASCII character go through :func:`normalize`; the
    others take the ASCII byte table, its fast path. The rule is local to a line (NFKC
    composes nothing across a newline, lowercasing's final-sigma context stops there,
    and every other step is per character), so the words are those of the whole text.
    """
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_BYTES_TABLE), True
    data = text.encode("utf-8", "surrogatepass")
    starts, ends = _non_ascii_lines(np.frombuffer(data, dtype=np.uint8))
    plain = data.translate(_ASCII_BYTES_TABLE)
    parts, pos = [], 0
    for start, end in zip(starts.tolist(), ends.tolist()):
        parts.append(plain[pos:start])
        parts.append(normalize(data[start:end].decode("utf-8", "surrogatepass")).encode("utf-8"))
        pos = end
    parts.append(plain[pos:])
    return b" ".join(parts), False


def _hash_words(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash of each word ``arr[start:end]``, independent of its position."""
    out = np.empty(len(starts), dtype=np.uint64)
    lo = 0
    n = len(arr)
    while lo < len(starts):
        base = starts[lo]
        # The words whose bytes fit in this chunk of the buffer.
        hi = int(np.searchsorted(ends, base + _CHUNK, side="right"))
        hi = max(hi, lo + 1)
        stop = min(n, int(ends[hi - 1]))
        seg = arr[base:min(stop, base + _CHUNK)]  # a single word longer than a chunk: hashed alone, cut
        cs = np.empty(len(seg) + 1, dtype=np.uint64)  # cs[i]: the hash of seg[:i], each byte at its power
        cs[0] = 0
        np.multiply(seg, _POW[1:len(seg) + 1], out=cs[1:])
        np.cumsum(cs[1:], out=cs[1:])
        s = starts[lo:hi] - base
        e = np.minimum(ends[lo:hi] - base, len(seg))
        out[lo:hi] = (cs[e] - cs[s]) * _POW_INV[s + 1]
        lo = hi
    return out


def split_words(docs: list[Document]) -> WordBatch:
    """Normalize and hash the words of ``docs`` in one vectorized pass."""
    parts, ascii_flags, offsets = [], [], []
    pos = 0
    for doc in docs:
        data, is_ascii = _normalized_bytes(doc.text)
        offsets.append(pos)
        parts.append(data)
        parts.append(b" ")
        ascii_flags.append(is_ascii)
        pos += len(data) + 1
    buf = b"".join(parts)
    arr = np.frombuffer(buf, dtype=np.uint8)
    is_word = np.concatenate(([False], arr != 32, [False]))
    edges = np.flatnonzero(is_word[1:] != is_word[:-1])
    starts, ends = edges[0::2].copy(), edges[1::2].copy()
    doc_offsets = np.asarray(offsets, dtype=np.int64)
    first_word = np.searchsorted(starts, doc_offsets)  # each document's first word (words never span two)
    doc_of_word = np.repeat(np.arange(len(docs)), np.diff(np.append(first_word, len(starts))))
    hashes = _hash_words(arr, starts, ends) if len(starts) else np.empty(0, dtype=np.uint64)
    return WordBatch(docs, buf, starts, ends, hashes, doc_of_word, doc_offsets, ascii_flags)


def word_hashes(text: str) -> np.ndarray:
    """The word hashes of one text (how items are hashed)."""
    return split_words([Document("", 0, text)]).hashes


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """(W - n + 1,) hash of each run of ``n`` consecutive word hashes."""
    m = len(hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    h = hashes[:m].copy()
    for j in range(1, n):
        h *= _NGRAM_BASE
        h += hashes[j:j + m]
    return h


@dataclass
class Window:
    """One window of a long document (:func:`iter_windows`)."""

    batch: WordBatch  # the window's words (one document: the window's text)
    overlap: WordBatch | None  # its last words, which the next window holds again
    owned: tuple[int, int]  # word indices [a, b): the span starts this window reports
    shift: int  # added to a character offset in the window gives the offset in the document


_SPACE = re.compile(r"[ \t\n\r\f\v]")
_ASCII_ALNUM = np.asarray([chr(c).isascii() and chr(c).isalnum() for c in range(129)])


def _cut_at(text: str, pos: int) -> int:
    """The first ASCII whitespace at or after ``pos`` (a word boundary for every step of the rule), or the end."""
    m = _SPACE.search(text, pos)
    return m.start() if m else len(text)


def iter_windows(doc: Document, chars: int, overlap: int, lead: int = 1) -> Iterator[Window]:
    """Cut a long document into windows of about ``chars`` characters, each holding the
    last ``overlap`` (or more) words of the one before.

    Cuts fall on ASCII whitespace, so a window's words are the document's words there,
    and (NFKC composing nothing across whitespace) its offsets shift by the length of
    the NFKC form of the text before it. Every word start is owned by one window: the
    first window's from its first word, the others' from their word ``lead``, up to
    where the next window's begin. So each window holds ``lead`` words before its owned
    starts and ``overlap - lead`` after the last. A match of at most ``overlap`` words
    lies whole in some window; one lying in two windows lies in their shared words, so
    counting matches in every window and subtracting those in the shared words counts
    each once.
    """
    text, start, shift, first, is_ascii = doc.text, 0, 0, True, doc.text.isascii()
    while True:
        ahead = chars
        while True:  # the window, made longer while it has too few words or no place to cut
            end = _cut_at(text, start + ahead)
            batch = split_words([Document(doc.source, doc.record, text[start:end])])
            if end >= len(text):
                yield Window(batch, None, (0 if first else lead, len(batch.hashes)), shift)
                return
            ahead *= 2
            if len(batch.hashes) < 2 * overlap:
                continue
            back = overlap * (end - start) // len(batch.hashes) + 1  # characters of about ``overlap`` words
            while True:  # the shared words: from a cut far enough back to hold ``overlap`` of them
                back = int(back * 1.25) + 1
                nxt = _cut_at(text, max(start + 1, end - back))
                tail = split_words([Document(doc.source, doc.record, text[nxt:end])]) if nxt < end else None
                if tail is None or len(tail.hashes) >= overlap or end - back <= start + 1:
                    break
            before = len(batch.hashes) - len(tail.hashes) if tail is not None else 0
            if tail is not None and len(tail.hashes) >= overlap and before >= 1:
                break
        yield Window(batch, tail, (0 if first else lead, before + lead), shift)
        shift += nxt - start if is_ascii else nfkc_length(text[start:nxt])
        start, first = nxt, False


def same_words(batch: WordBatch, positions: np.ndarray, n: int, ref: WordBatch, ref_first: np.ndarray) -> np.ndarray:
    """For each ``i``: are the ``n`` words of ``batch`` from word ``positions[i]`` byte for byte the
    words of ``ref`` from word ``ref_first[i]``? (Vectorized word-by-word verification of hash hits.)"""
    ok = np.zeros(len(positions), dtype=bool)
    corpus, reference = np.frombuffer(batch.buf, dtype=np.uint8), np.frombuffer(ref.buf, dtype=np.uint8)
    step = max(1, (1 << 18) // max(1, n))
    for a in range(0, len(positions), step):  # blocks of hits, to bound the byte arrays
        w = positions[a:a + step, None] + np.arange(n)
        r = ref_first[a:a + step, None] + np.arange(n)
        lengths = batch.ends[w] - batch.starts[w]
        same = (lengths == ref.ends[r] - ref.starts[r]).all(axis=1)
        w, r, lengths = w[same].ravel(), r[same].ravel(), lengths[same].ravel()
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        differ = corpus[np.repeat(batch.starts[w], lengths) + within] != reference[np.repeat(ref.starts[r], lengths) + within]
        word_differs = np.bincount(np.repeat(np.arange(len(w)), lengths)[differ], minlength=len(w)) > 0
        same[same] = ~word_differs.reshape(-1, n).any(axis=1)
        ok[a:a + step] = same
    return ok


def pack_words(word_lists: list[list[bytes]]) -> tuple[WordBatch, np.ndarray]:
    """One batch holding every list's words (for :func:`same_words`), and the index of each list's first word."""
    words = [w for ws in word_lists for w in ws]
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = np.cumsum(lengths + 1) - 1
    counts = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
    empty = np.empty(0, dtype=np.int64)
    return (WordBatch([], b" ".join(words), ends - lengths, ends, np.empty(0, dtype=np.uint64), empty, empty, []),
            np.cumsum(counts) - counts)


@functools.lru_cache(maxsize=4)  # the n-gram and near-duplicate scans ask for the same documents
def document_word_starts(text: str) -> tuple[int, ...]:
    """:func:`contaudit.text.word_starts` (offsets into the NFKC form), faster on long texts.

    ASCII lines are read with array operations (a word starts at a letter or digit
    after a character that is not one); only the lines holding a non-ASCII character
    are normalized and go through ``word_starts`` (the rule is local to a line), and
    each one shifts the offsets after it by how much NFKC changed its length.
    """
    if text.isascii():
        return tuple(word_starts(text))
    chars = _code_points(text)
    starts, ends = _non_ascii_lines(chars)
    word = _ASCII_ALNUM[np.minimum(chars, 128)]
    first = np.flatnonzero(word & ~np.r_[False, word[:-1]])
    group = np.searchsorted(ends, first, side="right")  # the non-ASCII lines before each word
    first = first[(group >= len(starts)) | (first < starts[np.minimum(group, len(starts) - 1)])]
    forms = [unicodedata.normalize("NFKC", text[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]
    size = np.fromiter(map(len, forms), dtype=np.int64, count=len(forms))
    growth = np.r_[0, np.cumsum(size - (ends - starts))]  # growth[g]: NFKC's growth of the text before group g
    at = np.cumsum(size + 1) - size - 1  # where each group begins in the groups joined by newlines
    inner = np.asarray(word_starts("\n".join(forms)), dtype=np.int64)
    g = np.searchsorted(at, inner, side="right") - 1
    inner += starts[g] + growth[g] - at[g]
    return tuple(np.sort(np.r_[inner, first + growth[np.searchsorted(ends, first, side="right")]]).tolist())
