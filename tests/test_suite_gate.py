"""The suite gate: a test per benchmark (its gate p-value), and Holm across them."""

from __future__ import annotations

import pytest
from scipy import stats

from contaudit.statistics import holm
from contaudit.analysis.verdict import gate
from contaudit.suite.gate import gate_pvalue, suite_gate


def _verdict(label, tests, ceiling="CONTAMINATED"):
    return {"label": label, "ceiling": ceiling, "tests": [
        {"name": n, "pvalue_holm": p, "direction_ok": d, "above_minimum": m} for n, p, d, m in tests]}


def _label_at(v: dict, alpha: float) -> str:
    """The label the decision rule gives at ``alpha`` (what analysis/verdict.py decides)."""
    counting = sum(t["pvalue_holm"] <= alpha and t["direction_ok"] and t["above_minimum"] for t in v["tests"])
    if counting == 2 and v["ceiling"] == "CONTAMINATED":
        return "CONTAMINATED"
    return "SUSPECT" if counting else "NO_EVIDENCE"


@pytest.mark.parametrize("tests, ceiling", [
    ([("perplexity_did", 0.004, True, True), ("memorization_did", 0.03, True, True)], "CONTAMINATED"),
    ([("perplexity_did", 0.004, True, True), ("memorization_did", 0.03, True, True)], "SUSPECT"),
    ([("perplexity_did", 0.004, False, True), ("memorization_did", 0.03, True, True)], "CONTAMINATED"),
    ([("perplexity_did", 0.2, True, True), ("memorization_did", 0.001, True, False)], "CONTAMINATED"),
    ([("perplexity_did", 0.01, True, True)], "SUSPECT"),
    ([("item_order", 0.02, True, True)], "SUSPECT"),
])
def test_the_gate_pvalue_is_the_smallest_alpha_at_which_the_verdict_reaches_fail_on(tests, ceiling):
    v = _verdict("NO_EVIDENCE", tests, ceiling)
    for fail_on in ("SUSPECT", "CONTAMINATED"):
        p = gate_pvalue(v, fail_on)
        for alpha in (0.0005, 0.001, 0.004, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5):
            reached = gate(_label_at(v, alpha), fail_on) == 1
            assert reached == (p <= alpha), (fail_on, alpha, p)
    assert gate_pvalue(_verdict("INVALID_DESIGN", tests), "SUSPECT") is None


def test_holm_across_benchmarks_controls_the_suite_and_none_takes_verdicts_as_they_stand():
    strong = _verdict("CONTAMINATED", [("perplexity_did", 0.001, True, True), ("memorization_did", 0.002, True, True)])
    weak = _verdict("CONTAMINATED", [("perplexity_did", 0.03, True, True), ("memorization_did", 0.04, True, True)])
    clean = _verdict("NO_EVIDENCE", [("perplexity_did", 0.6, True, True), ("memorization_did", 0.5, False, True)])
    verdicts = {"a": strong, "b": weak, "c": clean}
    g = suite_gate(verdicts, fail_on="CONTAMINATED", alpha=0.05)
    adjusted = holm([0.002, 0.04, 1.0]).tolist()
    assert [b.adjusted for b in g.benchmarks] == adjusted
    assert [b.fails for b in g.benchmarks] == [True, False, False]  # b reads CONTAMINATED but 0.08 > 0.05
    assert g.exit_code == 1 and "Holm" in g.rule
    none = suite_gate(verdicts, fail_on="CONTAMINATED", alpha=0.05, correction="none")
    assert [b.fails for b in none.benchmarks] == [True, True, False]
    assert suite_gate({"c": clean}, fail_on="SUSPECT", alpha=0.05).exit_code == 0
    invalid = _verdict("INVALID_DESIGN", [("perplexity_did", 0.001, True, True)])
    assert suite_gate({"c": clean, "x": invalid}, fail_on="SUSPECT", alpha=0.05).exit_code == 3
    assert suite_gate({"a": strong, "x": invalid}, fail_on="SUSPECT", alpha=0.05).exit_code == 1


def test_an_inconclusive_benchmark_neither_passes_nor_fails_by_pvalue():
    strong = _verdict("CONTAMINATED", [("perplexity_did", 0.001, True, True), ("memorization_did", 0.002, True, True)])
    clean = _verdict("NO_EVIDENCE", [("perplexity_did", 0.6, True, True), ("memorization_did", 0.5, False, True)])
    # an INCONCLUSIVE design whose tests look strong (diagnosis only): no gate p-value, p = 1 in Holm
    unsure = _verdict("INCONCLUSIVE", [("perplexity_did", 0.0001, True, True), ("memorization_did", 0.0001, True, True)],
                      "INCONCLUSIVE")
    assert gate_pvalue(unsure, "SUSPECT") is None
    g = suite_gate({"c": clean, "u": unsure}, fail_on="SUSPECT", alpha=0.05)
    assert g.exit_code == 4 and [b.fails for b in g.benchmarks] == [False, False]
    assert [b.adjusted for b in g.benchmarks] == [pytest.approx(1.0), None] and "INCONCLUSIVE" in g.rule
    assert suite_gate({"c": clean, "u": unsure}, fail_on="SUSPECT", alpha=0.05, inconclusive_fails=True).exit_code == 1
    assert suite_gate({"a": strong, "u": unsure}, fail_on="SUSPECT", alpha=0.05).exit_code == 1
    invalid = _verdict("INVALID_DESIGN", [("perplexity_did", 0.001, True, True)])
    assert suite_gate({"u": unsure, "x": invalid}, fail_on="SUSPECT", alpha=0.05).exit_code == 3


def test_the_holm_gate_keeps_the_familywise_error_of_a_clean_suite_at_alpha():
    """K benchmarks of a clean model (uniform p-values): how often does any fail the gate?"""
    import numpy as np

    rng = np.random.default_rng(7)
    k, runs, alpha = 10, 4000, 0.05
    failed = {"holm": 0, "none": 0}
    for _ in range(runs):
        verdicts = {f"b{i}": _verdict("NO_EVIDENCE", [("perplexity_did", float(p), True, True)], "SUSPECT")
                    for i, p in enumerate(rng.uniform(size=k))}
        for v in verdicts.values():
            v["label"] = _label_at(v, alpha)
        for correction in failed:
            failed[correction] += suite_gate(verdicts, fail_on="SUSPECT", alpha=alpha,
                                             correction=correction).exit_code == 1
    holm_rate, none_rate = failed["holm"] / runs, failed["none"] / runs
    assert stats.binomtest(failed["holm"], runs, alpha, alternative="greater").pvalue > 0.01, holm_rate
    assert abs(none_rate - (1 - (1 - alpha) ** k)) < 0.03, none_rate  # 40 % without a correction
