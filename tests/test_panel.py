"""Reference-panel tests and shift adjustment (contaudit.analysis.panel) against known answers."""

import numpy as np
import pytest
from scipy import stats

from contaudit.analysis.panel import adjusted_difference, covariate_overlap, panel_did, references_needed
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


def test_panel_did_against_a_hand_computed_t_prediction_interval():
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
    q = stats.t.ppf(0.95, 3)
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
