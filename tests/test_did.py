"""Estimators and tests of contaudit.analysis.did: against scipy, hand values and theory."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats

from contaudit.analysis.did import difference_in_means, dose_response, item_order_test, memorization_did, perplexity_did
from contaudit.statistics import hedges_g, holm, minimum_detectable_effect
from contaudit.analysis.simulate import simulate_audit
from contaudit.analysis.verdict import decide
from contaudit.errors import InputError
from contaudit.protocol import AnalysisSettings

X = np.array([2.1, 1.4, 3.3, 2.8])
Y = np.array([3.0, 3.9, 2.7, 4.4])


def _enumerated_pvalues(x, y):
    """Exact permutation p-values of mean(x) - mean(y) by listing every relabelling."""
    pooled = np.concatenate([x, y])
    observed = x.mean() - y.mean()
    null = []
    for idx in itertools.combinations(range(pooled.size), x.size):
        mask = np.zeros(pooled.size, bool)
        mask[list(idx)] = True
        null.append(pooled[mask].mean() - pooled[~mask].mean())
    null = np.array(null)
    eps = 1e-12
    less = np.mean(null <= observed + eps)
    greater = np.mean(null >= observed - eps)
    return less, greater, min(1.0, 2 * min(less, greater))


def test_exact_permutation_pvalue_against_enumeration():
    less, greater, two = _enumerated_pvalues(X, Y)
    # 70 relabellings < n_resamples, so scipy enumerates them: the p-value is exact.
    for alternative, expected in (("less", less), ("greater", greater), ("two-sided", two)):
        res = difference_in_means(X, Y, alternative=alternative, n_resamples=10_000, n_bootstrap=0, rng=0)
        assert res.pvalue == pytest.approx(expected, abs=1e-12)
    # By hand: the x-group sums <= the observed 9.6 are 9.0, 9.2, 9.3, 9.5 and 9.6 itself: 5 of 70 splits.
    assert less == pytest.approx(5 / 70)
    assert res.null_distribution.size == 70


def test_pvalue_and_bca_ci_match_scipy_with_the_same_seed():
    rng = np.random.default_rng(11)
    x, y = rng.normal(0, 1, 40), rng.normal(0.4, 1, 50)
    res = difference_in_means(x, y, alternative="less", n_resamples=5000, n_bootstrap=3000, rng=123)

    def stat(a, b, axis=-1):
        return a.mean(axis=axis) - b.mean(axis=axis)

    ref_rng = np.random.default_rng(123)
    perm = stats.permutation_test((x, y), stat, vectorized=True, n_resamples=5000, alternative="less", rng=ref_rng)
    boot = stats.bootstrap((x, y), stat, vectorized=True, n_resamples=3000, method="BCa", rng=ref_rng)
    assert res.pvalue == perm.pvalue
    assert res.statistic == pytest.approx(x.mean() - y.mean())
    assert tuple(res.confidence_interval) == pytest.approx(tuple(boot.confidence_interval))
    assert res.ci_method == "BCa"


def test_pvalue_close_to_welch_t_and_ci_close_to_normal_theory_for_large_samples():
    rng = np.random.default_rng(5)
    x, y = rng.normal(0, 1, 1000), rng.normal(0.1, 1.2, 1000)
    res = difference_in_means(x, y, alternative="less", n_resamples=10_000, n_bootstrap=4000, rng=1)
    welch = stats.ttest_ind(x, y, equal_var=False, alternative="less")
    assert res.pvalue == pytest.approx(welch.pvalue, abs=0.01)
    se = math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
    low, high = res.confidence_interval
    assert low == pytest.approx(res.statistic - 1.96 * se, abs=0.15 * se)
    assert high == pytest.approx(res.statistic + 1.96 * se, abs=0.15 * se)


def test_same_seed_same_result_and_pvalue_never_below_one_over_resamples_plus_one():
    a = difference_in_means(X * 10, Y, n_resamples=99, rng=7, alternative="less")
    b = difference_in_means(X * 10, Y, n_resamples=99, rng=7, alternative="less")
    assert a.pvalue == b.pvalue and tuple(a.confidence_interval) == tuple(b.confidence_interval)
    far = difference_in_means(np.arange(30.0), np.arange(30.0) + 100, alternative="less", n_resamples=99,
                              n_bootstrap=0, rng=0)
    assert far.pvalue == pytest.approx(1 / 100)


def test_constant_data_falls_back_to_percentile_ci():
    res = difference_in_means(np.zeros(20), np.zeros(20), alternative="greater", n_resamples=200,
                              n_bootstrap=500, rng=0)
    assert res.ci_method == "percentile"
    assert tuple(res.confidence_interval) == (0.0, 0.0)
    assert res.pvalue == 1.0
    assert math.isnan(res.effect_size)


def test_hedges_g_against_hand_computation():
    # mean diff = 2.4 - 3.5 = -1.1; sums of squares 2.06 and 1.86, so s_p^2 = 3.92 / 6;
    # J = 1 - 3 / (4 * 8 - 9) = 20/23.
    expected = (20 / 23) * (-1.1) / math.sqrt(3.92 / 6)
    assert hedges_g(X, Y) == pytest.approx(expected, rel=1e-12)
    assert hedges_g(X, Y) == pytest.approx(-1.1834, abs=1e-4)


def test_holm_against_hand_computed_values():
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.02, 0.04]).tolist() == pytest.approx([0.04, 0.04])
    assert holm([0.03, 0.04]).tolist() == pytest.approx([0.06, 0.06])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])
    assert holm([0.04]).tolist() == [0.04]


def test_minimum_detectable_effect_against_hand_computation():
    z = 1.6448536269514722 + 0.8416212335729143
    assert minimum_detectable_effect(1.0, 1.0, 100, 100, alpha=0.05) == pytest.approx(z * math.sqrt(0.02))
    assert minimum_detectable_effect(0.2, 0.4, 50, 80, alpha=0.025, power=0.9) == pytest.approx(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.9)) * math.sqrt(0.04 / 50 + 0.16 / 80))


def test_power_at_the_minimum_detectable_effect_is_about_80_percent():
    rng = np.random.default_rng(2024)
    n, sd, sims = 80, 1.0, 300
    mde = minimum_detectable_effect(sd, sd, n, n, alpha=0.05, power=0.8)
    hits = 0
    for _ in range(sims):
        x, y = rng.normal(0, sd, n), rng.normal(mde, sd, n)
        hits += difference_in_means(x, y, alternative="less", n_resamples=199, n_bootstrap=0, rng=rng).pvalue <= 0.05
    mc = 3 * math.sqrt(0.8 * 0.2 / sims)
    assert abs(hits / sims - 0.8) <= mc + 0.02


def test_perplexity_did_is_negative_when_the_suspect_knows_the_test_set():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(2, 0.5, 60)
    clean = difficulty + rng.normal(0, 0.05, 60)
    sus_test = difficulty[:30] - 0.3 + rng.normal(0, 0.05, 30)
    sus_shadow = difficulty[30:] - 0.1 + rng.normal(0, 0.05, 30)
    res = perplexity_did(sus_test, clean[:30], sus_shadow, clean[30:], n_resamples=999, n_bootstrap=999, rng=0)
    assert res.alternative == "less"
    assert res.statistic == pytest.approx((sus_test - clean[:30]).mean() - (sus_shadow - clean[30:]).mean())
    assert res.statistic < -0.15 and res.pvalue <= 0.001
    assert res.confidence_interval.high < 0


def test_memorization_did_is_positive_when_seen_probes_are_reproduced():
    seen_sus = np.array([1] * 12 + [0] * 18, float)
    seen_clean = np.array([1] * 1 + [0] * 29, float)
    unseen_sus = np.array([1] * 2 + [0] * 28, float)
    unseen_clean = np.array([1] * 1 + [0] * 29, float)
    res = memorization_did(seen_sus, seen_clean, unseen_sus, unseen_clean, n_resamples=2000, n_bootstrap=0, rng=0)
    assert res.alternative == "greater"
    assert res.statistic == pytest.approx((12 - 1) / 30 - (2 - 1) / 30)
    assert res.pvalue < 0.01


@pytest.mark.parametrize("kwargs, match", [
    ({"n_resamples": 0}, "`n_resamples` must be a positive integer"),
    ({"n_resamples": 2.5}, "`n_resamples` must be a positive integer"),
    ({"n_bootstrap": -1}, "`n_bootstrap` must be an integer >= 0"),
    ({"alternative": "lower"}, "`alternative` must be one of"),
    ({"confidence_level": 1.5}, "`confidence_level` must be a number strictly between 0 and 1"),
])
def test_bad_options_name_the_parameter_and_the_rule(kwargs, match):
    with pytest.raises(InputError, match=match):
        difference_in_means(X, Y, **kwargs)


def test_bad_data_is_rejected_with_a_clear_message():
    with pytest.raises(InputError, match="`x` must contain only finite values"):
        difference_in_means([1.0, np.nan, 2.0], Y)
    with pytest.raises(InputError, match="`y` must contain at least 2 observations"):
        difference_in_means(X, [1.0])
    with pytest.raises(InputError, match="`x` must be one-dimensional"):
        difference_in_means(np.ones((2, 2)), Y)
    with pytest.raises(InputError, match="`test` scores must be paired"):
        perplexity_did([1, 2, 3], [1, 2], [1, 2], [1, 2])
    with pytest.raises(InputError, match="`pvalues` must lie in"):
        holm([0.1, 1.2])


def test_dose_response_matches_scipy_spearman():
    rng = np.random.default_rng(3)
    occ = rng.geometric(0.3, 80)
    d = -0.05 * np.log1p(occ) + rng.normal(0, 0.1, 80)
    res = dose_response(occ, d)
    ref = stats.spearmanr(occ, d, alternative="less")
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.pvalue == pytest.approx(ref.pvalue)
    assert res.confidence_interval.low < res.statistic < res.confidence_interval.high
    assert math.isnan(dose_response(np.ones(10), d[:10]).statistic)


def test_item_order_single_shard_is_a_permutation_test():
    shuffled = np.array([-1005.0, -1002.0, -1010.0, -999.0, -1001.0, -1003.0, -1008.0, -1004.0, -1006.0])
    res = item_order_test([-1000.0], shuffled)
    # one shuffled order (-999) is at least as likely as the canonical one: (1 + 1) / (1 + 9)
    assert res.pvalue == pytest.approx(2 / 10)
    assert res.statistic == pytest.approx(-1000.0 - shuffled.mean())
    assert res.method == "permutation"


def test_item_order_sharded_test_is_the_stratified_randomisation_test():
    rng = np.random.default_rng(8)
    shuffled = rng.normal(-500, 3, (12, 20))
    canonical = shuffled.mean(axis=1) + rng.normal(2.0, 1.5, 12)
    res = item_order_test(canonical, shuffled, rng=0)
    assert res.statistic == pytest.approx(np.mean(canonical - shuffled.mean(axis=1)))
    assert res.method == "stratified randomisation (Monte Carlo)" and res.n_shards == 12 and res.n_permutations == 20
    assert 1 / 100_001 <= res.pvalue < 0.05 and res.null_distribution.size == 100_000
    with pytest.raises(InputError, match="`shuffled` must have shape"):
        item_order_test([1.0, 2.0], np.ones((3, 4)))


def _null_rates(n_audits: int, n_resamples: int, seed: int) -> dict[str, float]:
    """Rejection rates of each primary test, and of a SUSPECT-or-worse verdict, with no effect."""
    rng = np.random.default_rng(seed)
    settings = AnalysisSettings(min_effect_perplexity=0.0, min_effect_memorization=0.0)
    metrics = ("exact_match", "token_match_frac", "suffix_logprob")
    counts = {"perplexity": 0, **{m: 0 for m in metrics}, **{f"verdict[{m}]": 0 for m in ("exact_match", "suffix_logprob")}}
    for _ in range(n_audits):
        audit = simulate_audit(n_test=60, n_shadow=60, n_seen=40, n_unseen=40, rng=rng)
        t, s = audit.test, audit.shadow
        opts = dict(n_resamples=n_resamples, n_bootstrap=0, rng=rng)
        ppl = perplexity_did(t.y_sus, t.y_clean, s.y_sus, s.y_clean, **opts)
        mem = {m: memorization_did(*audit.probes.split(m), **opts) for m in metrics}
        counts["perplexity"] += ppl.pvalue <= settings.alpha
        for m, r in mem.items():
            counts[m] += r.pvalue <= settings.alpha
        for m in ("exact_match", "suffix_logprob"):  # SUSPECT or worse, with either primary metric
            counts[f"verdict[{m}]"] += decide(ppl, mem[m], [], settings, memorization_metric=m).label != "NO_EVIDENCE"
    return {k: v / n_audits for k, v in counts.items()}


def test_false_positive_rate_of_each_test_is_at_most_alpha_under_no_effect():
    start = time.perf_counter()
    n = 1000
    rates = _null_rates(n, n_resamples=199, seed=20240601)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)  # alpha + 3 Monte Carlo standard errors
    for name, rate in rates.items():
        assert rate <= bound, (name, rate)
    # The perplexity test is on continuous data, so it should also not be far below alpha.
    assert rates["perplexity"] >= 0.05 - 3 * math.sqrt(0.05 * 0.95 / n)
    assert time.perf_counter() - start < 60


def test_power_rises_with_the_planted_effect():
    rng = np.random.default_rng(77)
    sims = 150
    power = {"perplexity": [], "memorization": []}
    for ppl_effect, mem_effect in ((0.0, 0.0), (0.02, 0.08), (0.04, 0.18), (0.08, 0.35)):
        hits_p = hits_m = 0
        for _ in range(sims):
            audit = simulate_audit(n_test=100, n_shadow=100, n_seen=60, n_unseen=60, ppl_effect=ppl_effect,
                                   mem_effect=mem_effect, rng=rng)
            t, s = audit.test, audit.shadow
            opts = dict(n_resamples=199, n_bootstrap=0, rng=rng)
            hits_p += perplexity_did(t.y_sus, t.y_clean, s.y_sus, s.y_clean, **opts).pvalue <= 0.05
            hits_m += memorization_did(*audit.probes.split("exact_match"), **opts).pvalue <= 0.05
        power["perplexity"].append(hits_p / sims)
        power["memorization"].append(hits_m / sims)
    slack = 3 * math.sqrt(0.25 / sims)
    for name, curve in power.items():
        assert curve[0] <= 0.05 + slack, (name, curve)
        assert all(b >= a - slack for a, b in zip(curve, curve[1:])), (name, curve)
        assert curve[-1] >= 0.9, (name, curve)
        assert curve[-1] > curve[0] + 0.5, (name, curve)


@pytest.mark.slow
def test_false_positive_rate_and_ci_coverage_full():
    """5,000 null audits with 999 permutations each; BCa coverage of a planted effect."""
    n = 5000
    rates = _null_rates(n, n_resamples=999, seed=7)
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / n)
    for name, rate in rates.items():
        assert rate <= bound, (name, rate)
    rng = np.random.default_rng(99)
    covered, sims = 0, 400
    for _ in range(sims):
        x, y = rng.normal(-0.05, 0.15, 100), rng.normal(0.0, 0.15, 100)
        res = difference_in_means(x, y, alternative="less", n_resamples=99, n_bootstrap=1999, rng=rng)
        covered += res.confidence_interval.low <= -0.05 <= res.confidence_interval.high
    assert abs(covered / sims - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / sims)


def test_standardized_mean_difference_by_hand_and_at_zero_variance():
    from contaudit.statistics import standardized_mean_difference as smd

    # means 2 and 3, sample variances 1 and 1: (2 - 3) / sqrt((1 + 1) / 2) = -1
    assert smd([1, 2, 3], [2, 3, 4]) == pytest.approx(-1.0)
    a, b = [1.0, 4.0, 2.5, 7.0], [3.0, 3.5, 9.0]
    pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert smd(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled)
    assert smd([2, 2], [2, 2]) == 0.0  # constant and equal: no difference
    assert smd([3, 3], [2, 2]) == np.inf and smd([2, 2], [3, 3]) == -np.inf  # constant and different: unbounded
    assert np.isnan(smd([1], [1, 2]))  # a group of one has no variance


@pytest.mark.parametrize("p,plain,named", [
    (None, "—", "p n/a"), (0.00005, "< 0.0001", "p < 0.0001"), (0.0034, "0.0034", "p = 0.0034"),
    (0.04567, "0.046", "p = 0.046"), (0.5, "0.500", "p = 0.500"),
])
def test_format_p(p, plain, named):
    from contaudit.statistics import format_p

    assert format_p(p) == plain and format_p(p, named=True) == named
