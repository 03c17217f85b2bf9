"""Index: near-duplicate recall and exactness, line-wise normalization, windows over long documents."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from contaudit.index import build_index, load_index
from contaudit.index import scan as scan_mod
from contaudit.index.neardup import NeardupConfig, NeardupIndex, NeardupScanner
from contaudit.index.ngram import item_batches
from contaudit.index.wordhash import (_normalized_bytes, document_word_starts, iter_windows, pack_words, same_words,
                                      split_words, word_hashes)
from contaudit.io import Document
from contaudit.text import normalize, word_starts

from planted import make_planted

VOCAB = [f"w{i}" for i in range(5000)]


def zipf_words(rng: random.Random, n: int) -> list[str]:
    return rng.choices(VOCAB, [1.0 / (i + 1) for i in range(len(VOCAB))], k=n)


def scattered(words: list[str], rng: random.Random, every=(9, 12)) -> list[str]:
    """A substitution or insertion every 9-12 words: no 13-gram of ``words`` survives."""
    out, run, gap = [], 0, rng.randint(*every)
    for w in words:
        if run == gap:
            out.append(f"edit{rng.randrange(10**6)}")
            run, gap = 0, rng.randint(*every)
            if rng.random() < 0.5:
                continue
        out.append(w)
        run += 1
    return out


def grams(words, n):
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def brute_best(item: list[str], doc: list[str], starts=None, slack: float = 0.1) -> float:
    """Best weighted Jaccard of ``item`` with any span of ``doc`` (from ``starts``) of length within ``slack``."""
    bag, n = Counter(item), len(item)
    extra = round(slack * n)
    best = 0.0
    for s in range(len(doc)) if starts is None else starts:
        for length in range(max(1, n - extra), n + extra + 1):
            if s + length > len(doc):
                break
            span = Counter(doc[s:s + length])
            inter = sum(min(c, bag[w]) for w, c in span.items())
            best = max(best, inter / (n + length - inter))
    return best


# ----------------------------------------------------------------------------- normalization by lines


@pytest.mark.parametrize("text", [
    "ΟΔΟΣ\nΑ", "e\n\u0301x", "a\u200b\nb", "x\n\u200b\u0301y", "汚染\nです abc\nplain\n\nΣ", "é", "abc\né\n",
    "Ǆ\nǅ\r\nĲ", "foo\u00ad\nbar", "ﬁ\nﬂ", "①\n②", "a\ud800b\nc", "\né\n", "é\n\n\né", "Straße\nSTRASSE\nİstanbul",
])
def test_non_ascii_lines_alone_go_through_the_rule(text):
    assert _normalized_bytes(text)[0].split() == normalize(text).encode("utf-8").split()


def test_line_wise_normalization_equals_the_rule_on_random_text():
    rng = random.Random(0)
    chars = list("ab \n\t.ΣσÉé\u0301\u200b汚ไทย_①ﬁ\u00ad\r")
    for _ in range(3000):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 30)))
        assert _normalized_bytes(text)[0].split() == normalize(text).encode("utf-8").split(), repr(text)


def test_document_word_starts_equal_the_rule():
    rng = random.Random(7)
    chars = list("ab \n\t.ΣσÉé\u0301\u200b汚ไทย_①ﬁ\u00ad\rＡ")
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    for text in texts + ["①", "é", "\né\n", "x\ud800y\nz", "plain ascii, only"]:
        assert list(document_word_starts(text)) == word_starts(text), repr(text)


def test_vectorized_verification_compares_bytes():
    batch = split_words([Document("c", 0, "alpha beta gamma delta. Alpha BETA gammb delta alpha beta")])
    packed, first = pack_words([[b"zzz"], [b"alpha", b"beta", b"gamma", b"delta"]])
    got = same_words(batch, np.asarray([0, 4, 8, 1]), 2, packed, first[[1, 1, 1, 1]] + np.asarray([0, 0, 0, 0]))
    assert got.tolist() == [True, True, True, False]
    got = same_words(batch, np.asarray([0, 4]), 4, packed, np.asarray([first[1], first[1]]))
    assert got.tolist() == [True, False]  # "gammb": same length, one byte differs


# ----------------------------------------------------------------------------- near duplicates


def test_scores_are_the_exact_best_jaccard_of_any_span():
    rng = random.Random(3)
    item = zipf_words(rng, 45)
    doc = zipf_words(rng, 50) + item[:20] + ["zz", "w1"] + item[21:] + zipf_words(rng, 40)
    index = NeardupIndex(item_batches([" ".join(item)]))
    words = word_hashes(" ".join(doc))
    scores = index.span_scores(0, words, 0, len(words) - 1)
    assert scores.max() == pytest.approx(brute_best(item, doc))
    for s in range(len(doc)):  # each start: the best length from that start
        assert scores[s] == pytest.approx(brute_best(item, doc, [s]))


def test_edits_everywhere_no_13_gram_left_are_found():
    """Edits every 9-12 words (no 13-gram survives), 1-10 % random edits, and copies
    with insertions or deletions all reach 0.8 and are found; their Jaccard is exact."""
    rng = random.Random(1)
    items, copies = [], []
    for i in range(60):
        item = zipf_words(rng, rng.randint(30, 150))
        if i % 3 == 0:
            copy = scattered(item, rng)
            assert not grams(copy, 13) & grams(item, 13)
        else:
            copy = list(item)
            for pos in sorted(rng.sample(range(len(copy)), max(1, int(len(copy) * rng.uniform(0.01, 0.1)))),
                              reverse=True):
                kind = rng.choice(("sub", "del", "ins"))
                if kind == "sub":
                    copy[pos] = f"edit{rng.randrange(10**6)}"
                elif kind == "del":
                    del copy[pos]
                else:
                    copy.insert(pos, f"edit{rng.randrange(10**6)}")
        items.append(item)
        copies.append(copy)
    docs = [zipf_words(rng, 200) + copy + zipf_words(rng, 200) for copy in copies]
    index = NeardupIndex(item_batches([" ".join(w) for w in items]))
    scanner = NeardupScanner(index)
    scanner.scan(split_words([Document("c", i + 1, " ".join(d)) for i, d in enumerate(docs)]))
    for i, (item, copy) in enumerate(zip(items, copies)):
        expected = brute_best(item, copy)
        assert expected >= 0.8, (i, expected)
        hit = scanner.best[i]
        assert hit.jaccard >= expected - 1e-12, (i, hit.jaccard, expected)
        assert hit.location[:2] == ["c", i + 1]
        assert scanner.copies[i] == 1


def test_unrelated_text_and_shuffled_items_are_no_candidates():
    rng = random.Random(2)
    items = [zipf_words(rng, 80) for _ in range(50)]
    corpus = [zipf_words(rng, 3000) for _ in range(20)]
    index = NeardupIndex(item_batches([" ".join(w) for w in items]))
    batch = split_words([Document("c", i, " ".join(d)) for i, d in enumerate(corpus)])
    assert len(index.candidate_ranges(batch)[0]) == 0


def test_seed_threshold_holds_below_what_an_edited_copy_keeps():
    config = NeardupConfig()
    # a copy at Jaccard 0.8 keeps at least about 1 - 3 * 0.2 = 40 % of its 3-grams
    assert config.min_seed_fraction <= 0.2
    assert NeardupConfig(seed_fraction=0.3).min_seed_fraction == 0.3


def test_near_duplicate_location_is_the_copy_in_the_original_text(tmp_path):
    rng = random.Random(4)
    item = zipf_words(rng, 60)
    copy = list(item)
    copy[30] = "changed"
    head = "Ｆｕｌｌ ﬁne café\n" + " ".join(zipf_words(rng, 100)) + ", "
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": head + " ".join(copy).upper() + "."}) + "\n")
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "x", "text": " ".join(item)}) + "\n")
    rec = build_index([corpus], bench, tmp_path / "i").index.items[0]
    assert rec["status"] == "seen" and rec["neardup_jaccard"] > 0.9
    import unicodedata
    text = json.loads(corpus.read_text())["text"]
    offset = rec["neardup_location"][2]
    assert offset == word_starts(text)[len(normalize(head).split())]
    assert unicodedata.normalize("NFKC", text)[offset:].startswith(copy[0].upper())


# ----------------------------------------------------------------------------- long documents in windows


def test_windows_own_every_word_start_once():
    rng = random.Random(5)
    text = " ".join(zipf_words(rng, 5000)) + "\nÉcole ﬁn " + " ".join(zipf_words(rng, 3000))
    doc = Document("d", 1, text)
    whole = split_words([doc])
    owned, seen_words = [], 0
    for window in iter_windows(doc, 2000, 40, lead=15):
        a, b = window.owned
        assert (window.batch.hashes[a:b] == whole.hashes[seen_words:seen_words + b - a]).all()
        assert seen_words == 0 or a == 15  # the lead words before the owned starts are the document's too
        assert (window.batch.hashes[:a] == whole.hashes[seen_words - a:seen_words]).all()
        seen_words += b - a
        if window.overlap is not None:
            assert len(window.overlap.hashes) >= 40
            assert b + 40 - 15 <= len(window.batch.hashes)
        owned.append(b - a)
    assert seen_words == len(whole.hashes) and len(owned) > 10


def _long_document_corpus(planted, path, non_ascii: bool):
    """The planted corpus as 6 long documents (some non-ASCII, with NFKC-changing characters)."""
    docs = [json.loads(line)["text"] for line in planted.corpus.read_text().splitlines()]
    with open(path, "w") as f:
        for k in range(6):
            part = docs[k::6]
            if non_ascii and k % 2:
                part = [f"Ｎｏｔｅ ﬁ {i} — café\n{d}" for i, d in enumerate(part)]
            f.write(json.dumps({"id": k, "text": "\n".join(part)}) + "\n")
    return path


@pytest.mark.parametrize("non_ascii", [False, True])
def test_long_documents_in_windows_give_the_whole_document_result(planted_small, tmp_path, monkeypatch, non_ascii):
    corpus = _long_document_corpus(planted_small, tmp_path / "long.jsonl", non_ascii)
    whole = build_index([corpus], planted_small.bench, tmp_path / "whole").index
    monkeypatch.setattr(scan_mod, "WINDOW_CHARS", 3000)  # documents of ~50,000 characters in windows
    windows = []

    def counted(*args):
        for window in iter_windows(*args):
            windows.append(window.owned)
            yield window

    monkeypatch.setattr(scan_mod, "iter_windows", counted)
    windowed = build_index([corpus], planted_small.bench, tmp_path / "windowed").index
    assert len(windows) >= 6 * 5
    assert windowed.items == whole.items
    assert sum(r["status"] == "seen" for r in whole.items) >= 20
    assert sum(r["neardup_copies"] for r in whole.items) >= 10
    assert any(r["locations"] for r in whole.items)


@pytest.fixture(scope="module")
def planted_small(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("planted_small"), n_items=80, n_docs=120)


def test_memory_of_one_huge_document_is_bounded(tmp_path, monkeypatch):
    """The arrays of a 4 MB document are those of its windows (peak traced allocations)."""
    import tracemalloc

    rng = random.Random(6)
    text = " ".join(zipf_words(rng, 1_000_000))
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps({"text": text}) + "\n")
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps({"id": f"q{i}", "text": " ".join(zipf_words(rng, 100))}) + "\n"
                             for i in range(20)))

    def peak(window_chars: int, out: str) -> float:
        monkeypatch.setattr(scan_mod, "WINDOW_CHARS", window_chars)
        tracemalloc.start()
        build_index([corpus], bench, tmp_path / out)
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return result

    whole, windowed = peak(10**8, "whole"), peak(250_000, "windowed")
    assert windowed < 0.5 * whole, (windowed / 1e6, whole / 1e6)
    assert load_index(tmp_path / "whole").items == load_index(tmp_path / "windowed").items
