"""Tests that hold when the shadow set is not a random half of the test set.

With a random split the permutation test of set labels in :mod:`contaudit.analysis.did`
is exact. A real shadow set is written after the training cutoff: it differs from the
test set in time, vocabulary and difficulty, and two clean models that differ only by
seed (and by the data it draws) then differ in how they see the two sets. That
model-to-model spread is invisible to a test that treats the two models as fixed.

Two tools, used together:

* **Shift adjustment** (:func:`adjusted_difference`): a model's test-minus-shadow (or
  seen-minus-unseen) difference estimated by least squares conditional on observable
  item covariates (the panel's mean score as difficulty, length, rarity), with the
  covariates' overlap between the two groups reported (:func:`covariate_overlap`).
* **A reference panel** (:func:`panel_did`): the suspect and R clean reference models
  scored on the same items. Each model's adjusted difference is one draw of "the effect
  a clean model shows"; the suspect's is judged against the references' by the
  studentized distance ``(delta_s - mean delta_r) / (s * sqrt(1 + 1/R))``. Its p-value
  (:func:`robust_prediction_pvalue`) is the larger of the Student-t tail (exact when the
  between-model spread is normal) and the same pivot's tail when the spread is Student t
  with 2 degrees of freedom (infinite variance): it keeps its error rate at the deep
  levels where verdicts and suite gates are decided (Holm's alpha / 2, alpha / (2K)) for
  normal, t3 and outlier-ridden spreads (docs/analysis.md). A distribution-free rank
  p-value (exact whenever the suspect, were it clean, would be exchangeable with the
  references; never below ``1 / (R + 1)``) is the other choice. Item-level noise is
  inside the references' spread: every model is scored on the same items, so the spread
  of their effects already holds the model-by-item noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from contaudit.statistics import ConfidenceInterval, check_level, json_number, standardized_mean_difference
from contaudit.errors import InputError

PANEL_METHODS = ("robust", "rank")

# The pivot's null distribution under Student t with HEAVY_DF degrees of freedom is drawn once
# per panel size, from a fixed seed (so p-values are reproducible), with HEAVY_DRAWS draws.
HEAVY_DF = 2
HEAVY_DRAWS = 2**18
_HEAVY_SEED = 20261207


@dataclass
class AdjustedDifference:
    """Result of :func:`adjusted_difference`.

    ``statistic`` is the coefficient of the group indicator in the least-squares fit
    of ``y`` on ``[1, group, covariates]``; ``raw`` is ``mean(y[group]) - mean(y[~group])``.
    """

    statistic: float
    raw: float
    covariates: tuple[str, ...]
    n: tuple[int, int]


def _design(group: np.ndarray, covariates: dict[str, np.ndarray] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """``[1, group, standardized covariates]``, dropping constant covariates."""
    columns = [np.ones(group.size), group.astype(float)]
    names = []
    for name, values in (covariates or {}).items():
        values = np.asarray(values, dtype=float)
        if values.shape != group.shape:
            raise InputError(f"covariate {name!r} has {values.size} values for {group.size} items.")
        if not np.all(np.isfinite(values)):
            raise InputError(f"covariate {name!r} has missing or non-finite values.")
        sd = values.std()
        if sd > 0:
            columns.append((values - values.mean()) / sd)
            names.append(name)
    return np.column_stack(columns), tuple(names)


def _group(group, n: int | None = None) -> np.ndarray:
    group = np.asarray(group)
    if group.ndim != 1 or group.dtype != bool:
        raise InputError("`group` must be a one-dimensional boolean array (True: test / seen items).")
    if n is not None and group.size != n:
        raise InputError(f"`group` has {group.size} entries for {n} items.")
    if group.sum() < 2 or (~group).sum() < 2:
        raise InputError(f"each group needs at least 2 items; got {int(group.sum())} and {int((~group).sum())}.")
    return group


def panel_inputs(suspect, references, group, *, alternative: str, min_references: int,
                 why: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a panel test's inputs: ``(suspect (N,), references (R, N), group (N,) bool)`` as arrays.

    ``min_references`` is the fewest reference models the test needs, ``why`` the test's name
    for the error message.
    """
    if alternative not in ("less", "greater"):
        raise InputError(f"`alternative` must be 'less' or 'greater'; got {alternative!r}.")
    suspect = np.asarray(suspect, dtype=float)
    references = np.atleast_2d(np.asarray(references, dtype=float))
    if suspect.ndim != 1 or references.shape[1:] != suspect.shape:
        raise InputError(f"`references` must have shape (R, {suspect.size}) to match the suspect's "
                         f"{suspect.size} items; got {references.shape}.")
    if references.shape[0] < min_references:
        raise InputError(f"the {why} needs at least {min_references} reference models; got {references.shape[0]}.")
    if not (np.all(np.isfinite(suspect)) and np.all(np.isfinite(references))):
        raise InputError("scores must be finite numbers.")
    return suspect, references, _group(group, suspect.size)


def adjusted_difference(y, group, covariates: dict[str, np.ndarray] | None = None) -> AdjustedDifference:
    """Difference between two groups of items, adjusted for item covariates.

    Fits ``y = a + delta * group + X b`` by least squares and returns ``delta``: the
    difference between the groups at equal covariate values. With no covariates (or
    only constant ones) ``delta`` is the raw difference in means.

    Examples
    --------
    >>> x = np.arange(8.0); g = x >= 4
    >>> float(round(adjusted_difference(2 * x, g).statistic, 6)), abs(adjusted_difference(2 * x, g, {"x": x}).statistic) < 1e-9
    (8.0, True)
    """
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or not np.all(np.isfinite(y)):
        raise InputError("`y` must be a one-dimensional array of finite numbers.")
    group = _group(group, y.size)
    design, names = _design(group, covariates)
    coef = _fit(design, y[:, None])[:, 0]
    return AdjustedDifference(float(coef[1]), float(y[group].mean() - y[~group].mean()), names,
                              (int(group.sum()), int((~group).sum())))


def _fit(design: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """Least-squares coefficients, one column per response column: ``(p, k)``."""
    coef, *_ = np.linalg.lstsq(design, responses, rcond=None)
    return coef


@dataclass
class PanelResult:
    """Result of :func:`panel_did`.

    Attributes
    ----------
    statistic : float
        The suspect's adjusted difference minus the references' mean adjusted
        difference: the DiD of the suspect against the reference panel.
    pvalue : float
        The p-value of ``method``.
    pvalue_t, pvalue_heavy, pvalue_rank : float
        The pivot's tail under a normal between-model spread (Student t, R - 1 degrees
        of freedom), under a Student-t(2) spread, and the rank p-value ``(1 + #{references
        at least as extreme}) / (R + 1)``. ``pvalue`` of method ``'robust'`` is the larger
        of the first two (``nan`` with one reference); with references that all show the
        same effect it is the rank p-value (no spread to scale by).
    confidence_interval : ConfidenceInterval
        ``statistic +- t * s * sqrt(1 + 1/R)``: where a clean model's effect would lie
        relative to the panel, shifted to the suspect (``nan`` with one reference).
    reference_effects : numpy.ndarray
        Each reference's adjusted difference minus the references' mean.
    reference_sd : float
        Standard deviation (ddof=1) of the references' adjusted differences.
    raw_statistic : float
        The same DiD without covariate adjustment.
    references_needed : int
        Fewest references with which the rank test can reach ``alpha`` at all.
    """

    statistic: float
    pvalue: float
    pvalue_t: float
    pvalue_heavy: float
    pvalue_rank: float
    confidence_interval: ConfidenceInterval
    reference_effects: np.ndarray = field(repr=False)
    reference_sd: float
    raw_statistic: float
    method: str
    alternative: str
    n: tuple[int, int]
    n_references: int
    covariates: tuple[str, ...]
    confidence_level: float
    references_needed: int
    normality_pvalue: float

    @property
    def effect_size(self) -> float:
        """The suspect's excess in units of the references' spread."""
        return self.statistic / self.reference_sd if self.reference_sd > 0 else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready fields (``nan`` becomes None)."""
        return {
            **prediction_fields(self),
            "pvalue_rank": json_number(self.pvalue_rank),
            "ci_method": "prediction interval over reference models (Student t(2) pivot)",
            "method": self.method,
            "alternative": self.alternative,
            "n": list(self.n),
            "n_references": self.n_references,
            "reference_effects": [json_number(v) for v in self.reference_effects],
            "reference_sd": json_number(self.reference_sd),
            "effect_in_reference_sd": json_number(self.effect_size),
            "raw_estimate": json_number(self.raw_statistic),
            "covariates": list(self.covariates),
            "references_needed_for_rank_test": self.references_needed,
            "reference_normality_pvalue": json_number(self.normality_pvalue),
        }


def prediction_fields(result) -> dict:
    """The JSON fields both panel tests' results share (estimate, p-values, interval)."""
    return {"estimate": json_number(result.statistic), "pvalue": json_number(result.pvalue),
            "pvalue_t": json_number(result.pvalue_t), "pvalue_heavy_tailed": json_number(result.pvalue_heavy),
            "confidence_interval": result.confidence_interval.to_list(),
            "confidence_level": result.confidence_level}


def references_needed(alpha: float, n_tests: int = 1) -> int:
    """Fewest references R with which a rank p-value ``1 / (R + 1)`` can be below ``alpha / n_tests``.

    >>> references_needed(0.05), references_needed(0.05, 2)
    (19, 39)
    """
    return max(1, math.ceil(n_tests / alpha - 1 - 1e-9))


def heavy_pivots(design: np.ndarray, point: np.ndarray, draws: int = HEAVY_DRAWS) -> np.ndarray:
    """Sorted draws of the prediction pivot when the R + 1 models scatter about a least-squares fit
    as iid Student t(HEAVY_DF).

    ``design`` is the references' ``(R, p)`` design matrix, ``point`` the suspect's row; the
    pivot is ``(e_s - point' b) / (s sqrt(1 + point' (X'X)^-1 point))`` with ``b`` and ``s``
    fitted on the references. It is location- and scale-free, so one set of draws serves
    every panel with this design. With an intercept-only design it is the sibling panel's
    ``(x_s - mean x_r) / (s_r sqrt(1 + 1/R))``. Seeded by the design's shape: reproducible.
    """
    r, p = design.shape
    inv = np.linalg.inv(design.T @ design)
    residual_maker = np.eye(r) - design @ inv @ design.T  # symmetric
    weights = design @ inv @ point  # (R,): the prediction at the suspect = weights @ y_refs
    scale = math.sqrt(1 + float(point @ inv @ point))
    rng = np.random.default_rng([_HEAVY_SEED, r, p])
    out = np.empty(draws)
    chunk = max(1, 2**22 // (r + 1))  # bounded memory for large panels
    for start in range(0, draws, chunk):
        e = rng.standard_t(HEAVY_DF, (min(chunk, draws - start), r + 1))
        s = np.sqrt(((e[:, 1:] @ residual_maker) ** 2).sum(axis=1) / (r - p))
        out[start:start + e.shape[0]] = (e[:, 0] - e[:, 1:] @ weights) / (s * scale)
    out.sort()
    return out


@functools.lru_cache(maxsize=64)
def _heavy_null(n_refs: int) -> np.ndarray:
    """The sibling panel's heavy-tailed pivot draws for R references (cached: one per panel size)."""
    return heavy_pivots(np.ones((n_refs, 1)), np.ones(1))


def heavy_tail(null: np.ndarray, pivot):
    """Upper-tail Monte Carlo p-value ``(1 + #{draws >= pivot}) / (1 + draws)`` of sorted ``null`` draws."""
    return (1 + null.size - np.searchsorted(null, pivot, side="left")) / (1 + null.size)


def robust_quantile(level: float, df: int, null: np.ndarray) -> float:
    """The pivot's ``level`` quantile: the larger of Student t's (``df``) and the heavy-tailed draws'."""
    return max(float(stats.t.ppf(level, df)), float(np.quantile(null, level)))


def robust_prediction_pvalue(pivot: float, n_refs: int) -> tuple[float, float]:
    """Upper-tail p-values of the prediction pivot ``(x_s - mean x_r) / (s_r sqrt(1 + 1/R))``.

    Returns ``(p_normal, p_heavy)``: the Student t tail with ``R - 1`` degrees of
    freedom (exact when the R + 1 effects are iid normal) and the Monte Carlo tail when
    they are iid Student t with 2 degrees of freedom (``(1 + #{draws >= pivot}) /
    (1 + draws)``). Their maximum is valid under either spread; the simulations in
    docs/analysis.md show it holding for t3 spreads and for panels where one model in
    eight is an outlier, at levels down to 0.001.

    ``pivot`` may be an array (then so are both p-values).

    >>> p_normal, p_heavy = robust_prediction_pvalue(4.0, 5)
    >>> round(p_normal, 4), p_heavy > p_normal
    (0.0081, True)
    """
    if n_refs < 2:
        raise InputError(f"the prediction test needs at least 2 reference models; got {n_refs}.")
    p_heavy = heavy_tail(_heavy_null(n_refs), pivot)
    p_normal = stats.t.sf(pivot, n_refs - 1)
    if np.ndim(pivot) == 0:
        return float(p_normal), float(p_heavy)
    return np.asarray(p_normal, dtype=float), np.asarray(p_heavy, dtype=float)


def panel_did(suspect, references, group, *, covariates: dict[str, np.ndarray] | None = None,
              alternative: str = "less", method: str = "robust", alpha: float = 0.05, n_tests: int = 1,
              confidence_level: float = 0.95) -> PanelResult:
    """The suspect's group difference judged against a panel of clean reference models.

    Parameters
    ----------
    suspect : array_like, shape (N,)
        The suspect's per-item scores.
    references : array_like, shape (R, N)
        The reference models' scores on the same items (R >= 2 for ``'robust'``).
    group : array_like of bool, shape (N,)
        True for test (or seen) items, False for shadow (or unseen) items.
    covariates : dict of name -> array (N,), optional
        Item covariates the difference is adjusted for (see :func:`adjusted_difference`).
        For an exact rank test they must not single out the suspect (item features,
        or a mean over all models).
    alternative : {'less', 'greater'}
        ``'less'``: contamination lowers the suspect's difference (NLL, test - shadow).
    method : {'robust', 'rank'}
        Which p-value is ``pvalue``. ``'robust'``: the larger of the normal-theory and
        the Student-t(2) tail of the prediction pivot (:func:`robust_prediction_pvalue`);
        ``'rank'`` assumes only exchangeability and cannot go below ``1 / (R + 1)``.
    alpha, n_tests : float, int
        Only used to report :func:`references_needed`.
    confidence_level : float
        Level of the prediction-based interval.

    Examples
    --------
    >>> rng = np.random.default_rng(0); g = np.arange(40) < 20
    >>> refs = rng.normal(size=(5, 40)); sus = rng.normal(size=40) - 2.0 * g
    >>> res = panel_did(sus, refs, g)
    >>> res.statistic < 0, res.pvalue < 0.05, res.pvalue_rank
    (True, True, 0.16666666666666666)
    """
    if method not in PANEL_METHODS:
        raise InputError(f"`method` must be one of {PANEL_METHODS}; got {method!r}.")
    confidence_level = check_level(confidence_level, "confidence_level")
    suspect, references, group = panel_inputs(suspect, references, group, alternative=alternative,
                                              min_references=2 if method == "robust" else 1,
                                              why="robust prediction test" if method == "robust" else "rank test")
    n_refs = references.shape[0]
    design, names = _design(group, covariates)
    scores = np.vstack([suspect[None, :], references])  # (1 + R, N)
    effects = _fit(design, scores.T)[1]  # (1 + R,) adjusted difference of every model
    raw = scores[:, group].mean(axis=1) - scores[:, ~group].mean(axis=1)
    ref_mean = effects[1:].mean()
    statistic = float(effects[0] - ref_mean)
    sign = -1.0 if alternative == "less" else 1.0
    # Rank p-value: the suspect counts itself, so it is exact under exchangeability.
    p_rank = (1 + int(np.sum(sign * effects[1:] >= sign * effects[0]))) / (n_refs + 1)
    nan = float("nan")
    sd, p_t, p_heavy, normality = nan, nan, nan, nan
    ci = ConfidenceInterval(nan, nan)
    if n_refs >= 2:
        sd = float(effects[1:].std(ddof=1))
        # Effects equal to rounding are no spread at all (a pivot of noise over noise).
        spread = sd > 1e-12 * max(1.0, float(np.abs(effects).max()))
        if spread:
            scale = sd * math.sqrt(1 + 1 / n_refs)
            p_t, p_heavy = robust_prediction_pvalue(sign * statistic / scale, n_refs)
            q = robust_quantile(0.5 + confidence_level / 2, n_refs - 1, _heavy_null(n_refs))
            ci = ConfidenceInterval(float(statistic - q * scale), float(statistic + q * scale))
            if n_refs >= 3:
                normality = float(stats.shapiro(effects[1:]).pvalue)
        else:
            # Every reference shows the same effect: no spread to scale a pivot by, so only
            # the rank p-value means anything (a t pivot would give p = 0 to any excess).
            p_t = p_heavy = p_rank
    pvalue = max(p_t, p_heavy) if method == "robust" else p_rank
    return PanelResult(
        statistic=statistic, pvalue=float(pvalue), pvalue_t=p_t, pvalue_heavy=p_heavy, pvalue_rank=float(p_rank),
        confidence_interval=ci, reference_effects=effects[1:] - ref_mean, reference_sd=sd,
        raw_statistic=float(raw[0] - raw[1:].mean()), method=method, alternative=alternative,
        n=(int(group.sum()), int((~group).sum())), n_references=n_refs, covariates=names,
        confidence_level=confidence_level, references_needed=references_needed(alpha, n_tests),
        normality_pvalue=normality)


@dataclass
class Overlap:
    """Result of :func:`covariate_overlap`: per covariate, SMD and the share of items in common support."""

    smd: dict[str, float]
    share_in_support: dict[str, float]
    masks: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # per covariate: (N,) in its support

    @property
    def worst(self) -> float:
        return min(self.share_in_support.values()) if self.share_in_support else 1.0

    def supported(self, min_overlap: float) -> list[str]:
        """The covariates with at least ``min_overlap`` of the items in common support: the ones a
        linear adjustment can use without extrapolating."""
        return [k for k, v in self.share_in_support.items() if v >= min_overlap]

    def to_dict(self) -> dict:
        return {"smd": {k: json_number(v) for k, v in self.smd.items()},
                "share_in_common_support": {k: json_number(v) for k, v in self.share_in_support.items()},
                "worst_share": json_number(self.worst)}


def covariate_overlap(group, covariates: dict[str, np.ndarray], *, trim: float = 0.01) -> Overlap:
    """How far a linear adjustment can be trusted: balance and common support per covariate.

    ``smd`` is the standardized mean difference (group True minus False, pooled SD);
    ``share_in_support`` the share of all items whose value lies inside both groups'
    central ``[trim, 1 - trim]`` quantile ranges: items outside it have no comparable
    item in the other group, and the adjustment extrapolates for them.

    >>> g = np.arange(10) < 5
    >>> covariate_overlap(g, {"x": np.arange(10.0)}).share_in_support["x"]
    0.0
    """

    group = _group(group)
    smd, share, masks = {}, {}, {}
    for name, values in covariates.items():
        values = np.asarray(values, dtype=float)
        a, b = values[group], values[~group]
        smd[name] = standardized_mean_difference(a, b)
        low = max(np.quantile(a, trim), np.quantile(b, trim))
        high = min(np.quantile(a, 1 - trim), np.quantile(b, 1 - trim))
        masks[name] = (values >= low) & (values <= high) if low <= high else np.zeros(values.size, bool)
        share[name] = float(np.mean(masks[name]))
    return Overlap(smd, share, masks)


@dataclass
class Adjustment:
    """What the shift adjustment uses (:func:`common_support_adjustment`).

    ``keep`` marks the items the test runs on (None: all); ``covariates`` holds the
    adjusted-for covariates' values on all items; ``left_out`` the covariates not used.
    """

    covariates: dict[str, np.ndarray]
    keep: np.ndarray | None
    left_out: list[str]
    overlap: Overlap | None

    @property
    def n_trimmed(self) -> int:
        return 0 if self.keep is None else int((~self.keep).sum())


def common_support_adjustment(group, covariates: dict[str, np.ndarray], *, min_overlap: float) -> Adjustment:
    """Adjust for every covariate; where one lacks overlap, on the items inside its common support.

    A covariate with less than ``min_overlap`` of the items in its common support
    (:func:`covariate_overlap`) has items with no comparable item in the other group, for
    which the adjustment would extrapolate: those items are trimmed and the covariate is
    kept (dropping it, as before, dropped the difficulty covariate exactly when the shift
    was large). Covariates with enough overlap trim nothing, so an unshifted design keeps
    every item. Only when trimming would leave fewer than 2 items in a group do the
    covariates short of ``min_overlap`` drop out instead, with no trimming.

    >>> g = np.arange(40) < 20
    >>> adj = common_support_adjustment(g, {"x": np.arange(40.0)}, min_overlap=0.8)
    >>> adj.keep is None, adj.left_out  # no overlap at all: nothing to trim to
    (True, ['x'])
    """
    if not covariates:
        return Adjustment({}, None, [], None)
    group = _group(group)
    overlap = covariate_overlap(group, covariates)
    kept = overlap.supported(min_overlap)
    keep = np.ones(group.size, bool)
    for name in covariates:
        if name not in kept:
            keep &= overlap.masks[name]
    if keep[group].sum() >= 2 and keep[~group].sum() >= 2:
        return Adjustment(dict(covariates), None if keep.all() else keep, [], overlap)
    return Adjustment({k: covariates[k] for k in kept}, None, [k for k in covariates if k not in kept], overlap)
