"""The decision rule (contaudit.analysis.verdict): one test per branch, design checks, the gate."""

from __future__ import annotations

import numpy as np
import pytest

from contaudit.analysis.did import DiDResult, memorization_did, perplexity_did

from contaudit.statistics import ConfidenceInterval
from contaudit.analysis.simulate import simulate_audit
from contaudit.analysis.verdict import (CONTAMINATED, INVALID_DESIGN, NO_EVIDENCE, SUSPECT, check_pairing,
                                        check_probe_balance, check_sample_sizes, check_shadow_comparability, decide,
                                        gate)
from contaudit.errors import InputError
from contaudit.protocol import AnalysisSettings

SETTINGS = AnalysisSettings()


def _result(statistic: float, pvalue: float, *, alternative: str, n=(100, 100), sd=(0.15, 0.15)) -> DiDResult:
    return DiDResult(statistic=statistic, pvalue=pvalue, confidence_interval=ConfidenceInterval(statistic - 0.01,
                                                                                                 statistic + 0.01),
                     null_distribution=np.zeros(1), effect_size=0.5, alternative=alternative, n=n, mean=(0.0, 0.0),
                     sd=sd, n_resamples=10_000, n_bootstrap=0, confidence_level=0.95, ci_method="none")


def ppl(statistic, pvalue, **kw):
    return _result(statistic, pvalue, alternative="less", **kw)


def mem(statistic, pvalue, **kw):
    return _result(statistic, pvalue, alternative="greater", **kw)


def _audit_verdict(*, checks=(), **simulation):
    audit = simulate_audit(n_test=120, n_shadow=120, n_seen=80, n_unseen=80, rng=5, **simulation)
    t, s = audit.test, audit.shadow
    opts = dict(n_resamples=2000, n_bootstrap=0, rng=0)
    p = perplexity_did(t.y_sus, t.y_clean, s.y_sus, s.y_clean, **opts)
    m = memorization_did(*audit.probes.split("exact_match"), **opts)
    return decide(p, m, list(checks), SETTINGS, memorization_metric="exact_match")


def test_contaminated_when_both_tests_agree_on_simulated_contamination():
    v = _audit_verdict(ppl_effect=0.1, mem_effect=0.35)
    assert v.label == CONTAMINATED
    assert all(t.counts for t in v.tests)
    assert "Both primary tests show contamination" in v.reasons[0]
    assert any("more familiar" in r for r in v.reasons)


def test_suspect_when_only_the_perplexity_test_shows_contamination():
    v = _audit_verdict(ppl_effect=0.1, mem_effect=0.0)
    assert v.label == SUSPECT
    assert [t.counts for t in v.tests] == [True, False]
    assert "Exactly one primary test" in v.reasons[0]


def test_suspect_when_only_the_memorization_test_shows_contamination():
    v = decide(ppl(0.0, 0.6), mem(0.3, 0.0001), [], SETTINGS, memorization_metric="exact_match")
    assert v.label == SUSPECT
    assert [t.counts for t in v.tests] == [False, True]


def test_no_evidence_reports_the_minimum_detectable_effect():
    v = _audit_verdict()
    assert v.label == NO_EVIDENCE
    assert "not proof of a clean model" in v.reasons[-1]
    assert v.minimum_detectable_effect["perplexity_did"] > 0
    assert v.minimum_detectable_effect["memorization_did"] > 0
    assert v.minimum_detectable_effect["alpha_per_test"] == pytest.approx(0.025)


def test_holm_correction_is_applied_before_the_verdict():
    # Unadjusted, 0.03 and 0.04 are both below alpha = 0.05; Holm makes them 0.06 and 0.06.
    v = decide(ppl(-0.1, 0.03), mem(0.3, 0.04), [], SETTINGS, memorization_metric="exact_match")
    assert [t.pvalue_holm for t in v.tests] == pytest.approx([0.06, 0.06])
    assert v.label == NO_EVIDENCE
    # 0.02 and 0.04 become 0.04 and 0.04: both still count.
    v = decide(ppl(-0.1, 0.02), mem(0.3, 0.04), [], SETTINGS, memorization_metric="exact_match")
    assert [t.pvalue_holm for t in v.tests] == pytest.approx([0.04, 0.04])
    assert v.label == CONTAMINATED


def test_a_significant_effect_below_the_protocol_minimum_does_not_count():
    v = decide(ppl(-0.005, 0.0001), mem(0.3, 0.0001), [], SETTINGS, memorization_metric="exact_match")
    assert v.label == SUSPECT
    assert not v.tests[0].above_minimum
    assert any("not shown to reach the protocol's minimum effect of 0.01" in r for r in v.reasons)


def test_an_effect_in_the_wrong_direction_does_not_count():
    v = decide(ppl(0.2, 0.001), mem(-0.3, 0.001), [], SETTINGS, memorization_metric="exact_match")
    assert v.label == NO_EVIDENCE
    assert not any(t.direction_ok for t in v.tests)
    assert any("points away from contamination" in r for r in v.reasons)


def test_without_probes_the_verdict_is_at_most_suspect():
    v = decide(ppl(-0.2, 0.0001), None, [], SETTINGS)
    assert v.label == SUSPECT
    assert len(v.tests) == 1 and v.tests[0].pvalue_holm == pytest.approx(0.0001)
    assert any("cannot be CONTAMINATED" in r for r in v.reasons)


def test_invalid_design_too_few_items():
    checks = check_sample_sizes({"test": 12, "shadow": 40}, {"test": 30, "shadow": 30})
    assert [c.passed for c in checks] == [False, True]
    v = decide(ppl(-0.2, 0.0001), mem(0.3, 0.0001), checks, SETTINGS, memorization_metric="exact_match")
    assert v.label == INVALID_DESIGN
    assert "Too few test items: 12 scored by both models, the protocol needs at least 30." in v.reasons
    assert v.tests  # still reported, for diagnosis


def test_invalid_design_unbalanced_probes():
    audit = simulate_audit(n_seen=80, n_unseen=80, imbalance=0.5, rng=1)
    seen = audit.probes.probe_set == "seen"
    words = audit.probes.n_words.astype(float)
    pooled = np.sqrt((words[seen].var(ddof=1) + words[~seen].var(ddof=1)) / 2)
    smd = (words[seen].mean() - words[~seen].mean()) / pooled
    checks = check_probe_balance({"length": smd, "rarity": 0.02}, threshold=0.1)
    assert [c.passed for c in checks] == [False, True]
    v = decide(ppl(-0.2, 0.0001), mem(0.3, 0.0001), checks, SETTINGS, memorization_metric="exact_match")
    assert v.label == INVALID_DESIGN
    assert "out of balance on length" in v.reasons[0]


def test_invalid_design_when_the_clean_model_sees_the_shadow_set_as_different():
    audit = simulate_audit(n_test=150, n_shadow=150, shadow_shift=0.5, rng=2)
    check = check_shadow_comparability(audit.test.y_clean, audit.shadow.y_clean)
    assert check.passed is False
    assert check.numbers["welch_pvalue"] < 0.05 and abs(check.numbers["hedges_g"]) > 0.2
    v = decide(ppl(-0.2, 0.0001), mem(0.3, 0.0001), [check], SETTINGS, memorization_metric="exact_match")
    assert v.label == INVALID_DESIGN
    assert "sees the shadow set as a different distribution" in v.reasons[0]


def test_shadow_comparability_passes_for_sets_from_one_distribution():
    audit = simulate_audit(n_test=150, n_shadow=150, rng=3)
    assert check_shadow_comparability(audit.test.y_clean, audit.shadow.y_clean).passed is True


def test_shadow_equivalence_rule_needs_enough_items_to_show_equivalence():
    rng = np.random.default_rng(4)
    big = check_shadow_comparability(rng.normal(2, 0.5, 2000), rng.normal(2, 0.5, 2000), rule="equivalence",
                                     margin=0.2, alpha=0.05)
    small = check_shadow_comparability(rng.normal(2, 0.5, 15), rng.normal(2, 0.5, 15), rule="equivalence",
                                       margin=0.2, alpha=0.05)
    assert big.passed is True and big.numbers["tost_pvalue"] < 0.05
    assert small.passed is False and "Equivalence of test and shadow" in small.detail
    with pytest.raises(InputError, match="`rule` must be 'difference' or 'equivalence'"):
        check_shadow_comparability([1, 2], [1, 2], rule="same")


def test_invalid_design_too_many_unpaired_items():
    check = check_pairing("test", 90, 10, max_fraction=0.05)
    assert check.passed is False
    assert "10 of 100 (10.0%; the protocol allows 5%)" in check.detail
    assert check_pairing("test", 99, 1, max_fraction=0.05).passed is True


def test_a_check_that_could_not_run_does_not_invalidate():
    checks = check_probe_balance({"rarity": None}, threshold=0.1)
    assert checks[0].passed is None
    v = decide(ppl(-0.2, 0.0001), mem(0.3, 0.0001), checks, SETTINGS, memorization_metric="exact_match")
    assert v.label == CONTAMINATED


def test_mde_of_exact_match_is_not_zero_when_nothing_was_reproduced():
    v = decide(ppl(0.0, 0.5), mem(0.0, 1.0, n=(50, 50), sd=(0.0, 0.0)), [], SETTINGS, memorization_metric="exact_match")
    assert v.label == NO_EVIDENCE
    z = 1.959963984540054 + 0.8416212335729143  # one-sided alpha 0.025, power 0.8
    assert v.minimum_detectable_effect["memorization_did"] == pytest.approx(z**2 / (50 + z**2))


@pytest.mark.parametrize("label, fail_on, code", [
    (NO_EVIDENCE, SUSPECT, 0), (SUSPECT, SUSPECT, 1), (CONTAMINATED, SUSPECT, 1),
    (NO_EVIDENCE, CONTAMINATED, 0), (SUSPECT, CONTAMINATED, 0), (CONTAMINATED, CONTAMINATED, 1),
    (INVALID_DESIGN, SUSPECT, 3), (INVALID_DESIGN, CONTAMINATED, 3),
])
def test_gate_exit_codes(label, fail_on, code):
    assert gate(label, fail_on) == code


def test_gate_rejects_an_unknown_threshold():
    with pytest.raises(InputError, match="`fail_on` must be SUSPECT or CONTAMINATED"):
        gate(SUSPECT, "NO_EVIDENCE")


def test_reasons_name_the_memorization_metric_and_its_unit():
    greedy = decide(ppl(-0.3, 0.0001), mem(0.3, 0.0001), [], SETTINGS, memorization_metric="exact_match")
    soft = decide(ppl(-0.3, 0.0001), mem(0.3, 0.0001), [], SETTINGS, memorization_metric="suffix_logprob")
    assert any("reproduces probes found in its training corpus more often" in r for r in greedy.reasons)
    assert any("more likely to reproduce the suffixes" in r and "nats/token" in r for r in soft.reasons)
    assert {t.name: t.unit for t in soft.tests}["memorization_did"] == "nats/token"


def test_a_true_effect_at_the_minimum_passes_rarely_not_half_the_time():
    """The minimum effect is judged on the interval, not the point estimate: an effect exactly at the minimum
    reaches it about (1 - level) / 2 of the time."""
    from contaudit.analysis.did import perplexity_did
    from contaudit.analysis.verdict import beyond_minimum

    rng = np.random.default_rng(8)
    passed, point = 0, 0
    n = 200
    for _ in range(n):
        clean_t, clean_s = rng.normal(2, 0.3, 60), rng.normal(2, 0.3, 60)
        sus_t, sus_s = clean_t - 0.05 + rng.normal(0, 0.1, 60), clean_s + rng.normal(0, 0.1, 60)
        res = perplexity_did(sus_t, clean_t, sus_s, clean_s, n_resamples=99, n_bootstrap=999, rng=rng)
        ci = (res.confidence_interval.low, res.confidence_interval.high)
        passed += beyond_minimum(res.statistic, ci, direction="negative", min_effect=0.05)
        point += abs(res.statistic) >= 0.05
    assert 0.3 < point / n < 0.7 and passed / n < 0.06, (point, passed)


def test_rule_alpha_is_the_inverse_of_the_rule_label():
    """For random recorded tests, the label the rule gives at alpha reaches a level exactly when
    rule_alpha (what the suite gate uses) is at most alpha."""
    from contaudit.analysis.verdict import CONTAMINATED, NO_EVIDENCE, SUSPECT, rule_alpha, rule_label

    rank = {NO_EVIDENCE: 0, SUSPECT: 1, CONTAMINATED: 2}
    rng = np.random.default_rng(0)
    for _ in range(500):
        tests = [{"pvalue_holm": float(rng.uniform(0, 0.2)), "direction_ok": bool(rng.random() < 0.8),
                  "above_minimum": bool(rng.random() < 0.8)} for _ in range(int(rng.integers(1, 3)))]
        ceiling = CONTAMINATED if len(tests) == 2 and rng.random() < 0.8 else SUSPECT
        for alpha in (0.001, 0.01, 0.025, 0.05, 0.1):
            counting = sum(t["pvalue_holm"] <= alpha and t["direction_ok"] and t["above_minimum"] for t in tests)
            label = rule_label(counting, ceiling)
            for reach in (SUSPECT, CONTAMINATED):
                assert (rank[label] >= rank[reach]) == (rule_alpha(tests, ceiling, reach) <= alpha)
