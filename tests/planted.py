"""A generated corpus with benchmark items planted at known places (ground truth).

Words are drawn from a Zipf-like vocabulary, so unplanted text shares only short
n-grams with the items by chance. Plants: verbatim copies (some repeated), copies
with up to 10 % of words edited, and fragments shorter than 8 words.
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


def make_planted(root: Path, *, n_items: int = 200, n_docs: int = 400, doc_words: int = 400, seed: int = 0) -> Planted:
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
    with open(planted.bench, "w") as f:
        for k, words in items.items():
            f.write(json.dumps({"id": k, "text": " ".join(words).capitalize() + "."}) + "\n")
    with open(planted.corpus, "w") as f:
        for d, segments in enumerate(docs):
            words = [w for seg in segments for w in seg]
            body = ", ".join(" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
            f.write(json.dumps({"id": d, "text": body.upper() if d % 7 == 0 else body}) + "\n")
    return planted
