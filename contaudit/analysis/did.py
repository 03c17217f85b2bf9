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

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from contaudit.errors import InputError

ALTERNATIVES = ("less", "greater", "two-sided")


@dataclass(frozen=True)
class ConfidenceInterval:
    """A two-sided confidence interval; ``nan`` ends when it could not be computed."""

    low: float
    high: float

    def __iter__(self):
        return iter((self.low, self.high))

    def to_list(self) -> list[float | None]:
        """``[low, high]`` for JSON (nan as None)."""
        return [json_number(self.low), json_number(self.high)]


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
    ``null_distribution`` holds the shuffled log-likelihoods minus their shard mean.
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


def json_number(x) -> float | None:
    """A float for JSON, with nan/inf as None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _as_sample(x, name: str, *, min_size: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise InputError(f"`{name}` must be one-dimensional; got shape {x.shape}.")
    if x.size < min_size:
        raise InputError(f"`{name}` must contain at least {min_size} observations; got {x.size}.")
    if not np.all(np.isfinite(x)):
        raise InputError(f"`{name}` must contain only finite values; found {int(np.sum(~np.isfinite(x)))} nan/inf.")
    return x


def _check_int(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"`{name}` must be {what}; got {value!r}.")
    return int(value)


def _check_alternative(alternative) -> str:
    if alternative not in ALTERNATIVES:
        raise InputError(f"`alternative` must be one of {list(ALTERNATIVES)}; got {alternative!r}.")
    return alternative


def check_level(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InputError(f"`{name}` must be a number strictly between 0 and 1; got {value!r}.")
    return float(value)


def _did_iv(x, y, alternative, n_resamples, n_bootstrap, confidence_level, rng):
    """Validate the inputs of :func:`difference_in_means`."""
    x = _as_sample(x, "x")
    y = _as_sample(y, "y")
    alternative = _check_alternative(alternative)
    n_resamples = _check_int(n_resamples, "n_resamples", minimum=1)
    n_bootstrap = _check_int(n_bootstrap, "n_bootstrap", minimum=0)
    confidence_level = check_level(confidence_level, "confidence_level")
    return x, y, alternative, n_resamples, n_bootstrap, confidence_level, np.random.default_rng(rng)


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def standardized_mean_difference(a, b) -> float:
    """SMD of a covariate between groups: (mean_a - mean_b) / sqrt((var_a + var_b) / 2).

    Sample variances (ddof=1). 0.0 when both groups are constant and equal; NaN when a
    group has fewer than two values.

    >>> round(standardized_mean_difference([1, 2, 3], [2, 3, 4]), 3)
    -1.0
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    diff = a.mean() - b.mean()
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return float(diff / pooled)


def format_p(p: float | None, *, named: bool = False) -> str:
    """A p-value for reports: ``< 0.0001``, two significant digits below 0.01, else three decimals.

    ``named`` writes ``p = 0.012`` / ``p < 0.0001``; None is ``—`` (``p n/a`` when named).
    """
    if p is None:
        return "p n/a" if named else "—"
    text = "< 0.0001" if p < 1e-4 else f"{p:.2g}" if p < 0.01 else f"{p:.3f}"
    if not named:
        return text
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def hedges_g(x, y) -> float:
    """Hedges' g: the bias-corrected standardized mean difference of ``x`` and ``y``.

    ``g = J * (mean(x) - mean(y)) / s_p`` with the pooled standard deviation
    ``s_p = sqrt(((n_x - 1) s_x^2 + (n_y - 1) s_y^2) / (n_x + n_y - 2))`` and the
    small-sample correction ``J = 1 - 3 / (4 (n_x + n_y) - 9)``.

    Returns ``nan`` when both samples are constant (``s_p = 0``).

    Examples
    --------
    >>> round(hedges_g([1, 2, 3, 4], [0, 1, 2, 3]), 4)
    0.6736
    """
    x = _as_sample(x, "x")
    y = _as_sample(y, "y")
    nx, ny = x.size, y.size
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return float("nan")
    correction = 1 - 3 / (4 * (nx + ny) - 9)
    return float(correction * (x.mean() - y.mean()) / pooled)


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
    suspect = _as_sample(suspect, f"{name} (suspect)")
    clean = _as_sample(clean, f"{name} (clean)")
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


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control).

    Sorting ``p_(1) <= ... <= p_(m)``, the adjusted value of ``p_(i)`` is
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; reject where it is ``<= alpha``.
    The result is in the input order.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise InputError("`pvalues` must be a non-empty one-dimensional sequence.")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InputError(f"`pvalues` must lie in [0, 1]; got {p.tolist()}.")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def minimum_detectable_effect(sd_a: float, sd_b: float, n_a: int, n_b: int, *, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest true difference in means a one-sided level-``alpha`` test detects with ``power``.

    Normal approximation for two independent means:
    ``MDE = (z_{1-alpha} + z_{power}) * sqrt(sd_a^2 / n_a + sd_b^2 / n_b)``.

    Examples
    --------
    >>> round(minimum_detectable_effect(1.0, 1.0, 100, 100, alpha=0.05), 4)
    0.3516
    """
    alpha = check_level(alpha, "alpha")
    power = check_level(power, "power")
    n_a = _check_int(n_a, "n_a", minimum=1)
    n_b = _check_int(n_b, "n_b", minimum=1)
    if not (sd_a >= 0 and sd_b >= 0):
        raise InputError(f"standard deviations must be non-negative; got {sd_a!r}, {sd_b!r}.")
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    return float(z * math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b))


def dose_response(occurrences, differences, *, alternative: str = "less", confidence_level: float = 0.95) -> CorrelationResult:
    """Spearman correlation between corpus occurrence counts and per-item differences.

    With ``differences = d_i`` (suspect minus clean NLL), contamination predicts that
    items duplicated more often in the corpus are more familiar to the suspect: a
    negative correlation (``alternative='less'``). The p-value is scipy's
    (t approximation); the CI uses Fisher's z with the Fieller et al. (1957)
    standard error ``1.03 / sqrt(n - 3)``. Returns ``nan`` statistics when either
    variable is constant.
    """
    x = _as_sample(occurrences, "occurrences", min_size=4)
    y = _as_sample(differences, "differences", min_size=4)
    alternative = _check_alternative(alternative)
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


def item_order_test(canonical, shuffled, *, alternative: str = "greater", confidence_level: float = 0.95) -> ItemOrderResult:
    """Oren et al. (2023) test: is the published item order more likely than shuffled ones?

    A model that saw a benchmark file verbatim prefers its items in the published
    (canonical) order. The test needs only the suspect model.

    Parameters
    ----------
    canonical : array_like, shape (n_shards,)
        Suspect-model log-likelihood (natural log, summed over tokens) of each shard:
        the shard's items concatenated in the published order.
    shuffled : array_like, shape (n_shards, n_permutations)
        Log-likelihood of the same shards with the items in random orders.
    alternative : {'greater', 'less', 'two-sided'}
        ``'greater'``: canonical orders are more likely (contamination).

    Returns
    -------
    ItemOrderResult
        With one shard, the p-value is the permutation p-value
        ``(1 + #{shuffled >= canonical}) / (1 + n_permutations)`` (for
        ``'greater'``). With several shards it is Oren et al.'s sharded test: a
        one-sample t-test over shards of ``canonical - mean(shuffled)``.
    """
    canonical = np.atleast_1d(np.asarray(canonical, dtype=float))
    shuffled = np.asarray(shuffled, dtype=float)
    if shuffled.ndim == 1:
        shuffled = shuffled[None, :]
    alternative = _check_alternative(alternative)
    confidence_level = check_level(confidence_level, "confidence_level")
    if canonical.ndim != 1 or shuffled.ndim != 2 or shuffled.shape[0] != canonical.size:
        raise InputError(f"`shuffled` must have shape (n_shards, n_permutations) with n_shards = len(canonical) = "
                         f"{canonical.size}; got {shuffled.shape}.")
    if shuffled.shape[1] < 1:
        raise InputError("`shuffled` needs at least one shuffled ordering per shard.")
    if not (np.all(np.isfinite(canonical)) and np.all(np.isfinite(shuffled))):
        raise InputError("log-likelihoods must be finite.")
    n_shards, n_perm = shuffled.shape
    gaps = canonical - shuffled.mean(axis=1)
    null = shuffled - shuffled.mean(axis=1, keepdims=True)
    nan = float("nan")
    if n_shards == 1:
        ge = int(np.sum(shuffled[0] >= canonical[0]))
        le = int(np.sum(shuffled[0] <= canonical[0]))
        p_greater, p_less = (1 + ge) / (1 + n_perm), (1 + le) / (1 + n_perm)
        pvalue = {"greater": p_greater, "less": p_less, "two-sided": min(1.0, 2 * min(p_greater, p_less))}[alternative]
        return ItemOrderResult(float(gaps[0]), pvalue, ConfidenceInterval(nan, nan), null, 1, n_perm,
                               "permutation", alternative)
    res = stats.ttest_1samp(gaps, 0.0, alternative=alternative)
    low, high = stats.ttest_1samp(gaps, 0.0).confidence_interval(confidence_level)
    return ItemOrderResult(float(gaps.mean()), float(res.pvalue), ConfidenceInterval(float(low), float(high)),
                           null, n_shards, n_perm, "sharded t-test", alternative)
