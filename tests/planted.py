"""A generated corpus with benchmark items planted at known places (ground truth).

Words are drawn from a Zipf-like vocabulary, so unplanted text shares only short
n-grams with the items by chance. Plants: verbatim copies (some repeated), copies
with up to 10 % of words edited, and fragments shorter than 8 words.

With ``scripts=True`` (:func:`add_scripts`) the benchmark and corpus also hold items in
scripts written without spaces (Chinese, Japanese, Thai: text drawn the same way from
large synthetic character/syllable vocabularies), short items (3-12 words), items
planted with invisible format characters inside words, and Chinese items with
scattered character edits; each kind has items planted nowhere.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Planted:
    bench: Path
    corpus: Path
    items: dict[str, str]
    verbatim: dict[str, int] = field(default_factory=dict)  # id -> copies
    edited: dict[str, float] = field(default_factory=dict)  # id -> fraction of words edited
    fragments: set[str] = field(default_factory=set)  # ids sharing only < 8-word pieces
    clean: set[str] = field(default_factory=set)
    # With scripts=True: verbatim/edited also get the new kinds' plants, and
    kind: dict[str, str] = field(default_factory=dict)  # id -> chinese/japanese/thai/short/invisible/...
    absent: set[str] = field(default_factory=set)  # new kinds' items planted nowhere (never seen)
    tiny: set[str] = field(default_factory=set)  # planted verbatim, but too short to be matched (ambiguous)
    bench_text: dict[str, str] = field(default_factory=dict)  # id -> the benchmark's text


def _edit(words: list[str], fraction: float, rng: random.Random) -> list[str]:
    words = list(words)
    n_edits = max(1, int(len(words) * fraction))
    for pos in sorted(rng.sample(range(len(words)), n_edits), reverse=True):
        kind = rng.choice(("sub", "del", "ins"))
        new = f"edit{rng.randrange(10**6)}"
        if kind == "sub":
            words[pos] = new
        elif kind == "del":
            del words[pos]
        else:
            words.insert(pos, new)
    return words


def make_planted(root: Path, *, n_items: int = 200, n_docs: int = 400, doc_words: int = 400, seed: int = 0,
                 scripts: bool = False) -> Planted:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20000)]
    weights = [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]

    def text(n: int) -> list[str]:
        return rng.choices(vocab, weights, k=n)

    items = {f"item-{i}": text(rng.randint(40, 150)) for i in range(n_items)}
    ids = list(items)
    rng.shuffle(ids)
    verbatim_ids, edited_ids, fragment_ids = ids[:30], ids[30:80], ids[80:110]
    # A document is a list of segments; plants go between segments, never inside another plant.
    docs = [[text(50) for _ in range(doc_words // 50)] for _ in range(n_docs)]
    planted = Planted(root / "bench.jsonl", root / "corpus.jsonl", {k: " ".join(v) for k, v in items.items()})

    def plant(words: list[str]) -> None:
        d = rng.randrange(n_docs)
        docs[d].insert(rng.randrange(len(docs[d]) + 1), words)

    for k in verbatim_ids:
        copies = rng.choice((1, 1, 2, 5))
        planted.verbatim[k] = copies
        for _ in range(copies):
            plant(items[k])
    for k in edited_ids:
        fraction = rng.uniform(0.01, 0.10)
        planted.edited[k] = fraction
        plant(_edit(items[k], fraction, rng))
    for k in fragment_ids:
        planted.fragments.add(k)
        for _ in range(3):
            size = rng.randint(3, 7)
            start = rng.randrange(len(items[k]) - size)
            plant(items[k][start:start + size])
    planted.clean = set(ids[110:])

    # Punctuation and case vary between corpus and benchmark; normalization removes it.
    planted.bench_text = {k: " ".join(words).capitalize() + "." for k, words in items.items()}
    script_docs = add_scripts(planted, docs, vocab, weights, random.Random(seed + 1)) if scripts else []
    with open(planted.bench, "w") as f:
        for k, text in planted.bench_text.items():
            f.write(json.dumps({"id": k, "text": text}) + "\n")
    with open(planted.corpus, "w") as f:
        for d, segments in enumerate(docs):
            words = [w for seg in segments for w in seg]
            body = ", ".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
            f.write(json.dumps({"id": d, "text": body.upper() if d % 7 == 0 else body}) + "\n")
        for d, segments in enumerate(script_docs, len(docs)):
            f.write(json.dumps({"id": d, "text": "".join(segments)}, ensure_ascii=False) + "\n")
    return planted


# ----------------------------------------------------------------------------- other scripts, short items

INVISIBLE = "\u200b\u00ad\u200c\u200d\u2060\ufeff"  # zero-width space/non-joiner/joiner, soft hyphen, ...


def _zipf(rng: random.Random, vocab: list[str]) -> list[float]:
    rng.shuffle(vocab)
    return [1.0 / (i + 1) ** 1.05 for i in range(len(vocab))]


def _chinese_vocab(rng: random.Random) -> list[str]:
    return [chr(c) for c in rng.sample(range(0x4E00, 0x9FA6), 3000)]


def _japanese_vocab(rng: random.Random, kanji: list[str]) -> list[str]:
    hira = [chr(c) for c in range(0x3041, 0x3097)]
    kata = [chr(c) for c in range(0x30A1, 0x30FB)]
    vocab = set()
    while len(vocab) < 3000:
        shape = rng.random()
        if shape < 0.5:  # kanji compound with okurigana
            vocab.add("".join(rng.choices(kanji, k=rng.randint(1, 2))) + "".join(rng.choices(hira, k=rng.randint(0, 2))))
        elif shape < 0.8:
            vocab.add("".join(rng.choices(kata, k=rng.randint(2, 5))) + "ー" * (rng.random() < 0.3))
        else:
            vocab.add("".join(rng.choices(hira, k=rng.randint(1, 3))))
    return sorted(vocab) + ["の", "は", "を", "に", "が", "です", "ます"]


def _thai_vocab(rng: random.Random) -> list[str]:
    consonants = [chr(c) for c in range(0x0E01, 0x0E2F)]
    lead, above = "เแโไใ", [chr(c) for c in (0x0E31, *range(0x0E34, 0x0E3A))]
    tones, follow = [chr(c) for c in range(0x0E48, 0x0E4C)], "าะำ"

    def syllable() -> str:
        s = rng.choice(lead) if rng.random() < 0.3 else ""
        s += rng.choice(consonants)
        if rng.random() < 0.5:
            s += rng.choice(above)  # combining vowel sign (a mark)
        if rng.random() < 0.4:
            s += rng.choice(tones)  # combining tone mark
        if not s[-1:] in above and rng.random() < 0.4:
            s += rng.choice(follow)
        if rng.random() < 0.5:
            s += rng.choice(consonants)
        return s

    return sorted({"".join(syllable() for _ in range(rng.randint(1, 3))) for _ in range(3000)})


def _no_space_text(rng: random.Random, vocab: list[str], weights: list[float], n_chars: int, stops: str) -> str:
    """Words joined without spaces, a punctuation mark from ``stops`` every few words."""
    out, size = [], 0
    while size < n_chars:
        w = rng.choices(vocab, weights)[0]
        out.append(w)
        size += len(w)
        if rng.random() < 0.15:
            out.append(rng.choice(stops))
    return "".join(out)


def _char_edits(text: str, fraction: float, rng: random.Random, alphabet: list[str]) -> str:
    chars = list(text)
    for pos in sorted(rng.sample(range(len(chars)), max(1, int(len(chars) * fraction))), reverse=True):
        kind = rng.choice(("sub", "del", "ins"))
        if kind == "sub":
            chars[pos] = rng.choice(alphabet)
        elif kind == "del":
            del chars[pos]
        else:
            chars.insert(pos, rng.choice(alphabet))
    return "".join(chars)


def _with_invisible(words: list[str], rng: random.Random, fraction: float = 0.3) -> list[str]:
    """``words`` with an invisible format character inside about ``fraction`` of them."""
    out = []
    for w in words:
        if len(w) > 1 and rng.random() < fraction:
            cut = rng.randrange(1, len(w))
            w = w[:cut] + rng.choice(INVISIBLE) + w[cut:]
        out.append(w)
    return out


def add_scripts(planted: Planted, docs: list[list[list[str]]], vocab: list[str], weights: list[float],
                rng: random.Random) -> list[list[str]]:
    """Add the other-script, short and invisible-character items; returns the new documents.

    English-vocabulary plants go into ``docs`` (between segments); the other scripts get
    their own documents (lists of text segments, joined without spaces).
    """
    items, kinds = planted.bench_text, planted.kind

    def plant_words(words: list[str]) -> None:
        d = rng.randrange(len(docs))
        docs[d].insert(rng.randrange(len(docs[d]) + 1), words)

    # Short items (whole-item matching) and tiny ones (below its minimum), from the Zipf vocabulary.
    for i in range(16):
        k, words = f"short-{i}", rng.choices(vocab, weights, k=5 + i % 8)  # 5..12 words
        items[k], kinds[k] = " ".join(words).capitalize() + "?", "short"
        planted.verbatim[k] = 1 + i % 2
        for _ in range(planted.verbatim[k]):
            plant_words(words)
        near = words[:-1] + [f"zq{i}"]  # the planted item with its last word changed
        items[f"short-near-{i}"], kinds[f"short-near-{i}"] = " ".join(near) + ".", "short"
        rare = rng.sample(vocab[5000:], 5 + i % 8)
        items[f"short-absent-{i}"], kinds[f"short-absent-{i}"] = " ".join(rare), "short"
        planted.absent |= {f"short-near-{i}", f"short-absent-{i}"}
    for i in range(4):
        k, words = f"tiny-{i}", rng.choices(vocab, weights, k=3 + i % 2)
        items[k], kinds[k] = " ".join(words), "tiny"
        planted.tiny.add(k)
        plant_words(words)
    # Invisible characters inside words of the planted copy (or of the benchmark's).
    for i in range(12):
        k, words = f"invisible-{i}", rng.choices(vocab, weights, k=rng.randint(20, 60))
        kinds[k] = "invisible"
        planted.verbatim[k] = 1
        if i % 4 == 3:
            items[k] = " ".join(_with_invisible(words, rng)) + "."
            plant_words(words)
        else:
            items[k] = " ".join(words) + "."
            plant_words(_with_invisible(words, rng))

    # Chinese, Japanese, Thai: documents of their own, items planted between segments.
    han = _chinese_vocab(rng)
    scripts = {"chinese": (han, "，，。"), "japanese": (_japanese_vocab(rng, han), "、、。"),
               "thai": (_thai_vocab(rng), "  ")}
    new_docs: list[list[str]] = []

    def add_script(name: str, words: list[str], stops: str) -> None:
        weights_ = _zipf(rng, words)

        def text(n: int) -> str:
            return _no_space_text(rng, words, weights_, n, stops)

        first = len(new_docs)
        new_docs.extend([text(40) + rng.choice(stops) for _ in range(8)] for _ in range(40 if name != "thai" else 15))

        def plant_text(t: str) -> None:
            d = rng.randrange(first, len(new_docs))
            new_docs[d].insert(rng.randrange(len(new_docs[d]) + 1), t)

        n_items = 12 if name != "thai" else 4
        for i in range(n_items):
            k = f"{name}-{i}"
            items[k], kinds[k] = text(rng.randint(30, 90)) + "。", name
            planted.verbatim[k] = 1 + i % 3
            for _ in range(planted.verbatim[k]):
                plant_text(items[k][:-1])
            items[f"{name}-absent-{i}"], kinds[f"{name}-absent-{i}"] = text(rng.randint(30, 90)), name
            planted.absent.add(f"{name}-absent-{i}")
        if name == "thai":
            return
        for i in range(4):  # short ones: 6-12 characters, matched whole
            k = f"{name}-short-{i}"
            items[k], kinds[k] = text(rng.randint(6, 12))[:12], name
            planted.verbatim[k] = 1
            plant_text(items[k])
            items[f"{name}-short-absent-{i}"] = text(rng.randint(6, 12))[:12]
            kinds[f"{name}-short-absent-{i}"] = name
            planted.absent.add(f"{name}-short-absent-{i}")
        k = f"{name}-invisible"  # zero-width spaces and joiners between characters
        items[k], kinds[k] = text(60), name
        planted.verbatim[k] = 1
        plant_text("".join(c + (rng.choice(INVISIBLE) if rng.random() < 0.2 else "") for c in items[k]))
        if name == "chinese":  # scattered character edits: near duplicates
            for i in range(6):
                k = f"{name}-edited-{i}"
                items[k], kinds[k] = text(rng.randint(60, 120)), name
                planted.edited[k] = rng.uniform(0.02, 0.06)
                plant_text(_char_edits(items[k], planted.edited[k], rng, words))

    for name, (words, stops) in scripts.items():
        add_script(name, words, stops)
    return new_docs
