"""Corpus index: planted ground truth, a brute-force reference, resume, atomicity."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from contaudit.errors import InputError
from contaudit.index import IndexConfig, build_index, load_index
from contaudit.index import build as build_mod
from contaudit.text import words

from planted import make_planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("planted"))


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
    for item_id, copies in planted.verbatim.items():
        rec = items[item_id]
        assert rec["status"] == "seen", item_id
        assert rec["coverage"] == 1.0
        assert rec["longest_match"] == rec["n_words"]
        assert rec["occurrences"] >= copies
        assert rec["locations"], "a seen item must say where it was found"


def test_lightly_edited_plants_are_found_as_near_duplicates(planted, planted_index):
    items = planted_index.by_id()
    found = [items[k]["neardup_jaccard"] >= 0.8 for k in planted.edited]
    assert np.mean(found) >= 0.95, sorted((items[k]["neardup_jaccard"], f) for k, f in planted.edited.items())
    assert all(items[k]["status"] == "seen" for k, ok in zip(planted.edited, found) if ok)


def test_no_unplanted_item_is_marked_seen(planted, planted_index):
    items = planted_index.by_id()
    for k in planted.fragments | planted.clean:
        assert items[k]["status"] != "seen", (k, items[k])
    assert sum(items[k]["status"] == "unseen" for k in planted.clean) >= 0.9 * len(planted.clean)


def test_counts_equal_brute_force_reference(planted, planted_index):
    docs = [json.loads(line)["text"] for line in open(planted.corpus)]
    bench = {json.loads(line)["id"]: json.loads(line)["text"] for line in open(planted.bench)}
    sample = list(planted.verbatim)[:6] + list(planted.edited)[:6] + list(planted.fragments)[:4] + list(planted.clean)[:4]
    items = planted_index.by_id()
    counts13, counts8 = corpus_ngram_counts(docs, 13), corpus_ngram_counts(docs, 8)
    for k in sample:
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
            assert rec["coverage"] >= 0.7 and rec["n_ngrams"] == rec["n_words"] - 7
    assert index.manifest["parameters"]["n"] == 8


def test_manifest_records_inputs_and_settings(planted, planted_index):
    m = planted_index.manifest
    assert m["inputs"][0]["sha256"] and m["inputs"][0]["size"] == planted.corpus.stat().st_size
    assert m["parameters"]["n"] == 13 and m["parameters"]["normalization"]
    assert m["corpus"]["documents"]["read"] == 400 and m["corpus"]["documents"]["skipped"] == 0
    assert m["counts"]["items"] == 200
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
