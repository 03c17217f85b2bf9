"""Score inflation (issue 26): known answers, and data where the truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from contaudit.analysis.inflation import ModelOutcomes, score_inflation, score_summary
from contaudit.errors import InputError


def _outcomes(role, values: dict) -> ModelOutcomes:
    return ModelOutcomes(role, {k: float(v) for k, v in values.items()}, metric="pass@1")


def test_score_summary_matches_the_wilson_and_t_formulas():
    k, n, z = 7, 20, stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    s = score_summary([1] * k + [0] * (n - k))
    assert s["ci_method"] == "wilson" and s["mean"] == pytest.approx(0.35)
    assert s["confidence_interval"] == pytest.approx([centre - half, centre + half])
    real = [0.2, 0.5, 0.9, 0.4, 0.7]
    ci = stats.ttest_1samp(real, 0).confidence_interval(0.95)
    assert score_summary(real)["confidence_interval"] == pytest.approx([ci.low, ci.high])
    assert score_summary([])["mean"] is None


def test_inflation_is_the_difference_in_differences_of_scores_by_hand():
    test, shadow = ["t1", "t2", "t3", "t4"], ["s1", "s2", "s3", "s4"]
    suspect = _outcomes("suspect", {"t1": 1, "t2": 1, "t3": 1, "t4": 0, "s1": 1, "s2": 0, "s3": 0, "s4": 0})
    clean = _outcomes("clean", {"t1": 1, "t2": 0, "t3": 0, "t4": 0, "s1": 1, "s2": 0, "s3": 1, "s4": 0})
    r = score_inflation(suspect, test, shadow, clean=clean, n_resamples=999, n_bootstrap=999, rng=0,
                        index_status={"t1": "seen", "t2": "seen", "t3": "unseen", "t4": "unseen"})
    # (0.75 - 0.25) - (0.25 - 0.5) = 0.75
    assert r["estimate"] == pytest.approx(0.75)
    assert r["suspect_test_score"] == pytest.approx(0.75)
    assert r["clean_score"]["estimate"] == pytest.approx(0.75 - 0.75)  # C_test + mean_shadow(S - C) = 0.25 - 0.25
    assert r["scores"]["suspect"]["test_seen"]["mean"] == 1.0 and r["scores"]["suspect"]["test_unseen"]["mean"] == 0.5
    assert r["scores"]["clean"]["shadow"]["mean"] == 0.5
    low, high = r["confidence_interval"]
    assert low <= 0.75 <= high and 0 < r["pvalue"] <= 1
    # the unseen items, post-stratified on the clean outcome: t3 (clean 0) and t4 (clean 0) only fill stratum 0,
    # stratum 1 (t1) has no unseen item: no reweighting possible
    assert r["unseen_items_score"]["reweighted"] is False and r["unseen_items_score"]["mean"] == 0.5


def test_unseen_items_are_reweighted_to_the_test_sets_difficulty():
    ids = [f"t{i}" for i in range(8)]
    clean = _outcomes("clean", dict(zip(ids, [1, 1, 1, 1, 1, 1, 0, 0])))  # 3/4 of the test set is "easy"
    suspect = _outcomes("suspect", dict(zip(ids, [1, 1, 1, 0, 1, 0, 0, 0])))
    shadow = {f"s{i}": 0 for i in range(3)}
    suspect.scores.update(shadow), clean.scores.update(shadow)
    status = dict(zip(ids, ["seen", "seen", "unseen", "unseen", "unseen", "unseen", "unseen", "unseen"]))
    r = score_inflation(suspect, ids, list(shadow), clean=clean, index_status=status, n_resamples=99,
                        n_bootstrap=99, rng=0)
    u = r["unseen_items_score"]
    # unseen easy items t2..t5: suspect 1,0,1,0 -> 0.5; unseen hard items t6, t7: 0 -> 0.75 * 0.5 + 0.25 * 0
    # (the plain mean of the unseen items would be 2/6)
    assert u["reweighted"] is True and u["mean"] == pytest.approx(0.375) and u["n"] == 6
    assert 0 <= u["confidence_interval"][0] < 0.375 < u["confidence_interval"][1] <= 1
    assert [s["weight"] for s in u["strata"]] == [0.25, 0.75]


def test_missing_outcomes_are_refused_naming_how_many():
    suspect = _outcomes("suspect", {"t1": 1, "s1": 0})
    with pytest.raises(InputError, match="miss 1 of the audit's 3 items"):
        score_inflation(suspect, ["t1", "t2"], ["s1"])


def _simulated(rng, leak: float, n=80):
    """Binary outcomes: items' difficulty p ~ Beta(2, 3); the clean model and the suspect pass with p; a leaked
    test item (a share ``leak`` of the test set) passes for the suspect with 0.95."""
    p = rng.beta(2, 3, size=2 * n)
    test, shadow = [f"t{i}" for i in range(n)], [f"s{i}" for i in range(n)]
    ids = test + shadow
    clean = (rng.random(2 * n) < p).astype(float)
    suspect = (rng.random(2 * n) < p).astype(float)
    leaked = np.zeros(2 * n, bool)
    leaked[:n] = rng.random(n) < leak
    suspect[leaked] = (rng.random(leaked.sum()) < 0.95).astype(float)
    truth = float(np.mean(np.where(leaked[:n], 0.95, p[:n]) - p[:n]))
    return (ModelOutcomes("suspect", dict(zip(ids, suspect))), ModelOutcomes("clean", dict(zip(ids, clean))),
            test, shadow, truth)


def test_on_simulated_evaluations_the_interval_covers_the_truth_and_the_null_holds_its_level():
    """Independent simulated audits (fresh items and models each): a leak of half the test set is found and its
    interval covers the true inflation; without a leak the one-sided test rejects at about alpha."""
    covered, found, rejected = 0, 0, 0
    runs = 60
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        suspect, clean, test, shadow, truth = _simulated(rng, leak=0.5)
        r = score_inflation(suspect, test, shadow, clean=clean, n_resamples=499, n_bootstrap=499, rng=seed)
        covered += r["confidence_interval"][0] <= truth <= r["confidence_interval"][1]
        found += r["pvalue"] <= 0.05
        suspect0, clean0, test0, shadow0, _ = _simulated(np.random.default_rng(10_000 + seed), leak=0.0)
        r0 = score_inflation(suspect0, test0, shadow0, clean=clean0, n_resamples=499, n_bootstrap=499, rng=seed)
        rejected += r0["pvalue"] <= 0.05
    assert covered >= 0.85 * runs  # nominal 95 %, MC error at 60 runs ~ 3 %
    assert found >= 0.6 * runs  # measured 45 / 60: with 80 items and noisy 0/1 outcomes, power is ~75 %
    assert rejected <= 0.15 * runs  # nominal 5 %: at most 9 of 60 (binomial upper tail ~ 0.006)


def test_analyze_reports_the_inflation_of_a_simulated_audit(tmp_path):
    """Outcomes given to analyze land in results.json (with their files among the inputs); the verdict is unchanged."""
    import json

    from contaudit.analysis import analyze
    from contaudit.analysis.simulate import simulate_audit, write_audit

    f = write_audit(simulate_audit(rng=3), tmp_path / "sim")
    ids = {name: [json.loads(line)["id"] for line in open(f[f"suspect_{name}"])] for name in ("test", "shadow")}
    rng = np.random.default_rng(0)
    clean = {i: float(rng.random() < 0.4) for i in ids["test"] + ids["shadow"]}
    suspect = {i: (1.0 if i in ids["test"] and rng.random() < 0.5 else v) for i, v in clean.items()}
    path = tmp_path / "suspect-outcomes.jsonl"
    path.write_text("".join(json.dumps({"id": i, "score": v}) + "\n" for i, v in suspect.items()))
    args = (f["suspect_test"], f["clean_test"], f["suspect_shadow"], f["clean_shadow"])
    kwargs = dict(suspect_probes=f["suspect_probes"], clean_probes=f["clean_probes"], probes=f["probes"],
                  shadow_origin="random_split")
    plain = analyze(*args, **kwargs)
    results = analyze(*args, **kwargs, out=tmp_path / "run", outcomes={
        "suspect": ModelOutcomes("suspect", suspect, source={"path": str(path)}),
        "clean": ModelOutcomes("clean", clean)})
    inflation = results["inflation"]
    assert plain["inflation"] is None and results["verdict"] == plain["verdict"]
    expected = (np.mean([suspect[i] - clean[i] for i in ids["test"]])
                - np.mean([suspect[i] - clean[i] for i in ids["shadow"]]))
    assert inflation["estimate"] == pytest.approx(expected) and inflation["estimate"] > 0.2
    assert inflation["pvalue"] < 0.01 and inflation["design"] == "suspect vs clean model"
    assert results["inputs"]["suspect_outcomes"]["sha256"]
    with pytest.raises(InputError, match="only for this audit's models"):
        analyze(*args, **kwargs, outcomes={"suspect": ModelOutcomes("suspect", suspect),
                                           "reference[1]": ModelOutcomes("reference[1]", clean)})
    # ... and in the reports: a table and a plot
    from contaudit.report import write_report

    report = write_report(tmp_path / "run")
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Score inflation (score)" in md and f"{inflation['estimate']:+.3f}"[:5] in md
    assert (tmp_path / "run" / "plots" / "inflation.png").stat().st_size > 0
    assert "Score inflation" in report.html.read_text()


def test_a_suite_benchmark_names_its_outcomes_and_its_row_carries_the_inflation(tmp_path):
    """[benchmarks.outcomes]: each benchmark its own files (they are per benchmark); checked like a protocol's."""
    from contaudit.errors import ProtocolError
    from contaudit.suite.results import benchmark_row
    from contaudit.suite.spec import load_suite

    text = """
name = "s"
[models.suspect]
path = "m1"
[models.clean]
path = "m2"
[[benchmarks]]
name = "he"
shadow_origin = "random_split"
[benchmarks.test]
path = "t.jsonl"
[benchmarks.shadow]
path = "s.jsonl"
[benchmarks.outcomes]
suspect = "evals/suspect.jsonl"
"""
    path = tmp_path / "suite.toml"
    path.write_text(text)
    suite = load_suite(path, check_paths=False)
    protocol = suite.protocol(suite.benchmarks[0])
    assert protocol.outcomes.suspect == (tmp_path / "evals" / "suspect.jsonl").resolve()
    path.write_text(text.replace('suspect = "evals/suspect.jsonl"', 'clean = "evals/clean.jsonl"'))
    with pytest.raises(ProtocolError, match=r"benchmarks\[0\]\.outcomes\.suspect"):
        load_suite(path, check_paths=False)
    path.write_text(text)
    for name in ("m1", "m2"):
        (tmp_path / name).mkdir()
    for name in ("t.jsonl", "s.jsonl"):
        (tmp_path / name).write_text("")
    with pytest.raises(ProtocolError, match=r"benchmarks\[0\]\.outcomes\.suspect.*no such file"):
        load_suite(path)

    results = {"verdict": {"label": "NO_EVIDENCE", "reasons": [], "tests": []}, "design_checks": [],
               "supporting": {}, "items": {"test": []}, "protocol": {"sha256": "x"},
               "inflation": {"metric": "pass@1", "estimate": 0.25, "confidence_interval": [0.1, 0.4], "pvalue": 0.001,
                             "suspect_test_score": 0.3, "clean_score": {"estimate": 0.05}}}
    row = benchmark_row("he", results, tmp_path / "run" / "he", tmp_path / "run")
    assert row["inflation"] == {"metric": "pass@1", "estimate": 0.25, "confidence_interval": [0.1, 0.4],
                                "pvalue": 0.001, "suspect_test_score": 0.3, "clean_score": 0.05}


def test_outcomes_that_never_vary_give_no_interval_rather_than_a_point():
    """The demo's models pass no HumanEval problem: every outcome 0. The estimate is 0, with no interval
    (a resampling interval of constant data is a point, which would read as certainty)."""
    ids = [f"t{i}" for i in range(40)], [f"s{i}" for i in range(40)]
    zeros = {i: 0.0 for i in ids[0] + ids[1]}
    r = score_inflation(ModelOutcomes("suspect", zeros), *ids, clean=ModelOutcomes("clean", dict(zeros)),
                        index_status={i: "unseen" for i in ids[0]}, n_resamples=99, n_bootstrap=99, rng=0)
    assert r["estimate"] == 0 and r["confidence_interval"] == [None, None] and r["ci_method"].startswith("none")
    assert r["clean_score"]["confidence_interval"] == [None, None]
    unseen = r["unseen_items_score"]
    assert unseen["reweighted"] is False and unseen["confidence_interval"][0] == 0 < unseen["confidence_interval"][1]


def test_reference_models_join_the_clean_model_in_the_comparison():
    ids = ["t1", "t2", "s1", "s2"]
    suspect = _outcomes("suspect", {"t1": 1, "t2": 1, "s1": 0, "s2": 0})
    clean = _outcomes("clean", {"t1": 0, "t2": 0, "s1": 0, "s2": 0})
    reference = _outcomes("reference[1]", {"t1": 1, "t2": 1, "s1": 0, "s2": 0})
    r = score_inflation(suspect, ids[:2], ids[2:], clean=clean, references=[reference], n_resamples=99,
                        n_bootstrap=99, rng=0)
    assert r["estimate"] == pytest.approx(0.5) and r["design"] == "suspect vs the mean of 2 clean models"


def test_seen_items_split_by_whether_their_answer_is_in_the_corpus_too():
    """OpenCompass's split: items found with their answer (input and label) vs found without it (input only);
    an ambiguous answer (too short to tell) is in neither, and without answer statuses neither group exists."""
    test, shadow = [f"t{i}" for i in range(6)], ["s1", "s2"]
    suspect = _outcomes("suspect", {"t0": 1, "t1": 1, "t2": 0, "t3": 1, "t4": 0, "t5": 1, "s1": 0, "s2": 1})
    status = {"t0": "seen", "t1": "seen", "t2": "seen", "t3": "seen", "t4": "unseen", "t5": "seen"}
    answers = {"t0": "seen", "t1": "seen", "t2": "unseen", "t3": "unseen", "t4": "seen", "t5": "ambiguous"}
    r = score_inflation(suspect, test, shadow, index_status=status, answer_status=answers, n_resamples=99,
                        n_bootstrap=99, rng=0)
    scores = r["scores"]["suspect"]
    assert (scores["test_seen_with_answer"]["n"], scores["test_seen_with_answer"]["mean"]) == (2, 1.0)  # t0, t1
    assert (scores["test_seen_without_answer"]["n"], scores["test_seen_without_answer"]["mean"]) == (2, 0.5)  # t2, t3
    assert scores["test_seen"]["n"] == 5 and scores["test_unseen"]["n"] == 1
    plain = score_inflation(suspect, test, shadow, index_status=status, n_resamples=99, n_bootstrap=99, rng=0)
    assert "test_seen_with_answer" not in plain["scores"]["suspect"]
    assert plain["estimate"] == r["estimate"]  # the split reports, it does not change the estimate


def test_an_answer_under_eight_words_says_nothing_and_is_ambiguous(tmp_path):
    """A short answer ("B", "42 apples") occurs whole almost anywhere: the answers' index may call it seen, but the
    split counts it in neither group; a long answer keeps the index's status."""
    import json

    from contaudit.analysis.analyze import answer_statuses
    from contaudit.index import build_index

    long_answer = "return sorted set of the numbers that appear in both lists given here"
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"text": f"so it is forty two apples in a basket, then {long_answer} ok"})
                                           + "\n")
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "short", "text": "forty two apples in a basket"}, {"id": "long", "text": long_answer},
        {"id": "absent", "text": "a completely different solution text that nobody wrote down anywhere"}]))
    index = build_index([tmp_path / "corpus.jsonl"], tmp_path / "answers.jsonl", tmp_path / "index").index
    assert {r["id"]: r["status"] for r in index.items}["short"] == "seen"  # found whole: the index's rule
    assert answer_statuses(tmp_path / "index", ["short", "long"]) == {"short": "ambiguous", "long": "seen",
                                                                      "absent": "unseen"}
    with pytest.raises(InputError, match=r"holds no answer for 1 of the 2 test items \(first: 'other'\)"):
        answer_statuses(tmp_path / "index", ["long", "other"])
