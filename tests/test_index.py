"""Corpus index: planted ground truth (every script, short items, invisible characters),
a brute-force reference, resume, atomicity."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter

import numpy as np
import pytest

from contaudit.errors import InputError, ManifestMismatchError
from contaudit.index import IndexConfig, build_index, load_index
from contaudit.index import build as build_mod
from contaudit.index.ngram import MIN_WHOLE_WORDS
from contaudit.text import NORMALIZATION, words

from planted import make_planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("planted"), scripts=True)


@pytest.fixture(scope="module")
def planted_index(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx") / "planted"
    return build_index([planted.corpus], planted.bench, out).index


def corpus_ngram_counts(corpus_docs: list[str], n: int) -> Counter:
    """Every n-gram of the corpus with its count (the brute-force reference)."""
    counts = Counter()
    for doc in corpus_docs:
        ws = words(doc)
        counts.update(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))
    return counts


def brute_force(counts: Counter, item_text: str, n: int) -> list[int]:
    """Corpus count of each n-gram of the item."""
    iw = words(item_text)
    return [counts[tuple(iw[i:i + n])] for i in range(len(iw) - n + 1)]


def test_every_verbatim_plant_is_found_seen(planted, planted_index):
    items = planted_index.by_id()
    kinds = Counter(planted.kind.get(k, "zipf") for k in planted.verbatim)
    assert kinds == {"zipf": 30, "short": 16, "invisible": 12, "chinese": 17, "japanese": 17, "thai": 4}
    for item_id, copies in planted.verbatim.items():
        rec = items[item_id]
        assert rec["status"] == "seen", (item_id, rec)
        assert rec["coverage"] == 1.0
        assert rec["longest_match"] == rec["n_words"]
        assert rec["occurrences"] >= copies
        assert rec["locations"], "a seen item must say where it was found"
        if rec["n_words"] < 13:  # matched whole
            assert rec["n_ngrams"] == 1 and rec["n_words"] >= MIN_WHOLE_WORDS, item_id


def test_scripts_without_spaces_are_matched_on_characters(planted, planted_index):
    items = planted_index.by_id()
    for k, kind in planted.kind.items():
        if kind in ("chinese", "japanese", "thai"):
            # every character is a word (Thai: with its combining marks)
            assert items[k]["n_words"] == len(words(planted.bench_text[k])) >= 6, k
            assert items[k]["n_words"] >= 0.5 * len(planted.bench_text[k]), k
    assert words("ภาษาไทยง่าย") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย", "ง่", "า", "ย"]


def test_locations_point_at_the_plant_in_non_ascii_documents(planted, planted_index):
    """Offsets index the NFKC text, invisible characters included (docs/index.md)."""
    docs = [json.loads(line)["text"] for line in planted.corpus.read_text().splitlines()]
    checked = 0
    for k in planted.verbatim:
        rec = planted_index.by_id()[k]
        first = words(planted.bench_text[k])[:MIN_WHOLE_WORDS]
        for _source, record, offset in rec["locations"]:
            text = unicodedata.normalize("NFKC", docs[record - 1])
            assert words(text[offset:])[:MIN_WHOLE_WORDS] == first, (k, text[offset:offset + 40])
            checked += not docs[record - 1].isascii()
    assert checked >= 40


def test_lightly_edited_plants_are_found_as_near_duplicates(planted, planted_index):
    items = planted_index.by_id()
    found = [items[k]["neardup_jaccard"] >= 0.8 for k in planted.edited]
    assert np.mean(found) >= 0.95, sorted((items[k]["neardup_jaccard"], f) for k, f in planted.edited.items())
    assert all(items[k]["status"] == "seen" for k, ok in zip(planted.edited, found) if ok)
    # Scattered edits (words, or characters of Chinese items) leave every plant seen.
    assert sum(k.startswith("chinese-edited") for k in planted.edited) == 6
    assert [k for k in planted.edited if items[k]["status"] != "seen"] == []


def test_no_unplanted_item_is_marked_seen(planted, planted_index):
    items = planted_index.by_id()
    for k in planted.fragments | planted.clean | planted.absent:
        assert items[k]["status"] != "seen", (k, items[k])
    assert sum(items[k]["status"] == "unseen" for k in planted.clean) >= 0.9 * len(planted.clean)
    # Chinese items planted nowhere are unseen: no 8 characters in a row found. (Japanese and
    # Thai words drawn from a small Zipf vocabulary share 8 characters by chance: ambiguous.)
    chinese = [k for k in planted.absent if planted.kind[k] == "chinese" and items[k]["n_words"] >= 13]
    assert len(chinese) == 12 and all(items[k]["status"] == "unseen" for k in chinese)


def test_short_items_are_matched_whole(planted, planted_index):
    items = planted_index.by_id()
    for k in planted.absent:
        if planted.kind[k] == "short":
            rec = items[k]
            assert rec["n_ngrams"] == 1 and rec["matched_ngrams"] == 0 and rec["locations"] == [], k
            # fewer than 8 words cannot establish absence; 8-12 words follow the 8-gram rule; a
            # near duplicate (one word changed in 9-12) makes a short item ambiguous, not seen
            evidence = rec["n_words"] < 8 or rec["matched_8grams"] or rec["neardup_jaccard"] >= 0.8
            assert rec["status"] == ("ambiguous" if evidence else "unseen"), k
    near = [items[f"short-near-{i}"] for i in range(16)]
    assert sum(r["neardup_jaccard"] >= 0.8 for r in near) >= 3  # the rule above is exercised
    for k in planted.tiny:  # below MIN_WHOLE_WORDS: no n-gram at all, so never seen by exact overlap
        rec = items[k]
        assert rec["n_words"] < MIN_WHOLE_WORDS and rec["n_ngrams"] == 0 and rec["status"] == "ambiguous", k


def test_counts_equal_brute_force_reference(planted, planted_index):
    docs = [json.loads(line)["text"] for line in open(planted.corpus)]
    bench = {json.loads(line)["id"]: json.loads(line)["text"] for line in open(planted.bench)}
    sample = list(planted.verbatim)[:6] + list(planted.edited)[:6] + list(planted.fragments)[:4] + list(planted.clean)[:4]
    sample += [k for k in planted.kind if k.endswith(("-1", "-2"))]  # other scripts, short, invisible, absent
    items = planted_index.by_id()
    counts13, counts8 = corpus_ngram_counts(docs, 13), corpus_ngram_counts(docs, 8)
    for k in sample:
        n_words = len(words(bench[k]))
        if MIN_WHOLE_WORDS <= n_words < 13:  # matched whole: one "n-gram", the item itself
            c13 = np.asarray(brute_force(corpus_ngram_counts(docs, n_words), bench[k], n_words))
        else:
            c13 = np.asarray(brute_force(counts13, bench[k], 13))
        c8 = np.asarray(brute_force(counts8, bench[k], 8))
        rec = items[k]
        assert rec["n_ngrams"] == len(c13)
        assert rec["matched_ngrams"] == int((c13 > 0).sum()), k
        assert rec["total_hits"] == int(c13.sum()), k
        assert rec["occurrences"] == (int(np.median(c13[c13 > 0])) if (c13 > 0).any() else 0), k
        assert rec["matched_8grams"] == int((c8 > 0).sum()), k


def test_workers_and_shards_do_not_change_the_result(planted, planted_index, tmp_path):
    config = IndexConfig(workers=2, shard_mb=0.3, batch_mb=0.1)
    other = build_index([planted.corpus], planted.bench, tmp_path / "w2", config=config).index
    strip = lambda recs: [{k: v for k, v in r.items()} for r in recs]
    assert strip(other.items) == strip(planted_index.items)


def test_interrupted_build_resumes_by_shard(planted, planted_index, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    config = IndexConfig(shard_mb=0.3, batch_mb=0.1)
    real_scan = build_mod._scan_batch
    calls = {"n": 0}

    def failing_scan(docs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_scan(docs)

    monkeypatch.setattr(build_mod, "_scan_batch", failing_scan)
    with pytest.raises(KeyboardInterrupt):
        build_index([planted.corpus], planted.bench, out, config=config)
    assert not out.exists(), "an interrupted build must not leave a half-written index"
    partial = out.with_name(out.name + ".partial")
    done = sorted(p.name for p in partial.glob("shard-*.json"))
    assert done, "finished shards are kept for resuming"

    monkeypatch.setattr(build_mod, "_scan_batch", real_scan)
    summary = build_index([planted.corpus], planted.bench, out, config=config)
    assert summary.shards_resumed == len(done)
    assert summary.index.items == planted_index.items
    assert not partial.exists()


def test_palm_rule_needs_70_percent_of_8grams(planted, tmp_path):
    index = build_index([planted.corpus], planted.bench, tmp_path / "palm",
                        config=IndexConfig.palm(neardup=False)).index
    for rec in index.items:
        if rec["status"] == "seen":
            assert rec["coverage"] >= 0.7
            assert rec["n_ngrams"] == (rec["n_words"] - 7 if rec["n_words"] >= 8 else 1)
    assert index.manifest["parameters"]["n"] == 8


def test_manifest_records_inputs_and_settings(planted, planted_index):
    m = planted_index.manifest
    assert m["inputs"][0]["sha256"] and m["inputs"][0]["size"] == planted.corpus.stat().st_size
    assert m["parameters"]["n"] == 13 and m["parameters"]["normalization"] == NORMALIZATION
    n_docs = len(planted.corpus.read_text().splitlines())
    assert n_docs == 495 and m["corpus"]["documents"]["read"] == n_docs and m["corpus"]["documents"]["skipped"] == 0
    assert m["counts"]["items"] == len(planted.bench_text) == 344
    assert m["versions"]["datasketch"]


def test_text_directory_with_globs(tmp_path):
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    secret = "the quick brown fox jumps over the lazy dog and keeps running far away into the night"
    (root / "pkg" / "a.py").write_text(f"# {secret}\nx = 1\n")
    (root / "pkg" / "b.txt").write_text(secret)
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "q1", "text": secret.title()}) + "\n")
    index = build_index([root], bench, tmp_path / "i", config=IndexConfig(include=("*.py",))).index
    rec = index.items[0]
    assert rec["status"] == "seen"
    assert [loc[0] for loc in rec["locations"]] == [str(root / "pkg" / "a.py")]
    assert rec["locations"][0][2] == 2  # character offset of "the" after "# "


def test_refuses_to_replace_a_directory_that_is_not_an_index(planted, tmp_path):
    victim = tmp_path / "important"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a contaudit index"):
        build_index([planted.corpus], planted.bench, victim)
    assert (victim / "notes.txt").read_text() == "keep me"


def test_rebuild_replaces_previous_index(planted, tmp_path):
    out = tmp_path / "again"
    build_index([planted.corpus], planted.bench, out, config=IndexConfig(neardup=False))
    build_index([planted.corpus], planted.bench, out, config=IndexConfig(n=10, neardup=False))
    assert load_index(out).manifest["parameters"]["n"] == 10
    assert not out.with_name("again.old").exists()


def test_plan_matches_tells_when_an_index_can_be_reused(planted, planted_index, tmp_path):
    from contaudit.index.build import plan_matches

    assert plan_matches(planted_index.path, [planted.corpus], planted.bench)
    assert not plan_matches(planted_index.path, [planted.corpus], planted.bench, IndexConfig(n=12))
    assert not plan_matches(tmp_path / "absent", [planted.corpus], planted.bench)


def test_single_text_file_corpus(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron")
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "x", "text": "Alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu"}) + "\n")
    index = build_index([doc], bench, tmp_path / "i").index
    assert index.items[0]["status"] == "seen"
    assert index.manifest["inputs"][0]["kind"] == "file"


def test_an_index_built_with_the_previous_normalization_is_refused(planted, planted_index, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(planted_index.path, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["parameters"]["normalization"] = "nfkc-lower-alnum-words-v1"
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestMismatchError, match="nfkc-lower-alnum-words-v1"):
        load_index(old)


def test_short_item_matches_stop_at_document_ends(tmp_path):
    corpus = tmp_path / "c.jsonl"
    docs = ["filler words here alpha beta gamma", "delta epsilon zeta more filler",  # split across two documents
            "x alpha beta gamma delta epsilon zeta",  # whole, ending the document (and the corpus)
            "Alpha, beta: gamma delta — epsilon zeta eta."]  # whole, with punctuation and case
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    bench = tmp_path / "b.jsonl"
    rows = [{"id": "six", "text": "alpha beta gamma delta epsilon zeta"},  # 6 words: matched whole
            {"id": "seven", "text": "beta gamma delta epsilon zeta eta theta"},  # absent
            {"id": "four", "text": "alpha beta gamma delta"}]  # too short to be matched
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = build_index([corpus], bench, tmp_path / "i").index.by_id()
    assert items["six"]["status"] == "seen" and items["six"]["total_hits"] == 2
    assert [loc[1:] for loc in items["six"]["locations"]] == [[3, 2], [4, 0]]
    assert items["seven"]["status"] == "ambiguous" and items["seven"]["total_hits"] == 0
    assert items["four"]["status"] == "ambiguous" and items["four"]["n_ngrams"] == 0
