"""A reference panel of other model families: the suspect judged against the references' relation.

The sibling panel (:func:`contaudit.analysis.panel.panel_did`) judges the suspect's
test-minus-shadow effect against the clean models' effects: valid when a clean suspect is
exchangeable with them (same recipe, other seeds). Real references are public models of
other families (sizes, tokenizers, data, cutoffs), and a suspect trained another way can
sit off their mean effect by a reference SD or more: the sibling test then flags clean
suspects 16-55 % of the time (issue 28). ConStat's way out (Dekoninck et al. 2024) is to
model how a model's score on one set maps to its score on another *across* a diverse
panel, and judge the suspect against that map.

:func:`family_did` does that for one pair of item groups (test vs shadow, or seen vs
unseen probes). Each model m gives ``x_m`` (its mean score on the shadow / unseen items)
and ``y_m`` (on the test / seen items). Across the references, ``y = a + b x`` is fitted
by least squares; the suspect's test score is compared with what the fit predicts from
its own shadow score. The sibling panel is the special case ``b = 1``. Reported:

* ``statistic``: the suspect's residual ``y_s - (a + b x_s)`` (negative under
  contamination for NLL);
* ``pvalue``: the prediction pivot ``r_s / (s sqrt(1 + h_s))`` (``s`` the references'
  residual SD, ``h_s`` the suspect's leverage) with the larger of two tails, Student t on
  R - 2 degrees of freedom and the same pivot when the references scatter about the
  relation as Student t(2) (simulated for this panel's own x values), as the sibling
  panel's robust test does;
* ``pvalue_conformal``: full-conformal rank of the suspect's residual when the relation is
  fitted on all R + 1 models (exact whenever a clean suspect's ``(x, y)`` is exchangeable
  with the references'; never below ``1 / (R + 1)``);
* the sensitivity: how many reference SDs off the relation the suspect sits, and how large
  an offset of a clean suspect's recipe the result survives (``robust_to_offset``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from contaudit.statistics import ConfidenceInterval, check_level, json_number
from contaudit.analysis.panel import heavy_pivots, heavy_tail, panel_inputs, prediction_fields, robust_quantile
from contaudit.errors import InputError

PIVOT_DRAWS = 2**16


@dataclass
class FamilyResult:
    """Result of :func:`family_did`.

    Attributes
    ----------
    statistic : float
        The suspect's residual from the references' relation ``y = a + b x``.
    pvalue : float
        The larger of ``pvalue_t`` and ``pvalue_heavy`` (``method='robust'``) or
        ``pvalue_conformal`` (``method='conformal'``).
    confidence_interval : ConfidenceInterval
        ``statistic -+ q * se``: where a clean suspect's residual would lie, shifted.
    slope, intercept, r_squared, slope_pvalue : float
        The references' relation and how much it explains.
    residual_sd : float
        ``s``, the references' spread about the relation (R - 2 degrees of freedom).
    distance_sd : float
        ``statistic / s``: how far off the relation the suspect sits, in reference SDs.
    robust_to_offset : float
        The largest offset (in reference SDs, in the contamination direction) of a clean
        suspect from the relation for which this result would still be significant at
        ``level`` (0 when it is not significant): the E-value-like sensitivity.
    extrapolation : bool
        The suspect's shadow score lies outside the references' range.
    """

    statistic: float
    pvalue: float
    pvalue_t: float
    pvalue_heavy: float
    pvalue_conformal: float
    confidence_interval: ConfidenceInterval
    slope: float
    intercept: float
    r_squared: float
    slope_pvalue: float
    residual_sd: float
    leverage: float
    distance_sd: float
    robust_to_offset: float
    level: float
    extrapolation: bool
    method: str
    alternative: str
    n: tuple[int, int]
    n_references: int
    confidence_level: float
    suspect_point: tuple[float, float]
    reference_points: np.ndarray = field(repr=False)
    heavy_null: np.ndarray = field(repr=False, default=None)  # sorted t(2) pivots of this panel

    @property
    def reference_sd(self) -> float:
        return self.residual_sd

    @property
    def n_references_fit(self) -> int:
        return self.n_references

    def minimum_detectable_effect(self, alpha: float, power: float) -> float:
        """The residual detected with ``power`` at one-sided level ``alpha`` (robust quantile)."""
        r = self.n_references
        if not math.isfinite(self.residual_sd) or self.heavy_null is None:
            return float("nan")
        df = r - (1 if self.slope_pvalue != self.slope_pvalue else 2)  # a flat fit (nan slope p) has one parameter
        q = robust_quantile(1 - alpha, df, self.heavy_null)
        return float((q + stats.t.ppf(power, df)) * self.residual_sd * math.sqrt(1 + self.leverage))

    def to_dict(self) -> dict:
        """JSON-ready fields (``nan`` becomes None)."""
        return {
            **prediction_fields(self),
            "pvalue_conformal": json_number(self.pvalue_conformal),
            "ci_method": "prediction interval from the references' relation (Student t(2) pivot)",
            "method": self.method,
            "alternative": self.alternative,
            "n": list(self.n),
            "n_references": self.n_references,
            "relation": {"slope": json_number(self.slope), "intercept": json_number(self.intercept),
                         "r_squared": json_number(self.r_squared), "slope_pvalue": json_number(self.slope_pvalue)},
            "reference_sd": json_number(self.residual_sd),
            "effect_in_reference_sd": json_number(self.distance_sd),
            "robust_to_offset_sd": json_number(self.robust_to_offset),
            "sensitivity_level": self.level,
            "leverage": json_number(self.leverage),
            "extrapolation": self.extrapolation,
            "suspect_point": [json_number(v) for v in self.suspect_point],
            "reference_points": [[json_number(v) for v in row] for row in self.reference_points],
        }


def family_did(suspect, references, group, *, alternative: str = "less", method: str = "robust",
               alpha: float = 0.05, n_tests: int = 1, confidence_level: float = 0.95,
               n_heavy_draws: int = PIVOT_DRAWS) -> FamilyResult:
    """Judge the suspect's test score against what the references' shadow-to-test relation predicts.

    Parameters
    ----------
    suspect : array_like, shape (N,)
        The suspect's per-item scores (e.g. NLL per byte).
    references : array_like, shape (R, N)
        The reference models' scores on the same items (R >= 3: the relation has two
        parameters and needs a residual degree of freedom; 5 or more advised).
    group : array_like of bool, shape (N,)
        True for test (or seen) items, False for shadow (or unseen) items.
    alternative : {'less', 'greater'}
        ``'less'``: contamination lowers the suspect's test score below the prediction.
    method : {'robust', 'conformal'}
        Which p-value decides (both are reported).
    alpha, n_tests : float, int
        The level ``alpha / n_tests`` at which the sensitivity is stated (Holm's first step).
    confidence_level : float
        Level of the prediction interval.
    n_heavy_draws : int
        Monte Carlo draws of the heavy-tailed pivot (seeded by the panel size: reproducible).

    Examples
    --------
    >>> rng = np.random.default_rng(0); g = np.arange(40) < 20
    >>> strength = np.array([2.0, 2.5, 3.0, 3.5, 4.0, 4.5])  # six families, each its own level
    >>> refs = strength[:, None] * (1 + 0.3 * g) + rng.normal(0, 0.01, (6, 40))
    >>> clean = 3.2 * (1 + 0.3 * g) + rng.normal(0, 0.01, 40)
    >>> family_did(clean, refs, g).pvalue > 0.05, family_did(clean - 0.3 * g, refs, g).pvalue < 0.01
    (True, True)
    """
    if method not in ("robust", "conformal"):
        raise InputError(f"`method` must be 'robust' or 'conformal'; got {method!r}.")
    confidence_level = check_level(confidence_level, "confidence_level")
    suspect, references, group = panel_inputs(suspect, references, group, alternative=alternative, min_references=3,
                                              why="cross-family test (its relation has two parameters)")
    r = references.shape[0]
    scores = np.vstack([suspect[None, :], references])
    x_all, y_all = scores[:, ~group].mean(axis=1), scores[:, group].mean(axis=1)
    x, y, x_s, y_s = x_all[1:], y_all[1:], float(x_all[0]), float(y_all[0])
    flat = bool(np.ptp(x) == 0)  # no spread in shadow scores (e.g. exact match 0 for all): predict the mean
    if flat:
        slope, intercept, r_squared, slope_p = 0.0, float(y.mean()), 0.0, float("nan")
        design, point = np.ones((r, 1)), np.ones(1)
    else:
        fit = stats.linregress(x, y)
        slope, intercept, r_squared, slope_p = float(fit.slope), float(fit.intercept), float(fit.rvalue**2), float(fit.pvalue)
        design, point = np.column_stack([np.ones(r), x]), np.array([1.0, x_s])
    df = r - design.shape[1]
    residuals = y - (intercept + slope * x)
    s = math.sqrt(float(residuals @ residuals) / df)
    leverage = float(point @ np.linalg.inv(design.T @ design) @ point)
    statistic = y_s - (intercept + slope * x_s)
    sign = -1.0 if alternative == "less" else 1.0
    se = s * math.sqrt(1 + leverage)
    nan = float("nan")
    level = alpha / n_tests
    heavy = None
    if s > 1e-12 * max(1.0, float(np.abs(y).max())):
        pivot = sign * statistic / se
        heavy = heavy_pivots(design, point, n_heavy_draws)
        p_t = float(stats.t.sf(pivot, df))
        p_heavy = float(heavy_tail(heavy, pivot))
        q = robust_quantile(0.5 + confidence_level / 2, df, heavy)
        ci = ConfidenceInterval(statistic - q * se, statistic + q * se)
        q_level = robust_quantile(1 - level, df, heavy)
        distance = sign * statistic / s
        robust_to = max(0.0, distance - q_level * math.sqrt(1 + leverage))
    else:
        p_t = p_heavy = nan
        ci = ConfidenceInterval(nan, nan)
        distance = robust_to = nan
    # Full conformal: the relation fitted on every model, suspect included, treats all alike.
    if np.ptp(x_all) == 0:
        e_all = sign * (y_all - y_all.mean())
    else:
        full = stats.linregress(x_all, y_all)
        e_all = sign * (y_all - (full.intercept + full.slope * x_all))
    p_conformal = (1 + int(np.sum(e_all[1:] >= e_all[0]))) / (r + 1)
    if not math.isfinite(p_t):
        p_t = p_heavy = p_conformal  # no spread about the relation: only the rank means anything
    pvalue = max(p_t, p_heavy) if method == "robust" else p_conformal
    return FamilyResult(
        statistic=float(statistic), pvalue=float(pvalue), pvalue_t=p_t, pvalue_heavy=p_heavy,
        pvalue_conformal=float(p_conformal), confidence_interval=ci, slope=slope,
        intercept=intercept, r_squared=r_squared, slope_pvalue=slope_p,
        residual_sd=s, leverage=float(leverage), distance_sd=float(distance), robust_to_offset=float(robust_to),
        level=level, extrapolation=bool(x_s < x.min() or x_s > x.max()), method=method, alternative=alternative,
        n=(int(group.sum()), int((~group).sum())), n_references=r, confidence_level=confidence_level,
        suspect_point=(x_s, y_s), reference_points=np.column_stack([x, y]), heavy_null=heavy)
