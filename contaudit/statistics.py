"""Statistics primitives every stage shares: checks of arguments, effect sizes, Holm's
adjustment, p-value formatting and the normal-approximation detectable effect.

The lowest layer of the package (it imports nothing from contaudit but ``errors``), so
``probes``, ``scoring``, ``analysis`` and the reports can use it without importing each
other. Functions look like scipy's: data first, keyword-only options, a validation helper
that raises :class:`~contaudit.errors.InputError` naming the parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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


def json_number(x) -> float | None:
    """A float for JSON, with nan/inf as None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def as_sample(x, name: str, *, min_size: int = 2) -> np.ndarray:
    """``x`` as a finite one-dimensional float array of at least ``min_size`` values, or an error naming ``name``."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        raise InputError(f"`{name}` must be one-dimensional; got shape {x.shape}.")
    if x.size < min_size:
        raise InputError(f"`{name}` must contain at least {min_size} observations; got {x.size}.")
    if not np.all(np.isfinite(x)):
        raise InputError(f"`{name}` must contain only finite values; found {int(np.sum(~np.isfinite(x)))} nan/inf.")
    return x


def check_int(value, name: str, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"`{name}` must be {what}; got {value!r}.")
    return int(value)


def check_alternative(alternative) -> str:
    """One of :data:`ALTERNATIVES`, or an error."""
    if alternative not in ALTERNATIVES:
        raise InputError(f"`alternative` must be one of {list(ALTERNATIVES)}; got {alternative!r}.")
    return alternative


def check_level(value, name: str) -> float:
    """A number strictly between 0 and 1 (a level, a power), or an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InputError(f"`{name}` must be a number strictly between 0 and 1; got {value!r}.")
    return float(value)


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
    x = as_sample(x, "x")
    y = as_sample(y, "y")
    nx, ny = x.size, y.size
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return float("nan")
    correction = 1 - 3 / (4 * (nx + ny) - 9)
    return float(correction * (x.mean() - y.mean()) / pooled)


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
    n_a = check_int(n_a, "n_a", minimum=1)
    n_b = check_int(n_b, "n_b", minimum=1)
    if not (sd_a >= 0 and sd_b >= 0):
        raise InputError(f"standard deviations must be non-negative; got {sd_a!r}, {sd_b!r}.")
    return float(detection_z(alpha, power) * math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b))


def detection_z(alpha: float, power: float) -> float:
    """``z_{1-alpha} + z_{power}``: the standardized shift a one-sided level-``alpha`` test
    detects with probability ``power`` under a normal statistic.

    >>> round(detection_z(0.05, 0.8), 4)
    2.4865
    """
    from scipy import stats

    return float(stats.norm.ppf(1 - alpha) + stats.norm.ppf(power))
