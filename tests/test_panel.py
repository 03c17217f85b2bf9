"""Reference-panel tests and shift adjustment (contaudit.analysis.panel) against known answers."""

import numpy as np
import pytest
from scipy import stats

from contaudit.analysis.panel import (_heavy_null, adjusted_difference, common_support_adjustment, covariate_overlap,
                                      panel_did, references_needed, robust_prediction_pvalue)
from contaudit.analysis.simulate import panel_error_rates, simulate_model_panel
from contaudit.errors import InputError


def test_adjusted_difference_without_covariates_is_the_difference_in_means():
    rng = np.random.default_rng(1)
    y, g = rng.normal(size=30), np.arange(30) < 12
    res = adjusted_difference(y, g)
    assert res.statistic == pytest.approx(y[g].mean() - y[~g].mean()) and res.raw == pytest.approx(res.statistic)


def test_adjusted_difference_against_frisch_waugh_lovell():
    """The group coefficient equals the slope of residualized y on residualized group (FWL theorem)."""
    rng = np.random.default_rng(2)
    g = np.arange(60) < 25
    x = rng.normal(size=60) + 0.8 * g
    y = 1.5 * x - 0.3 * g + rng.normal(0, 0.2, 60)
    res = adjusted_difference(y, g, {"x": x})
    ry = y - np.polyval(np.polyfit(x, y, 1), x)
    rg = g - np.polyval(np.polyfit(x, g.astype(float), 1), x)
    assert res.statistic == pytest.approx(stats.linregress(rg, ry).slope, abs=1e-10)
    assert res.statistic == pytest.approx(-0.3, abs=0.15) and abs(res.raw - res.statistic) > 0.5


def test_panel_did_against_a_hand_computed_prediction_interval():
    rng = np.random.default_rng(3)
    g = np.arange(40) < 20
    refs = rng.normal(size=(4, 40))
    sus = rng.normal(size=40) - 0.8 * g
    res = panel_did(sus, refs, g, confidence_level=0.9)
    effects = np.array([m[g].mean() - m[~g].mean() for m in refs])
    excess = (sus[g].mean() - sus[~g].mean()) - effects.mean()
    scale = effects.std(ddof=1) * np.sqrt(1 + 1 / 4)
    assert res.statistic == pytest.approx(excess)
    assert res.pvalue_t == pytest.approx(stats.t.cdf(excess / scale, 3))
    assert res.pvalue == max(res.pvalue_t, res.pvalue_heavy)
    heavy = _heavy_null(4)  # the Student-t(2) pivot's draws
    assert res.pvalue_heavy == pytest.approx((1 + np.sum(heavy >= -excess / scale)) / (1 + heavy.size))
    q = max(stats.t.ppf(0.95, 3), np.quantile(heavy, 0.95))
    assert tuple(res.confidence_interval) == pytest.approx((excess - q * scale, excess + q * scale))
    assert res.reference_sd == pytest.approx(effects.std(ddof=1))


def test_panel_rank_pvalue_counts_the_suspect_itself():
    g = np.arange(10) < 5
    refs = np.array([np.where(g, -d, 0.0) for d in (0.1, 0.2, 0.3, 0.5)])  # effects -0.1 .. -0.5
    sus = np.where(g, -0.4, 0.0)
    res = panel_did(sus, refs, g, method="rank")
    assert res.pvalue == res.pvalue_rank == pytest.approx(2 / 5)  # only -0.5 is at least as extreme, plus itself
    greater = panel_did(-sus, -refs, g, method="rank", alternative="greater")
    assert greater.pvalue == pytest.approx(2 / 5)


def _pivots(draw, n_refs: int, n: int, rng) -> np.ndarray:
    x = draw(rng, (n, n_refs + 1))
    refs = x[:, 1:]
    return (x[:, 0] - refs.mean(1)) / (refs.std(1, ddof=1) * np.sqrt(1 + 1 / n_refs))


def test_heavy_tailed_null_against_an_independent_simulation():
    """The t(2) pivot's tail matches a fresh simulation with another seed (a different stream)."""
    rng = np.random.default_rng(11)
    fresh = _pivots(lambda r, shape: r.standard_t(2, shape), 5, 200_000, rng)
    for q in (2.0, 4.0, 8.0):
        _, p_heavy = robust_prediction_pvalue(q, 5)
        expected = np.mean(fresh >= q)
        assert p_heavy == pytest.approx(expected, rel=4 * np.sqrt((1 - expected) / (expected * 200_000)) + 0.01)


@pytest.mark.parametrize("spread", ["normal", "t3", "outliers"])
@pytest.mark.parametrize("n_refs", [3, 9, 19])
def test_robust_pvalue_holds_its_level_at_the_deep_levels(spread, n_refs):
    """Independent clean panels (every draw a fresh set of models): rejections at alpha/2 and alpha/(2K),
    K = 5, stay within binomial error of nominal, where the t test alone rejects 2-14x too often."""
    draws = {"normal": lambda r, s: r.normal(size=s),
             "t3": lambda r, s: r.standard_t(3, s),
             "outliers": lambda r, s: np.where(r.random(s) < 1 / 8, 5.0, 1.0) * r.normal(size=s)}
    n = 60_000
    pivots = _pivots(draws[spread], n_refs, n, np.random.default_rng(n_refs))
    p_normal, p_heavy = robust_prediction_pvalue(pivots, n_refs)
    p = np.maximum(p_normal, p_heavy)
    for level in (0.025, 0.005):
        bound = level + 3 * np.sqrt(level * (1 - level) / n)
        assert np.mean(p <= level) <= bound, (spread, n_refs, level, np.mean(p <= level))


def test_references_with_one_common_effect_give_the_rank_pvalue():
    """No spread between references: a pivot would give p = 0 to any excess; the rank p-value stands instead."""
    g = np.arange(10) < 5
    refs = np.zeros((4, 10))  # e.g. exact match 0 on every probe for every reference
    sus = np.where(g, 0.2, 0.0)
    res = panel_did(sus, refs, g, alternative="greater")
    assert res.pvalue == res.pvalue_rank == pytest.approx(1 / 5)


def test_references_needed_for_the_rank_test():
    assert references_needed(0.05) == 19 and references_needed(0.05, n_tests=2) == 39
    assert references_needed(0.1) == 9


def test_covariate_overlap_and_smd():
    g = np.arange(200) < 100
    x = np.r_[np.linspace(0, 1, 100), np.linspace(0, 1, 100)]
    same = covariate_overlap(g, {"x": x})
    assert same.smd["x"] == pytest.approx(0.0) and same.share_in_support["x"] > 0.95
    apart = covariate_overlap(g, {"x": x + 5 * g})
    assert apart.share_in_support["x"] == 0.0 and apart.worst == 0.0


def test_panel_did_rejects_bad_input():
    g = np.arange(10) < 5
    with pytest.raises(InputError, match="shape"):
        panel_did(np.zeros(10), np.zeros((3, 9)), g)
    with pytest.raises(InputError, match="at least 2 reference models"):
        panel_did(np.zeros(10), np.zeros((1, 10)), g)
    with pytest.raises(InputError, match="boolean"):
        panel_did(np.zeros(10), np.zeros((3, 10)), np.arange(10))
    with pytest.raises(InputError, match="`method`"):
        panel_did(np.zeros(10), np.zeros((3, 10)), g, method="z")


def test_simulated_seed_effects_inflate_the_item_test_but_not_the_panel():
    """Clean models whose seed effects interact with a shift: the item permutation test
    flags far more than alpha; the panel's t test stays near it (independent nulls)."""
    rates = panel_error_rates(n_audits=150, effects=(0.0, 0.1), n_references=5, n_permutations=199, rng=7)
    null, planted = rates[0.0], rates[0.1]
    assert null["item_permutation"] > 0.15  # the current test, inflated
    assert null["panel_t"] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 150)
    assert planted["panel_t"] > 0.8  # and the panel keeps power against a real effect


def test_simulated_panel_plants_the_effect_on_the_suspects_test_items():
    a = simulate_model_panel(effect=0.0, rng=3)
    b = simulate_model_panel(effect=0.2, rng=3)
    diff = a.scores - b.scores
    assert np.allclose(diff[0, a.is_test], 0.2) and np.allclose(diff[0, ~a.is_test], 0) and np.allclose(diff[1:], 0)


def test_a_large_shift_trims_items_instead_of_dropping_the_difficulty_covariate():
    """Shift 1.5 SD, a suspect whose difficulty slope differs: dropping the covariate (the old rule) flags the
    clean suspect; adjusting on the items in common support keeps the rate near alpha."""
    rng = np.random.default_rng(5)
    hits = {"trim": 0, "drop": 0}
    n = 300
    for _ in range(n):
        sim = simulate_model_panel(n_models=6, shift=1.5, suspect_slope=0.1, rng=rng)
        s, g = sim.scores, sim.is_test
        adj = common_support_adjustment(g, {"difficulty": s.mean(axis=0)}, min_overlap=0.8)
        keep = adj.keep if adj.keep is not None else np.ones(g.size, bool)
        assert adj.covariates and not adj.left_out  # kept; trimmed where its overlap is short
        trimmed = panel_did(s[0, keep], s[1:, keep], g[keep], covariates={"difficulty": s.mean(axis=0)[keep]})
        dropped = panel_did(s[0], s[1:], g)
        hits["trim"] += trimmed.pvalue <= 0.05
        hits["drop"] += dropped.pvalue <= 0.05
    assert hits["drop"] / n > 0.3 and hits["trim"] / n <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n), hits


def test_common_support_adjustment_falls_back_when_nothing_overlaps():
    g = np.arange(40) < 20
    x = np.arange(40.0)
    adj = common_support_adjustment(g, {"x": x, "noise": np.tile([0.0, 1.0], 20)}, min_overlap=0.8)
    assert adj.keep is None and adj.left_out == ["x"] and list(adj.covariates) == ["noise"]


def test_a_design_without_shift_trims_nothing():
    rng = np.random.default_rng(0)
    g = np.arange(400) < 200
    adj = common_support_adjustment(g, {k: rng.normal(size=400) for k in "abc"}, min_overlap=0.8)
    assert adj.keep is None and adj.n_trimmed == 0 and len(adj.covariates) == 3
