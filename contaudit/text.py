"""The one text normalization used for matching benchmark items against a corpus.

``normalize``: Unicode NFKC, lowercase, every character that is not a letter or digit
becomes a space (punctuation, symbols, underscores), whitespace collapsed. Words are
the space-separated pieces of the normalized text. The index manifest records
:data:`NORMALIZATION` so indexes built with another rule are refused.
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZATION = "nfkc-lower-alnum-words-v1"

_ASCII_TABLE = {i: (chr(i).lower() if chr(i).isalnum() else " ") for i in range(128)}
_ASCII_BYTES_TABLE = bytes((ord(c.lower()) if c.isalnum() else 32) for c in map(chr, range(256)))
_NON_WORD = re.compile(r"[\W_]+")
_WORD = re.compile(r"[^\W_]+")


def normalize(text: str) -> str:
    """Normalized text: NFKC, lowercase, non-alphanumerics to spaces, collapsed.

    >>> normalize("Hello,  World_2!")
    'hello world 2'
    """
    if text.isascii():
        return " ".join(text.translate(_ASCII_TABLE).split())
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def words(text: str) -> list[str]:
    """The words of ``text`` after :func:`normalize`."""
    return normalize(text).split()


def byte_words(text: str) -> list[bytes]:
    """The words of :func:`normalize`, UTF-8 encoded: the fast path used for matching.

    For ASCII text this works on bytes (``bytes.translate`` + ``split``), several
    times faster than the ``str`` path and with the same result.
    """
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_BYTES_TABLE).split()
    return [w.encode("utf-8") for w in normalize(text).split()]


def word_starts(text: str) -> list[int]:
    """Character offsets at which each normalized word starts.

    Offsets index ``text`` itself when it is ASCII; otherwise they index
    ``unicodedata.normalize("NFKC", text)`` (NFKC can change the length of text).
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return [m.start() for m in _WORD.finditer(text)]


def split_at_word(text: str, n_last_words: int) -> tuple[str, str] | None:
    """Split ``text`` into ``(head, tail)`` where tail holds its last ``n_last_words`` words.

    The split point is the start of that word in the original text, so
    ``head + tail == text``. Returns None when the text has fewer words. Word
    boundaries follow :func:`normalize` (letters and digits), found on the raw text.
    """
    starts = [m.start() for m in _WORD.finditer(text)]
    if len(starts) < n_last_words or n_last_words <= 0:
        return None
    cut = starts[len(starts) - n_last_words]
    return text[:cut], text[cut:]


def first_words_start(text: str, n_last_words: int) -> int:
    """Offset of the word ``n_last_words`` from the end (0 when there are fewer)."""
    starts = [m.start() for m in _WORD.finditer(text)]
    if len(starts) <= n_last_words:
        return 0
    return starts[len(starts) - n_last_words]
