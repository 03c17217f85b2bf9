"""Vectorized word tokenization and hashing of corpus text (NumPy, no per-word Python).

A batch of documents is normalized (:mod:`contaudit.text` rule) into one byte buffer
with a space after each document. Word boundaries, 64-bit polynomial word hashes and
n-gram hashes are then computed with array operations over the whole buffer, which is
what lets the index run at tens of MB/s per core in Python. Items and corpus are hashed
by the same functions, so equal words have equal hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contaudit.io import Document
from contaudit.text import _ASCII_BYTES_TABLE, normalize

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


def _normalized_bytes(text: str) -> tuple[bytes, bool]:
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_BYTES_TABLE), True
    return normalize(text).encode("utf-8"), False


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
        seg = arr[base:stop].astype(np.uint64)
        if len(seg) > _CHUNK:  # a single word longer than a chunk: hash it alone
            seg = seg[:_CHUNK]
        cs = np.concatenate(([np.uint64(0)], np.cumsum(seg * _POW[1:len(seg) + 1], dtype=np.uint64)))
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
    starts, ends = edges[0::2], edges[1::2]
    doc_offsets = np.asarray(offsets, dtype=np.int64)
    doc_of_word = np.searchsorted(doc_offsets, starts, side="right") - 1
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
