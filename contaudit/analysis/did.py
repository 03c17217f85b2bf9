"""Difference-in-differences estimators and the tests behind the verdict.

Every function here looks like a scipy.stats function: data first, keyword-only
options (``n_resamples``, ``alternative``, ``confidence_level``, ``rng``), a private
validation helper that runs first, and a result dataclass with ``statistic``,
``pvalue``, ``confidence_interval`` as ``(low, high)`` and, where there is one, the
``null_distribution``.

The two primary tests (docs/analysis.md):

* :func:`perplexity_did` -- paired differences ``d_i = y_sus(i) - y_clean(i)`` of mean
  NLL, then ``mean_test d - mean_shadow d``; negative under contamination.
* :func:`memorization_did` -- paired differences ``e_i = c_sus(i) - c_clean(i)`` of a
  completion score, then ``mean_seen e - mean_unseen e``; positive under contamination.

Both are a :func:`difference_in_means` of two independent samples: a permutation test
of the set labels (scipy.stats.permutation_test) and a BCa bootstrap CI that resamples
items within each set (scipy.stats.bootstrap). Supporting evidence:
:func:`dose_response` (Spearman) and :func:`item_order_test` (Oren et al. 2023).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from contaudit.errors import InputError
from contaudit.statistics import (ConfidenceInterval, as_sample, check_alternative, check_int, check_level,
                                  detection_z, hedges_g, json_number)


@dataclass
class DiDResult:
    """Result of :func:`difference_in_means` and the DiD tests built on it.

    Attributes
    ----------
    statistic : float
        ``mean(x) - mean(y)``.
    pvalue : float
        Permutation p-value for ``alternative``.
    confidence_interval : ConfidenceInterval
        Bootstrap CI of the statistic (``nan`` ends when ``n_bootstrap=0``).
    null_distribution : numpy.ndarray
        The statistic under each permutation of the labels.
    effect_size : float
        Hedges' g of ``x`` against ``y`` (``nan`` when both have zero variance).
    alternative : str
        The alternative hypothesis tested.
    n : tuple of int
        ``(len(x), len(y))``.
    mean, sd : tuple of float
        Per-sample means and standard deviations (ddof=1).
    n_resamples, n_bootstrap : int
        Permutations and bootstrap resamples used.
    confidence_level : float
    ci_method : str
        ``"BCa"``, ``"percentile"`` (fallback when BCa is undefined, e.g. on
        constant data) or ``"none"``.
    """

    statistic: float
    pvalue: float
    confidence_interval: ConfidenceInterval
    null_distribution: np.ndarray = field(repr=False)
    effect_size: float
    alternative: str
    n: tuple[int, int]
    mean: tuple[float, float]
    sd: tuple[float, float]
    n_resamples: int
    n_bootstrap: int
    confidence_level: float
    ci_method: str

    def to_dict(self) -> dict:
        """JSON-ready fields (the null distribution is left out; ``nan`` becomes None)."""
        return {
            "estimate": json_number(self.statistic),
            "pvalue": json_number(self.pvalue),
            "confidence_interval": self.confidence_interval.to_list(),
            "confidence_level": self.confidence_level,
            "ci_method": self.ci_method,
            "hedges_g": json_number(self.effect_size),
            "alternative": self.alternative,
            "n": list(self.n),
            "mean": [json_number(m) for m in self.mean],
            "sd": [json_number(s) for s in self.sd],
            "n_resamples": self.n_resamples,
            "n_bootstrap": self.n_bootstrap,
        }


@dataclass
class CorrelationResult:
    """Result of :func:`dose_response`: Spearman's rho with a Fisher-z CI."""

    statistic: float
    pvalue: float
    confidence_interval: ConfidenceInterval
    n: int
    alternative: str

    def to_dict(self) -> dict:
        return {"rho": json_number(self.statistic), "pvalue": json_number(self.pvalue),
                "confidence_interval": self.confidence_interval.to_list(),
                "n": self.n, "alternative": self.alternative}


@dataclass
class ItemOrderResult:
    """Result of :func:`item_order_test`.

    ``statistic`` is the mean over shards of ``canonical - mean(shuffled)`` in nats
    (positive when the published order is more likely than shuffled orders).
    ``null_distribution`` holds the statistic under each assignment of "published" to
    one of each shard's orders: all ``(n_permutations + 1) ** n_shards`` of them when
    ``method`` ends in "(exact)" or is "permutation" (one shard), else the Monte Carlo
    draws. ``confidence_interval`` inverts the test for a constant shift (ends may be
    infinite).
    """

    statistic: float
    pvalue: float
    confidence_interval: ConfidenceInterval
    null_distribution: np.ndarray = field(repr=False)
    n_shards: int
    n_permutations: int
    method: str
    alternative: str

    def to_dict(self) -> dict:
        return {"estimate": json_number(self.statistic), "pvalue": json_number(self.pvalue),
                "confidence_interval": self.confidence_interval.to_list(),
                "n_shards": self.n_shards, "n_permutations": self.n_permutations, "method": self.method,
                "alternative": self.alternative}


def _did_iv(x, y, alternative, n_resamples, n_bootstrap, confidence_level, rng):
    """Validate the inputs of :func:`difference_in_means`."""
    x = as_sample(x, "x")
    y = as_sample(y, "y")
    alternative = check_alternative(alternative)
    n_resamples = check_int(n_resamples, "n_resamples", minimum=1)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", minimum=0)
    confidence_level = check_level(confidence_level, "confidence_level")
    return x, y, alternative, n_resamples, n_bootstrap, confidence_level, np.random.default_rng(rng)


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _bootstrap_ci(x, y, *, n_bootstrap, confidence_level, rng) -> tuple[ConfidenceInterval, str]:
    """BCa CI of ``mean(x) - mean(y)`` resampling within each sample; percentile if BCa is undefined."""
    if n_bootstrap == 0:
        return ConfidenceInterval(float("nan"), float("nan")), "none"
    with warnings.catch_warnings():
        # Constant data makes BCa's acceleration 0/0; scipy warns and returns nan.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.bootstrap((x, y), _mean_difference, n_resamples=n_bootstrap, vectorized=True,
                              confidence_level=confidence_level, method="BCa", rng=rng)
    low, high = res.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
        return ConfidenceInterval(float(low), float(high)), "BCa"
    tail = (1 - confidence_level) / 2
    dist = res.bootstrap_distribution
    return ConfidenceInterval(float(np.quantile(dist, tail)), float(np.quantile(dist, 1 - tail))), "percentile"


def difference_in_means(x, y, *, alternative: str = "two-sided", n_resamples: int = 10_000,
                        n_bootstrap: int = 10_000, confidence_level: float = 0.95, rng=None) -> DiDResult:
    """Test and estimate ``mean(x) - mean(y)`` for two independent samples.

    Parameters
    ----------
    x, y : array_like
        One-dimensional samples (at least two finite values each).
    alternative : {'two-sided', 'less', 'greater'}
        ``'less'``: the alternative is ``mean(x) < mean(y)``.
    n_resamples : int
        Random permutations of the sample labels for the p-value
        (scipy.stats.permutation_test; exact when this exceeds the number of
        distinct relabellings). The p-value counts the observed labelling, so it is
        never below ``1 / (n_resamples + 1)``.
    n_bootstrap : int
        Bootstrap resamples for the BCa CI, resampling within each sample; 0 skips
        the CI (its ends are ``nan``).
    confidence_level : float
        Level of the two-sided CI.
    rng : int, numpy.random.Generator or None
        Seed or generator; the same seed gives the same result.

    Returns
    -------
    DiDResult

    Examples
    --------
    >>> res = difference_in_means([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], alternative="less", rng=0)
    >>> res.statistic, round(res.pvalue, 3)
    (-3.0, 0.05)
    """
    x, y, alternative, n_resamples, n_bootstrap, confidence_level, rng = _did_iv(
        x, y, alternative, n_resamples, n_bootstrap, confidence_level, rng)
    perm = stats.permutation_test((x, y), _mean_difference, permutation_type="independent", vectorized=True,
                                  n_resamples=n_resamples, alternative=alternative, rng=rng)
    ci, ci_method = _bootstrap_ci(x, y, n_bootstrap=n_bootstrap, confidence_level=confidence_level, rng=rng)
    return DiDResult(
        statistic=float(_mean_difference(x, y)),
        pvalue=float(perm.pvalue),
        confidence_interval=ci,
        null_distribution=np.asarray(perm.null_distribution),
        effect_size=hedges_g(x, y),
        alternative=alternative,
        n=(x.size, y.size),
        mean=(float(x.mean()), float(y.mean())),
        sd=(float(x.std(ddof=1)), float(y.std(ddof=1))),
        n_resamples=n_resamples,
        n_bootstrap=n_bootstrap,
        confidence_level=confidence_level,
        ci_method=ci_method,
    )


def _paired_differences(suspect, clean, name: str) -> np.ndarray:
    suspect = as_sample(suspect, f"{name} (suspect)")
    clean = as_sample(clean, f"{name} (clean)")
    if suspect.shape != clean.shape:
        raise InputError(f"`{name}` scores must be paired: the suspect has {suspect.size} items, "
                         f"the clean model {clean.size}.")
    return suspect - clean


def perplexity_did(suspect_test, clean_test, suspect_shadow, clean_shadow, *, n_resamples: int = 10_000,
                   n_bootstrap: int = 10_000, confidence_level: float = 0.95, rng=None) -> DiDResult:
    """Perplexity difference-in-differences of per-item mean NLL (lower = more familiar).

    ``d_i = y_sus(i) - y_clean(i)`` for items scored by both models, then
    ``DiD = mean_test d - mean_shadow d``. Contamination of the test set makes it
    negative, so the permutation test is one-sided (``alternative='less'``).

    Parameters
    ----------
    suspect_test, clean_test : array_like
        Per-item scores of the test set, paired by position.
    suspect_shadow, clean_shadow : array_like
        Per-item scores of the shadow set, paired by position.
    n_resamples, n_bootstrap, confidence_level, rng
        As in :func:`difference_in_means`.
    """
    d_test = _paired_differences(suspect_test, clean_test, "test")
    d_shadow = _paired_differences(suspect_shadow, clean_shadow, "shadow")
    return difference_in_means(d_test, d_shadow, alternative="less", n_resamples=n_resamples,
                               n_bootstrap=n_bootstrap, confidence_level=confidence_level, rng=rng)


def memorization_did(suspect_seen, clean_seen, suspect_unseen, clean_unseen, *, n_resamples: int = 10_000,
                     n_bootstrap: int = 10_000, confidence_level: float = 0.95, rng=None) -> DiDResult:
    """Memorization difference-in-differences of a completion score (higher = reproduced).

    ``e_i = c_sus(i) - c_clean(i)`` per probe, then ``DiD = mean_seen e - mean_unseen e``.
    Memorization of the seen probes makes it positive (``alternative='greater'``).
    Works for exact match (0/1) and for the fraction of matching tokens alike.
    """
    e_seen = _paired_differences(suspect_seen, clean_seen, "seen")
    e_unseen = _paired_differences(suspect_unseen, clean_unseen, "unseen")
    return difference_in_means(e_seen, e_unseen, alternative="greater", n_resamples=n_resamples,
                               n_bootstrap=n_bootstrap, confidence_level=confidence_level, rng=rng)


def dose_response(occurrences, differences, *, alternative: str = "less", confidence_level: float = 0.95) -> CorrelationResult:
    """Spearman correlation between corpus occurrence counts and per-item differences.

    With ``differences = d_i`` (suspect minus clean NLL), contamination predicts that
    items duplicated more often in the corpus are more familiar to the suspect: a
    negative correlation (``alternative='less'``). The p-value is scipy's
    (t approximation); the CI uses Fisher's z with the Fieller et al. (1957)
    standard error ``1.03 / sqrt(n - 3)``. Returns ``nan`` statistics when either
    variable is constant.
    """
    x = as_sample(occurrences, "occurrences", min_size=4)
    y = as_sample(differences, "differences", min_size=4)
    alternative = check_alternative(alternative)
    confidence_level = check_level(confidence_level, "confidence_level")
    if x.shape != y.shape:
        raise InputError(f"`occurrences` and `differences` must have the same length; got {x.size} and {y.size}.")
    nan = float("nan")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return CorrelationResult(nan, nan, ConfidenceInterval(nan, nan), x.size, alternative)
    res = stats.spearmanr(x, y, alternative=alternative)
    rho = float(res.statistic)
    z = math.atanh(min(max(rho, -0.999999), 0.999999))
    half = stats.norm.ppf(0.5 + confidence_level / 2) * 1.03 / math.sqrt(x.size - 3)
    ci = ConfidenceInterval(math.tanh(z - half), math.tanh(z + half))
    return CorrelationResult(rho, float(res.pvalue), ci, x.size, alternative)


def _item_order_iv(canonical, shuffled, alternative, n_resamples, confidence_level):
    """Validate the inputs of :func:`item_order_test`; ``(canonical, shuffled)`` as 1-D and 2-D float arrays."""
    canonical = np.atleast_1d(np.asarray(canonical, dtype=float))
    shuffled = np.asarray(shuffled, dtype=float)
    if shuffled.ndim == 1:
        shuffled = shuffled[None, :]
    alternative = check_alternative(alternative)
    n_resamples = check_int(n_resamples, "n_resamples", minimum=1)
    confidence_level = check_level(confidence_level, "confidence_level")
    if canonical.ndim != 1 or shuffled.ndim != 2 or shuffled.shape[0] != canonical.size:
        raise InputError(f"`shuffled` must have shape (n_shards, n_permutations) with n_shards = len(canonical) = "
                         f"{canonical.size}; got {shuffled.shape}.")
    if shuffled.shape[1] < 1:
        raise InputError("`shuffled` needs at least one shuffled ordering per shard; got shape "
                         f"{shuffled.shape}.")
    if not (np.all(np.isfinite(canonical)) and np.all(np.isfinite(shuffled))):
        raise InputError("`canonical` and `shuffled` log-likelihoods must be finite; found "
                         f"{int(np.sum(~np.isfinite(canonical)) + np.sum(~np.isfinite(shuffled)))} nan/inf.")
    return canonical, shuffled, alternative, n_resamples, confidence_level


def _order_scores(canonical: np.ndarray, shuffled: np.ndarray) -> np.ndarray:
    """``(n_shards, m + 1)``: each order's log-likelihood minus the mean of the shard's other ``m`` orders.

    Column 0 is the published order, so ``scores[:, 0]`` is each shard's gap
    ``canonical - mean(shuffled)``. ``x_j - mean_{i != j} x_i = (m + 1) / m * (x_j - mean_i x_i)``.
    """
    values = np.column_stack([canonical, shuffled])  # (n, m + 1)
    m = shuffled.shape[1]
    return (values - values.mean(axis=1, keepdims=True)) * ((m + 1) / m)


def _order_rng(rng, canonical: np.ndarray, shuffled: np.ndarray) -> np.random.Generator:
    """``rng`` as a Generator; None: seeded from the data's bytes, so the same data give the same p-value."""
    if rng is not None:
        return np.random.default_rng(rng)
    digest = hashlib.sha256(canonical.tobytes() + shuffled.tobytes()).digest()
    return np.random.default_rng(np.random.SeedSequence(int.from_bytes(digest[:16], "little")))


def _order_null(scores: np.ndarray, n_resamples: int, rng, *, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """The statistic for each assignment of "published" to one order per shard, and how many shards keep theirs.

    ``exact``: all ``(m + 1) ** n`` assignments (the identity included); else
    ``n_resamples`` drawn independently and uniformly per shard.
    """
    n, k = scores.shape
    if exact:
        total, kept = scores[0].copy(), (np.arange(k) == 0).astype(np.int64)
        for s in range(1, n):  # outer sums, shard by shard
            total = (total[:, None] + scores[s][None, :]).ravel()
            kept = (kept[:, None] + (np.arange(k) == 0)[None, :]).ravel()
        return total / n, kept
    flat = scores.ravel()
    offsets = np.arange(n) * k
    null, kept = np.empty(n_resamples), np.empty(n_resamples, dtype=np.int64)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        picks = rng.integers(0, k, size=(stop - start, n))  # (B_chunk, n): which order plays "published"
        null[start:stop] = flat[picks + offsets].mean(axis=1)
        kept[start:stop] = np.count_nonzero(picks == 0, axis=1)
    return null, kept


def _order_ci(observed: float, null: np.ndarray, kept: np.ndarray, n: int, m: int, *, exact: bool,
              confidence_level: float) -> ConfidenceInterval:
    """CI of a constant shift ``delta`` of the published order's log-likelihood, by inverting the test.

    Under ``H_delta`` (the published order's log-likelihood minus ``delta`` is exchangeable
    with the shuffled ones) an assignment ``J`` that keeps ``k_J`` shards' published
    order has ``T_J - T_obs`` growing in ``delta`` with slope ``(n - k_J)(m + 1) / (n m)``,
    so it counts towards the upper tail exactly when ``delta >= delta_J`` with
    ``delta_J = (T_obs - T_J) n m / ((n - k_J)(m + 1))``. The ends are order statistics
    of the ``delta_J``; an end no assignment can reach is infinite.
    """
    moved = kept < n  # the identity (and Monte Carlo draws of it) count for every delta
    deltas = np.sort((observed - null[moved]) * (n * m) / ((n - kept[moved]) * (m + 1)))
    always = 1 + int(np.count_nonzero(~moved)) - (1 if exact else 0)  # exact: the identity is among the null
    denominator = null.size if exact else null.size + 1
    tail = (1 - confidence_level) / 2
    # p(delta) > tail  <=>  always + #{delta_J <= delta} > tail * denominator
    need = math.floor(tail * denominator * (1 + 1e-12)) - always + 1
    if need <= 0:
        return ConfidenceInterval(-math.inf, math.inf)
    if need > deltas.size:
        return ConfidenceInterval(math.nan, math.nan)
    return ConfidenceInterval(float(deltas[need - 1]), float(deltas[deltas.size - need]))


def item_order_test(canonical, shuffled, *, alternative: str = "greater", n_resamples: int = 100_000,
                    confidence_level: float = 0.95, rng=None) -> ItemOrderResult:
    """Oren et al. (2023) test: is the published item order more likely than shuffled ones?

    A model that saw a benchmark file verbatim prefers its items in the published
    (canonical) order. The test needs only the suspect model, and no model calls beyond
    the orders already scored.

    Under the null hypothesis the published order is exchangeable with the random
    orders, so in each shard it is equally likely to be any of that shard's ``m + 1``
    orders (the published one and ``m`` shuffled ones), independently across shards.
    The statistic is the mean over shards of the gap between the published order's
    log-likelihood and the mean of the shard's other ``m`` orders; its null
    distribution draws, in every shard, which of the ``m + 1`` orders plays
    "published" and recomputes the statistic (a stratified randomisation test). It is
    exact whatever the distribution of the log-likelihoods: no normality is assumed.

    Parameters
    ----------
    canonical : array_like, shape (n_shards,)
        Suspect-model log-likelihood (natural log, summed over tokens) of each shard:
        the shard's items concatenated in the published order.
    shuffled : array_like, shape (n_shards, n_permutations)
        Log-likelihood of the same shards with the items in random orders.
    alternative : {'greater', 'less', 'two-sided'}
        ``'greater'``: canonical orders are more likely (contamination).
        ``'two-sided'`` doubles the smaller one-sided p-value (at most 1).
    n_resamples : int
        When the ``(n_permutations + 1) ** n_shards`` assignments are at most this
        many, all of them are enumerated and the p-value is exact; otherwise this many
        are drawn at random and the p-value is ``(1 + #{T* >= T}) / (1 + n_resamples)``
        (for ``'greater'``), valid at every ``n_resamples`` and never below
        ``1 / (n_resamples + 1)``. One shard is always enumerated.
    confidence_level : float
        Level of the two-sided CI of a constant shift of the published order's
        log-likelihood, found by inverting the same test.
    rng : int, numpy.random.Generator or None
        Seed or generator of the Monte Carlo draws. None: a seed derived from the
        data themselves, so the same log-likelihoods always give the same p-value.

    Returns
    -------
    ItemOrderResult
        ``statistic``: the mean over shards of ``canonical - mean(shuffled)`` in nats
        (positive when the published order is more likely). With one shard the p-value
        is the permutation p-value ``(1 + #{shuffled >= canonical}) / (1 + n_permutations)``
        (for ``'greater'``), method ``"permutation"``; with several, method
        ``"stratified randomisation (exact)"`` or ``"... (Monte Carlo)"``.

    Notes
    -----
    ``confidence_interval`` holds the shifts ``delta`` that the two one-sided tests at
    level ``(1 - confidence_level) / 2`` do not reject when ``delta`` is subtracted from
    every published order's log-likelihood (test inversion, as for a Hodges-Lehmann
    interval). An end no assignment can reach is infinite (few shards and orders), and
    is written as None in JSON.

    Examples
    --------
    Two shards with one shuffled order each: the 4 assignments give statistics
    ``(3 + 1) / 2``, ``(3 - 1) / 2``, ``(-3 + 1) / 2`` and ``(-3 - 1) / 2``; the observed
    one (``2``) is the largest, so ``p = 1 / 4``.

    >>> res = item_order_test([-10.0, -20.0], [[-13.0], [-21.0]])
    >>> res.statistic, res.pvalue, res.method
    (2.0, 0.25, 'stratified randomisation (exact)')
    """
    canonical, shuffled, alternative, n_resamples, confidence_level = _item_order_iv(
        canonical, shuffled, alternative, n_resamples, confidence_level)
    n_shards, n_perm = shuffled.shape
    scores = _order_scores(canonical, shuffled)  # (n, m + 1), column 0: the published order
    statistic = float(np.mean(canonical - shuffled.mean(axis=1)))
    observed = float(scores[:, 0].mean())  # = statistic, computed as the null distribution is
    exact = n_shards == 1 or (n_perm + 1) ** n_shards <= n_resamples
    null, kept = _order_null(scores, n_resamples, None if exact else _order_rng(rng, canonical, shuffled),
                             exact=exact)
    if n_shards == 1:  # on the raw log-likelihoods, as Oren et al. count
        ge, le = int(np.sum(shuffled[0] >= canonical[0])), int(np.sum(shuffled[0] <= canonical[0]))
        p_greater, p_less = (1 + ge) / (1 + n_perm), (1 + le) / (1 + n_perm)
        method = "permutation"
    else:
        gamma = 100 * np.finfo(float).eps * n_shards * max(float(np.max(np.abs(scores))), 1.0)
        ge, le = int(np.sum(null >= observed - gamma)), int(np.sum(null <= observed + gamma))
        if exact:  # the identity assignment is among the null
            p_greater, p_less = ge / null.size, le / null.size
        else:
            p_greater, p_less = (1 + ge) / (1 + null.size), (1 + le) / (1 + null.size)
        method = f"stratified randomisation ({'exact' if exact else 'Monte Carlo'})"
    pvalue = {"greater": p_greater, "less": p_less, "two-sided": min(1.0, 2 * min(p_greater, p_less))}[alternative]
    ci = _order_ci(observed, null, kept, n_shards, n_perm, exact=exact, confidence_level=confidence_level)
    return ItemOrderResult(statistic, float(pvalue), ci, null, n_shards, n_perm, method, alternative)


def item_order_mde(canonical, shuffled, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest shift of the published order's log-likelihood :func:`item_order_test` detects with ``power``.

    Normal approximation of the test's own null distribution: a one-sided level-``alpha``
    test detects a constant shift ``delta`` (nats per shard, every shard) with
    probability ``power`` when ``delta = (z_{1-alpha} + z_{power}) * sd``, where
    ``sd`` is the exact standard deviation of the statistic under the stratified
    randomisation, ``sqrt(sum_s mean_j g_sj^2) / n_shards`` with ``g_sj`` order ``j``'s
    log-likelihood minus the mean of shard ``s``'s other orders.

    Examples
    --------
    Each order is 1 nat from the other order of its shard, so ``g = +-1``,
    ``sd = sqrt(2) / 2`` and the MDE is ``(1.6449 + 0.8416) * 0.7071``:

    >>> round(item_order_mde([0.0, 0.0], [[1.0], [-1.0]], alpha=0.05), 4)
    1.7582
    """
    canonical, shuffled, _, _, _ = _item_order_iv(canonical, shuffled, "greater", 1, 0.95)
    alpha = check_level(alpha, "alpha")
    power = check_level(power, "power")
    scores = _order_scores(canonical, shuffled)
    sd = math.sqrt(float(np.sum(np.mean(scores**2, axis=1)))) / scores.shape[0]
    return float(detection_z(alpha, power) * sd)
