"""The one text normalization used for matching benchmark items against a corpus.

``normalize`` (the rule :data:`NORMALIZATION` names; docs/index.md, "Normalization"):

1. Unicode NFKC;
2. invisible characters are removed: format characters (category Cf: zero-width
   space and joiners, soft hyphen, byte-order mark, bidirectional marks, ...) and
   variation selectors, so ``"con\\u00adtami\\u200bnation" == "contamination"``;
3. lowercase;
4. in scripts written without spaces between words (Han, Hiragana, Katakana,
   Bopomofo, Thai, Lao, Khmer, Myanmar) every letter or digit, with the combining
   marks that follow it, is a word of its own: word n-grams are character n-grams there;
5. every character that is not a letter, digit or combining mark becomes a space
   (punctuation, symbols, underscores), whitespace collapsed.

Words are the space-separated pieces of the normalized text. The index manifest
records :data:`NORMALIZATION` so indexes built with another rule are refused. ASCII
text takes a fast path with the same result (steps 2 and 4 never apply to it).
"""

from __future__ import annotations

import re
import unicodedata

NORMALIZATION = "nfkc-nocf-lower-alnum-marks-words-nospace-script-chars-v2"

_ASCII_TABLE = {i: (chr(i).lower() if chr(i).isalnum() else " ") for i in range(128)}
_ASCII_BYTES_TABLE = bytes((ord(c.lower()) if c.isalnum() else 32) for c in map(chr, range(256)))
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")

# Scripts written without spaces between words (step 4). Hangul is written with spaces.
NO_SPACE_SCRIPTS = {
    "Han": [(0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3400, 0x4DBF),
            (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F), (0x30000, 0x323AF)],
    "Hiragana": [(0x3040, 0x309F), (0x1B001, 0x1B11F), (0x1B150, 0x1B152)],
    "Katakana": [(0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F), (0x1AFF0, 0x1B000), (0x1B120, 0x1B122),
                 (0x1B155, 0x1B167)],
    "Bopomofo": [(0x3100, 0x312F), (0x31A0, 0x31BF)],
    "Thai": [(0x0E00, 0x0E7F)],
    "Lao": [(0x0E80, 0x0EFF)],
    "Khmer": [(0x1780, 0x17FF), (0x19E0, 0x19FF)],
    "Myanmar": [(0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F)],
}
# Variation selectors (category Mn) are invisible like format characters (step 2).
_VARIATION_SELECTORS = [(0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF)]


def _char_class(codepoints: list[int]) -> str:
    """A regular-expression character-class body matching exactly ``codepoints`` (sorted)."""
    parts, i = [], 0
    while i < len(codepoints):
        j = i
        while j + 1 < len(codepoints) and codepoints[j + 1] == codepoints[j] + 1:
            j += 1
        lo, hi = re.escape(chr(codepoints[i])), re.escape(chr(codepoints[j]))
        parts.append(lo if i == j else f"{lo}-{hi}")
        i = j + 1
    return "".join(parts)


def _code_points() -> tuple[list[int], list[int], list[int]]:
    """(ignorable, combining marks, no-space-script letters and digits), sorted."""
    selectors = {c for lo, hi in _VARIATION_SELECTORS for c in range(lo, hi + 1)}
    ignorable, marks = [], []
    # Format characters and combining marks exist only in planes 0, 1 and 14.
    for c in (*range(0x20000), *range(0xE0000, 0xE1000)):
        cat = unicodedata.category(chr(c))
        if cat == "Cf" or c in selectors:
            ignorable.append(c)
        elif cat[0] == "M":
            marks.append(c)
    # Letters and digits only: a mark stays with whatever precedes it, whatever its script
    # (so the reordering of marks by NFKC never moves a word boundary).
    no_space = [c for ranges in NO_SPACE_SCRIPTS.values() for lo, hi in ranges for c in range(lo, hi + 1)
                if chr(c).isalnum()]
    return ignorable, marks, sorted(no_space)


class _Patterns:
    """The normalization's regular expressions over code points below ``limit``.

    Two sets: text without characters beyond U+FFFF (almost all text) gets classes
    that ``re`` matches with one table lookup, several times faster.
    """

    def __init__(self, limit: int):
        i, m, ns = (_char_class([c for c in cps if c < limit]) for cps in _CODE_POINTS)
        # Any character that steps 2 and 4 act on, or that needs the other set of patterns.
        self.special = re.compile(f"[{i}{ns}\U00010000-\U0010FFFF]")
        self.ignorable = re.compile(f"[{i}]+")
        self.mark = re.compile(f"[{m}]")
        self.no_space_char = re.compile(f"[{ns}][{m}]*")
        self.no_space_run = re.compile(f"[{ns}][{ns}{m}]*")
        # Spaces are left alone (collapsed afterwards): far fewer replacements.
        self.non_word = re.compile(f"[^\\w{m} ]+")  # after "_" became a space
        word_char = f"(?:[^\\W_]|[{m}])"
        # A normalized word, found in text before steps 2-5: a no-space-script letter or
        # digit with its marks, or a run of other word characters (ignorables inside
        # do not split it).
        self.token = re.compile(f"[{ns}](?:[{i}]*[{m}])*|(?![{ns}]){word_char}(?:[{i}]*(?![{ns}]){word_char})*")

    def spaced(self, match: re.Match) -> str:
        """A run of no-space-script characters, one word per character with its marks."""
        run = match.group()
        if self.mark.search(run) is None:
            return f" {' '.join(run)} "
        return f" {' '.join(self.no_space_char.findall(run))} "


_CODE_POINTS = _code_points()
_BMP = _Patterns(0x10000)
_ALL = _Patterns(0x110000)
_SPACES = re.compile("  +")
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def _patterns(text: str) -> _Patterns:
    return _ALL if _ASTRAL.search(text) else _BMP


def normalize(text: str) -> str:
    r"""Normalized text: the steps in this module's docstring, words joined by single spaces.

    >>> normalize("Hello,  World_2!")
    'hello world 2'
    >>> normalize("Con\u00adtami\u200bnation 汚染です")
    'contamination 汚 染 で す'
    """
    if text.isascii():
        return " ".join(text.translate(_ASCII_TABLE).split())
    text = unicodedata.normalize("NFKC", text)
    pat = _BMP
    if pat.special.search(text):  # one pass rules steps 2 and 4 out for most text
        pat = _patterns(text)
        if pat.ignorable.search(text):
            # Composes what an invisible character kept apart ("e\u200b\u0301" -> "é").
            text = unicodedata.normalize("NFKC", pat.ignorable.sub("", text))
        text = pat.no_space_run.sub(pat.spaced, text)
    return _SPACES.sub(" ", pat.non_word.sub(" ", text.lower().replace("_", " "))).strip(" ")


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
    """Character offsets at which each normalized word starts (one per word of :func:`words`).

    Offsets index ``text`` itself when it is ASCII; otherwise they index
    ``unicodedata.normalize("NFKC", text)`` (NFKC can change the length of text); an
    offset points at the word's first letter, digit or mark there (invisible
    characters removed by the normalization are still in that text).
    """
    if text.isascii():
        return [m.start() for m in _ASCII_WORD.finditer(text)]
    text = unicodedata.normalize("NFKC", text)
    return [m.start() for m in _patterns(text).token.finditer(text)]


def split_at_word(text: str, n_last_words: int) -> tuple[str, str] | None:
    """Split ``text`` into ``(head, tail)`` where tail holds its last ``n_last_words`` words.

    The split point is the start of that word in the original text, so
    ``head + tail == text``. Returns None when the text has fewer words. Word
    boundaries follow :func:`normalize` (a character of a script without spaces is a
    word), found on the raw text (without NFKC).
    """
    starts = [m.start() for m in _patterns(text).token.finditer(text)]
    if len(starts) < n_last_words or n_last_words <= 0:
        return None
    cut = starts[len(starts) - n_last_words]
    return text[:cut], text[cut:]


def first_words_start(text: str, n_last_words: int) -> int:
    """Offset of the word ``n_last_words`` from the end (0 when there are fewer)."""
    starts = [m.start() for m in _patterns(text).token.finditer(text)]
    if len(starts) <= n_last_words:
        return 0
    return starts[len(starts) - n_last_words]
