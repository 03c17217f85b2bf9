"""The semantic stage (`IndexConfig(semantic=True)`): rephrased copies found, located and kept apart from seen.

Planted cases are built from real prose every Debian machine ships (the license texts of
base-files under /usr/share/common-licenses): GNU GPL-3 paragraphs are the benchmark, the
other licenses the corpus, and some GPL paragraphs are planted in it rephrased (words
substituted from a small hand-written synonym map, sentences reordered, embedded in a
longer re-wrapped document). Needs the optional extra `semantic`; without it these tests
skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from contaudit.errors import InputError
from contaudit.index import IndexConfig, build_index, build_indexes

if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
    import wordllama  # noqa: F401  (CI installs the extra: a missing wordllama is a failure there)
else:
    pytest.importorskip("wordllama", reason="the optional extra is not installed: pip install 'contaudit[semantic]'")

from contaudit.index import semantic  # noqa: E402

LICENSES = Path("/usr/share/common-licenses")
pytestmark = pytest.mark.skipif(not (LICENSES / "GPL-3").exists(), reason="no /usr/share/common-licenses")

SYNONYMS = {  # a hand-written thesaurus: enough common words that no 13 words in a row survive
    "the": "this", "and": "plus", "you": "one", "your": "one's", "that": "which", "software": "programs",
    "program": "application", "programs": "applications", "freedom": "liberty", "freedoms": "liberties",
    "license": "licence", "licenses": "licences", "rights": "entitlements", "change": "alter",
    "distribute": "hand out", "copies": "duplicates", "works": "creations", "work": "creation", "users": "people",
    "can": "may", "make": "ensure", "have": "possess", "by": "via", "all": "every", "any": "some",
}


def _paragraphs(name: str) -> list[str]:
    text = (LICENSES / name).read_text(encoding="utf-8")
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p.split()) >= 40]


def substitute(text: str) -> str:
    return " ".join(SYNONYMS.get(w.lower(), w) for w in text.split())


def reorder(text: str) -> str:
    sentences = re.split(r"(?<=[.;])\s+", text)
    return " ".join(sentences[1:] + sentences[:1])


PLANTS = {  # GPL-3 paragraph -> how it is planted in the corpus
    0: ("substituted", substitute), 1: ("substituted", substitute), 2: ("reordered+substituted",
                                                                         lambda t: substitute(reorder(t))),
    3: ("reordered", reorder), 4: ("embedded", substitute), 5: ("substituted", substitute),
}
HELD_OUT = range(20, 44)  # GPL-3 paragraphs planted nowhere


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Corpus (other licenses, one paragraph a record, plus the plants) and benchmark (GPL-3 paragraphs)."""
    root = tmp_path_factory.mktemp("plants")
    gpl = _paragraphs("GPL-3")
    docs = [p for name in ("MPL-2.0", "Artistic", "CC0-1.0", "GFDL-1.3") for p in _paragraphs(name)]
    records = {}
    for k, (kind, rephrase) in PLANTS.items():
        text = rephrase(gpl[k])
        if kind == "embedded":  # inside a longer unrelated document, re-wrapped at 60 columns
            text = textwrap.fill(" ".join(docs[:4]) + " " + text + " " + " ".join(docs[4:8]), 60)
        records[k] = len(docs) + 1  # its 1-based record number
        docs.append(text)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    bench = root / "bench.jsonl"
    ids = [*PLANTS, *HELD_OUT]
    bench.write_text("".join(json.dumps({"id": f"gpl-{k}", "text": gpl[k]}) + "\n" for k in ids))
    return {"root": root, "corpus": corpus, "bench": bench, "docs": docs, "records": records}


@pytest.fixture(scope="module")
def index(planted):
    return build_index([planted["corpus"]], planted["bench"], planted["root"] / "idx",
                       config=IndexConfig(semantic=True)).index


def test_paraphrases_are_found_and_kept_apart_from_seen(index):
    by_id = index.by_id()
    statuses = {}
    for k, (kind, _) in PLANTS.items():
        item = by_id[f"gpl-{k}"]
        statuses[kind] = statuses.get(kind, []) + [item["status"]]
        if item["lexical_status"] == "seen":  # found by the exact or near-duplicate stage: stays seen
            assert item["status"] == "seen"
        else:  # found only by the semantic stage: its own status
            assert item["status"] == "paraphrased", (kind, item["semantic_score"])
    assert statuses["reordered"] == ["seen"]  # reordering keeps long runs of words: the exact stage finds it
    assert statuses["embedded"] == statuses["reordered+substituted"] == ["paraphrased"]
    for k in HELD_OUT:  # planted nowhere (a few share boilerplate with GFDL-1.3 word for word: seen)
        item = by_id[f"gpl-{k}"]
        assert item["status"] == item["lexical_status"] != "paraphrased", item["semantic_score"]
    paraphrased = sum(s == "paraphrased" for v in statuses.values() for s in v)
    assert paraphrased >= 3 and index.manifest["counts"]["paraphrased"] == paraphrased


def test_semantic_match_names_its_place_and_text(index, planted):
    by_id = index.by_id()
    for k, (kind, _) in PLANTS.items():
        item = by_id[f"gpl-{k}"]
        source, record, offset = item["semantic_location"]
        assert (source, record) == (str(planted["corpus"]), planted["records"][k])
        doc = planted["docs"][record - 1]
        assert doc[offset:offset + len(item["semantic_text"])] == item["semantic_text"]
        if kind == "embedded":  # the span found is the plant, not the unrelated text around it
            plant = substitute(_paragraphs("GPL-3")[k])
            start = re.sub(r"\s+", " ", doc).index(plant[:40])
            assert abs(offset - start) < 120 and item["semantic_score"] >= index.manifest["semantic"]["threshold"]


def test_manifest_records_model_fingerprint_threshold_and_false_match_rate(index):
    section = index.manifest["semantic"]
    files = section["model"]["files"]
    assert section["model"]["name"] == "wordllama" and section["model"]["dim"] == 256
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in files.values()) and len(files) == 2
    calibration = section["calibration"]
    assert calibration["threshold"] == section["threshold"] and 0 < section["threshold"] < 1
    assert calibration["false_match_rate"] <= calibration["target_false_match_rate"] == 0.01
    assert calibration["n_planted"] >= 20 and calibration["recall"] >= 0.9
    assert index.manifest["parameters"]["semantic_settings"]["model"] == section["model"]
    # the stage's own time, apart from the build's: calibration, the scan (summed over batches), verification
    seconds = section["seconds"]
    assert set(seconds) == {"calibration", "scan", "verify"} and all(v > 0 for v in seconds.values())
    assert seconds["scan"] + seconds["calibration"] < index.manifest["seconds"]
    # (the seconds are rounded to 1 ms in the manifest, the throughput is not: on a scan of some 50 ms that is
    # more than 1 %, and a fixed 1 % tolerance failed now and then)
    assert section["scan_mb_per_s"] == pytest.approx(index.manifest["corpus"]["bytes"] / 1e6 / seconds["scan"],
                                                     rel=1e-3 + 0.5e-3 / seconds["scan"])


def test_switched_off_the_index_is_the_same_byte_for_byte(planted, tmp_path):
    plain = build_index([planted["corpus"]], planted["bench"], tmp_path / "plain").index
    other = IndexConfig(semantic=False, semantic_threshold=0.5, semantic_model="elsewhere", semantic_candidates=9)
    off = build_index([planted["corpus"]], planted["bench"], tmp_path / "off", config=other).index
    assert (tmp_path / "plain" / "items.jsonl").read_bytes() == (tmp_path / "off" / "items.jsonl").read_bytes()
    assert plain.manifest["plan_sha256"] == off.manifest["plan_sha256"]
    assert "semantic" not in json.dumps(plain.manifest) and "semantic" not in json.dumps(plain.items)
    assert "paraphrased" not in plain.manifest["counts"]


def test_given_threshold_skips_calibration_and_changes_the_plan(planted, index, tmp_path):
    fixed = build_index([planted["corpus"]], planted["bench"], tmp_path / "fixed",
                        config=IndexConfig(semantic=True, semantic_threshold=0.99)).index
    assert fixed.manifest["semantic"]["calibration"] is None and fixed.manifest["semantic"]["threshold"] == 0.99
    assert fixed.manifest["plan_sha256"] != index.manifest["plan_sha256"]
    assert "paraphrased" not in {it["status"] for it in fixed.items}


def test_several_benchmarks_in_one_pass_match_their_own_builds(planted, index, tmp_path):
    second = tmp_path / "second.jsonl"
    second.write_text("".join(l for l in planted["bench"].read_text().splitlines(keepends=True)[:4]))
    build_indexes([planted["corpus"]], {tmp_path / "a": planted["bench"], tmp_path / "b": second},
                  tmp_path / "staging", config=IndexConfig(semantic=True))
    items_a = [json.loads(l) for l in (tmp_path / "a" / "items.jsonl").read_text().splitlines()]
    assert [(it["status"], it["semantic_location"]) for it in items_a] == \
           [(it["status"], it["semantic_location"]) for it in index.items]


def test_ray_scan_gives_the_same_statuses(planted, index, tmp_path):
    if os.environ.get("CI", "").strip().lower() not in ("1", "true", "yes"):
        pytest.importorskip("ray", reason="the optional extra is not installed: pip install 'contaudit[ray]'")
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = build_index([planted["corpus"]], planted["bench"], tmp_path / "ray",
                             config=IndexConfig(semantic=True, ray=True, workers=2, batch_mb=0.02)).index
    finally:
        ray.shutdown()
    here = build_index([planted["corpus"]], planted["bench"], tmp_path / "here",
                       config=IndexConfig(semantic=True, batch_mb=0.02)).index
    assert [it["status"] for it in on_ray.items] == [it["status"] for it in here.items]
    assert (tmp_path / "ray" / "items.jsonl").read_bytes() == (tmp_path / "here" / "items.jsonl").read_bytes()


def test_unknown_model_folder_is_one_line_error(planted, tmp_path):
    with pytest.raises(InputError, match="`semantic_model` must be 'wordllama' or a model folder"):
        build_index([planted["corpus"]], planted["bench"], tmp_path / "x",
                    config=IndexConfig(semantic=True, semantic_model=str(tmp_path / "nowhere")))


def test_alignment_score_of_a_text_with_itself_is_one_and_of_unrelated_text_lower():
    model = semantic.load_model("wordllama")
    gpl = _paragraphs("GPL-3")
    (a, _), (b, _), (c, _) = model.encode([gpl[0], substitute(gpl[0]), gpl[30]])
    assert semantic.align_score(model, a, a)[0] == pytest.approx(1.0)
    assert semantic.align_score(model, a, b)[0] > semantic.align_score(model, a, c)[0]


def test_calibration_plants_paraphrases_with_words_replaced_by_their_neighbours():
    """The calibration's planted paraphrases change words, not only the sentence order (the neighbour lookup
    once encoded " word", two tokens, and so never replaced one)."""
    model = semantic.load_model("wordllama")
    assert semantic._neighbour(model, "directory") not in (None, "directory")
    text = _paragraphs("GPL-3")[0]
    planted = semantic.plant_paraphrase(model, text, np.random.default_rng(0))
    before, after = set(re.findall(r"\w+", text)), set(re.findall(r"\w+", planted))
    assert len(after - before) >= 3  # new words in
    assert all(w.isascii() for w in after - before)  # from the text's own script


def test_threshold_is_set_at_the_corpus_scale_by_the_unrelated_passages_searched_in_the_whole_corpus(tmp_path):
    """The calibration's unrelated passages come from the corpus's first 0.1 MB; reworded copies of ten of them
    lie past it. Searched in the sample only, they do not meet those copies; searched in the whole corpus with
    the items (as the build does), they do, so the threshold rises to hold the target rate at the corpus's
    scale, and the items' statuses use it."""
    seen, paragraphs = set(), []
    for name in ("GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3", "MPL-1.1", "MPL-2.0", "GPL-1", "CC0-1.0", "Artistic"):
        for p in semantic.prose_paragraphs((LICENSES / name).read_text(encoding="utf-8")):
            if p not in seen:
                seen.add(p)
                paragraphs.append(p)

    def reword(text):  # no 8 words in a row left (those would be a copy, which calibration sets aside)
        return " ".join(w for k, w in enumerate(substitute(text).split()) if k % 6 != 5)

    apache = list(semantic.prose_paragraphs((LICENSES / "Apache-2.0").read_text(encoding="utf-8")))
    records = paragraphs + [reword(p) for p in paragraphs[:10]] + [substitute(reorder(apache[2]))]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in records))
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"apache-{k}", "text": apache[k]}) + "\n" for k in (0, 2, 7)))
    index = build_index([corpus], bench, tmp_path / "idx",
                        config=IndexConfig(semantic=True, semantic_calibration_mb=0.1)).index
    section = index.manifest["semantic"]
    sample, at_scale = section["calibration"], section["calibration"]["corpus"]
    n = sample["n_unrelated"]
    assert at_scale["n_unrelated"] == n >= 150 and sample["sample_chars"] < 110_000 < at_scale["corpus_bytes"]
    assert sample["false_match_rate"] <= 0.01
    assert at_scale["false_match_rate_at_sample_threshold"] >= 5 / n  # reworded copies past the sample (7 of 10)
    assert at_scale["threshold"] > sample["threshold"] and at_scale["false_match_rate"] <= 0.01
    assert section["threshold"] == at_scale["threshold"]
    for item in index.items:
        assert (item["status"] == "paraphrased") == (item["lexical_status"] != "seen"
                                                     and item["semantic_score"] >= at_scale["threshold"])
    assert index.by_id()["apache-2"]["status"] == "paraphrased"


def test_corpus_threshold_keeps_at_most_the_target_share_of_unrelated_scores_and_never_drops_below_the_sample():
    calibration = semantic.Calibration(0.5, 0, 1, 4, 4, 10, 0.25, 0.5, planted_scores=[0.9, 0.7, 0.65, 0.4])
    assert semantic.corpus_threshold(calibration, [0.2, 0.6, 0.8, 0.3], 99) == {
        "threshold": 0.600001, "false_match_rate": 0.25, "false_match_rate_at_sample_threshold": 0.5,
        "recall": 0.75, "n_unrelated": 4, "corpus_bytes": 99}  # k = floor(0.25 * 4) = 1 null may reach it
    assert semantic.corpus_threshold(calibration, [0.1, 0.2, 0.3, 0.4], 99)["threshold"] == 0.5  # the sample's


def test_window_sizes_follow_the_items_lengths_in_whole_blocks():
    sizes, which = semantic.window_sizes([8, 40, 41, 200])
    assert list(sizes[which]) == [8, 40, 40, 184] and np.all(np.diff(sizes) > 0) and np.all(sizes % 8 == 0)


def test_cli_index_semantic_lists_paraphrased_items_with_both_texts(planted, tmp_path):
    from typer.testing import CliRunner

    from contaudit.cli import app
    result = CliRunner().invoke(app, ["index", str(planted["corpus"]), "-b", str(planted["bench"]),
                                      "-o", str(tmp_path / "cli"), "--semantic"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "paraphrased" in result.output and "Paraphrased items" in result.output
    assert "benchmark text" in result.output and "corpus text" in result.output
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    spent = manifest["semantic"]["seconds"]
    assert f"Semantic stage: calibration {spent['calibration']:.1f} s, scan {spent['scan']:.1f} s" in result.output
    at_scale = manifest["semantic"]["calibration"]["corpus"]
    assert f"Semantic threshold {at_scale['threshold']:.3f}: {at_scale['false_match_rate']:.1%} of " \
           f"{at_scale['n_unrelated']} unrelated corpus passages" in " ".join(result.output.split())


def test_screen_evidence_counts_paraphrased_items_apart(index):
    from contaudit.analysis.evidence import corpus_entry
    from contaudit.suite.report import _seen
    by_id = index.by_id()
    entry = corpus_entry(list(by_id), by_id)
    assert entry["n_paraphrased"] == index.manifest["counts"]["paraphrased"] > 0
    assert entry["n_seen"] == index.manifest["counts"]["seen"]
    cell = _seen({**entry, "available": True})
    assert cell.endswith(f"+ {entry['n_paraphrased']} paraphrased")
    plain = {k: {f: v for f, v in rec.items() if f != "semantic_score"} for k, rec in by_id.items()}  # no stage
    assert "n_paraphrased" not in corpus_entry(list(plain), plain)


def test_the_report_lists_each_paraphrased_item_beside_the_corpus_text_it_matched(index):
    """Issue 27: "the report lists the paraphrased items with both texts side by side" (report.md and .html)."""
    from contaudit.analysis.evidence import PARAPHRASE_CHARS, corpus_entry
    from contaudit.report import html, markdown
    from contaudit.report.tables import paraphrased_table

    by_id = index.by_id()
    entry = corpus_entry(list(by_id), by_id)
    table = paraphrased_table({"supporting": {"corpus": entry}})
    listed = [i for i, rec in by_id.items() if rec["status"] == "paraphrased"]
    assert [row[0] for row in table.rows] == listed[:20] and table.headers[-2:] == ["Benchmark text", "Corpus text"]

    def shown(text):
        text = " ".join(text.split())
        return text if len(text) <= PARAPHRASE_CHARS else text[:PARAPHRASE_CHARS - 1] + "…"

    for row in table.rows:
        rec = by_id[row[0]]
        assert row[3] == shown(rec["text"]) and row[4] == shown(rec["semantic_text"]) and row[3] != row[4]
        assert float(row[1]) == pytest.approx(rec["semantic_score"], abs=5e-4)
    page = html.table(table)
    assert page.count('class="wrap"') == 2 * len(table.rows)  # the two texts wrap; the other cells do not
    assert all(row[0] in markdown.table(table) for row in table.rows)
    plain = {k: {f: v for f, v in rec.items() if f != "semantic_score"} for k, rec in by_id.items()}
    assert paraphrased_table({"supporting": {"corpus": corpus_entry(list(plain), plain)}}) is None


def test_a_local_static_model_folder_gives_the_same_matches_and_its_fingerprint(planted, tmp_path):
    import shutil

    import wordllama
    packaged = Path(wordllama.__file__).parent
    module = tmp_path / "my-model" / "0_StaticEmbedding"  # sentence-transformers' layout of a static model
    module.mkdir(parents=True)
    shutil.copy(packaged / "tokenizers" / "l2_supercat_tokenizer_config.json", module / "tokenizer.json")
    shutil.copy(packaged / "weights" / "l2_supercat_256.safetensors", module / "model.safetensors")
    (tmp_path / "my-model" / "modules.json").write_text("[]")
    settings = dict(semantic=True, semantic_threshold=0.75)
    default = build_index([planted["corpus"]], planted["bench"], tmp_path / "a", config=IndexConfig(**settings)).index
    local = build_index([planted["corpus"]], planted["bench"], tmp_path / "b",
                        config=IndexConfig(**settings, semantic_model=str(tmp_path / "my-model"))).index
    assert [(it["status"], it["semantic_score"]) for it in local.items] == \
           [(it["status"], it["semantic_score"]) for it in default.items]
    model = local.manifest["semantic"]["model"]
    assert model["name"] == str(tmp_path / "my-model")
    assert sorted(model["files"].values()) == sorted(default.manifest["semantic"]["model"]["files"].values())
    assert local.manifest["plan_sha256"] != default.manifest["plan_sha256"]


def test_word_split_tokenization_equals_the_whole_texts_and_ids_alone_equal_encode():
    """The scan tokenizes word by word, ids only (2.3x faster): the same ids and offsets as the tokenizer given
    each whole text, on real prose and on the cases where a cut could differ (space runs, tabs, newlines,
    leading and trailing spaces, non-Latin scripts, an empty text)."""
    from tokenizers import Tokenizer

    model = semantic.load_model("wordllama")
    assert model.tokenizer.pre_tokenizer is not None  # the cut is on: wordllama's vocabulary allows it
    whole = Tokenizer.from_file(str(model.files[0]))
    whole.no_padding()
    whole.no_truncation()
    texts = [(LICENSES / "GPL-3").read_text()[:20000], "   four  spaces    here\tand\ttabs \n\n  new lines  ",
             " leading", "trailing   ", "", "ein Satz auf Deutsch, Größe", "日本語の文  と  Ελληνικά κείμενα",
             "x" * 3000 + " " + "word " * 50, "\n\tindented", " é à ü ñ", "<s> and </s>"]
    ids_alone = model.encode_ids(texts)
    for text, (ids, spans), alone in zip(texts, model.encode(texts), ids_alone):
        enc = whole.encode(text, add_special_tokens=False)
        assert ids.tolist() == enc.ids and [tuple(s) for s in spans.tolist()] == enc.offsets
        assert np.array_equal(alone, ids)
        assert np.array_equal(model.spans(text, ids), spans)  # from the tokens' byte lengths, no tokenizer


def test_a_tokenizer_with_added_tokens_past_its_vocabulary_loads_and_their_spans_come_from_the_tokenizer():
    """Llama-style tokenizers add e.g. <pad> after the vocabulary (id 32000): the byte-length table covers it, and a
    text holding it is encoded again for its spans (added tokens are matched before the normalizer)."""
    import dataclasses

    from tokenizers import AddedToken, Tokenizer

    model = semantic.load_model("wordllama")
    tok = Tokenizer.from_file(str(model.files[0]))
    tok.add_special_tokens([AddedToken("<pad>", special=True)])
    pad = tok.token_to_id("<pad>")
    assert pad >= 32000
    sizes = semantic._split_words(tok)
    assert sizes is not None and sizes[pad] == -1 and len(sizes) == pad + 1
    wide = dataclasses.replace(model, tokenizer=tok, token_bytes=sizes,
                               vectors=np.vstack([model.vectors, np.zeros((1, model.vectors.shape[1]), np.float32)]))
    for text in ("a <pad> b", "plain text, no added token", "a lone \ud800 surrogate, as JSON can hold"):
        (ids, spans), = wide.encode([text])
        assert np.array_equal(wide.spans(text, ids), spans)
