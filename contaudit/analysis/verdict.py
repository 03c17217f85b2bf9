"""The decision rule: design checks first, then the verdict from the two primary tests.

Labels (README, "The statistics"):

* ``INVALID_DESIGN`` -- a design check failed: too few items or probes, too many items
  scored by only one model, probe sets out of balance, or the clean model sees the
  shadow set as a different distribution from the test set. The tests are still
  reported, but they decide nothing.
* ``CONTAMINATED`` -- both primary tests count: Holm-adjusted p <= alpha, the estimate
  points the contamination way (perplexity DiD < 0, memorization DiD > 0), and its size
  reaches the protocol's minimum effect.
* ``SUSPECT`` -- exactly one counts (also the most a run without probes can reach).
* ``NO_EVIDENCE`` -- neither counts; the minimum detectable effect at the protocol's
  power is reported, so that "no evidence" is not read as "clean".
* ``INCONCLUSIVE`` -- the design cannot hold the false-positive rate at the level where
  the verdict is decided, whatever the data say: one clean model on sets that are not a
  random split (the item-level tests cannot see how two clean models differ on shifted
  sets), or a rank-test panel too small to reach Holm's alpha / 2. The tests are shown
  for diagnosis; the reasons say what would make the audit decidable. It is never
  SUSPECT: every SUSPECT or CONTAMINATED carries the error rate its level promises.

Without a clean model (:func:`decide_order_only`) Oren et al.'s order test decides alone:
SUSPECT when it counts, else NO_EVIDENCE; never CONTAMINATED, and the reasons say why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from contaudit.analysis.did import DiDResult

from contaudit.statistics import detection_z, json_number, format_p, hedges_g, holm, minimum_detectable_effect
from contaudit.errors import InputError
from contaudit.metrics import METRICS
from contaudit.protocol import AnalysisSettings

CONTAMINATED = "CONTAMINATED"
SUSPECT = "SUSPECT"
NO_EVIDENCE = "NO_EVIDENCE"
INVALID_DESIGN = "INVALID_DESIGN"
INCONCLUSIVE = "INCONCLUSIVE"
LABELS = (NO_EVIDENCE, SUSPECT, CONTAMINATED, INCONCLUSIVE, INVALID_DESIGN)
GATE_LEVELS = {NO_EVIDENCE: 0, SUSPECT: 1, CONTAMINATED: 2}
UNDECIDED = (INCONCLUSIVE, INVALID_DESIGN)  # labels that neither pass nor fail a gate by p-value

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INVALID = 3  # 2 is taken by library errors at the CLI boundary
EXIT_INCONCLUSIVE = 4
EXIT_STATUS = {EXIT_PASS: "PASS", EXIT_FAIL: "FAIL", EXIT_INVALID: "INVALID_DESIGN", EXIT_INCONCLUSIVE: "INCONCLUSIVE"}


@dataclass
class DesignCheck:
    """One design check. ``passed`` is None when it could not be run (not a failure)."""

    name: str
    passed: bool | None
    detail: str
    value: float | None = None
    threshold: float | None = None
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.passed is not None:
            self.passed = bool(self.passed)  # numpy booleans would fail `is False` and JSON

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value"] = json_number(self.value)
        return d


@dataclass
class PrimaryTest:
    """One primary test as the verdict sees it."""

    name: str
    estimate: float
    pvalue: float
    pvalue_holm: float
    confidence_interval: tuple[float | None, float | None]
    direction: str  # "negative" or "positive": the sign contamination produces
    min_effect: float
    significant: bool
    direction_ok: bool
    above_minimum: bool
    unit: str

    @property
    def counts(self) -> bool:
        return self.significant and self.direction_ok and self.above_minimum

    def to_dict(self) -> dict:
        d = asdict(self)
        d["confidence_interval"] = list(self.confidence_interval)
        d["counts"] = self.counts
        return d


@dataclass
class Verdict:
    label: str
    reasons: list[str]
    alpha: float
    tests: list[PrimaryTest]
    minimum_detectable_effect: dict
    ceiling: str = CONTAMINATED  # the highest label this design allows (SUSPECT: one test only; INCONCLUSIVE)

    def to_dict(self) -> dict:
        return {"label": self.label, "reasons": self.reasons, "alpha": self.alpha,
                "correction": "holm", "tests": [t.to_dict() for t in self.tests],
                "minimum_detectable_effect": self.minimum_detectable_effect, "ceiling": self.ceiling}


# --- design checks ----------------------------------------------------------------------

def check_sample_sizes(counts: dict[str, int | None], minimum: dict[str, int]) -> list[DesignCheck]:
    """One check per set: ``counts[name] >= minimum[name]``; a None count is not checked.

    >>> check_sample_sizes({"test": 12}, {"test": 30})[0].passed
    False
    """
    checks = []
    for name, n in counts.items():
        need = minimum[name]
        if n is None:
            continue
        ok = n >= need
        noun = f"{name} probes" if name in ("seen", "unseen") else f"{name} items"
        detail = (f"{n} {noun} scored by both models (at least {need} needed)" if ok else
                  f"Too few {noun}: {n} scored by both models, the protocol needs at least {need}.")
        checks.append(DesignCheck(f"sample_size_{name}", ok, detail, value=n, threshold=need))
    return checks


def check_pairing(name: str, n_paired: int, n_unpaired: int, *, max_fraction: float) -> DesignCheck:
    """Items scored by only one of the two models must stay a small share of the set."""
    total = n_paired + n_unpaired
    frac = n_unpaired / total if total else 0.0
    ok = frac <= max_fraction
    detail = (f"{n_unpaired} of {total} {name} items scored by only one model ({frac:.1%}; "
              f"at most {max_fraction:.0%} allowed)")
    if not ok:
        detail = (f"Too many {name} items are scored by only one of the models: {n_unpaired} of {total} "
                  f"({frac:.1%}; the protocol allows {max_fraction:.0%}). Rescore them with both models.")
    return DesignCheck(f"pairing_{name}", ok, detail, value=frac, threshold=max_fraction,
                       numbers={"n_paired": n_paired, "n_unpaired": n_unpaired})


def check_probe_balance(smd: dict[str, float | None], *, threshold: float) -> list[DesignCheck]:
    """|SMD| of each matching covariate (seen vs unseen) must not exceed ``threshold``."""
    checks = []
    for covariate, value in smd.items():
        if value is None or not math.isfinite(value):
            checks.append(DesignCheck(f"probe_balance_{covariate}", None,
                                      f"probe balance on {covariate} not available", threshold=threshold))
            continue
        ok = abs(value) <= threshold
        detail = (f"seen and unseen probes balanced on {covariate} (SMD {value:+.3f}, |SMD| <= {threshold})" if ok else
                  f"Seen and unseen probes are out of balance on {covariate}: standardized mean difference "
                  f"{value:+.3f}, more than {threshold} allowed. Rebuild the probes with closer matching.")
        checks.append(DesignCheck(f"probe_balance_{covariate}", ok, detail, value=value, threshold=threshold))
    return checks


def check_shift_overlap(name: str, what: str, group, covariates: dict, *, min_overlap: float, panel: bool,
                        clean_test=None, clean_shadow=None, unit: str = "nats/token",
                        adjusted: bool = True) -> DesignCheck:
    """Report a shift between two item groups that is expected (not a random split) and what covers it.

    The shift: Hedges' g of the clean models' NLL (when given) and each covariate's SMD.
    The adjustment (:func:`contaudit.analysis.panel.common_support_adjustment`) uses every
    covariate on the items inside the groups' common support and trims the others, where
    it would extrapolate. The check does not fail on the shift: with a reference panel the
    tests stay valid under it (they compare the suspect with clean models scored on the
    same items); with one clean model the design is INCONCLUSIVE.
    """
    from contaudit.analysis.panel import common_support_adjustment

    adjustment = common_support_adjustment(group, covariates, min_overlap=min_overlap)
    overlap = adjustment.overlap
    shares = overlap.share_in_support if overlap else {}
    kept, dropped = list(adjustment.covariates), adjustment.left_out
    numbers = {"overlap": overlap.to_dict() if overlap else None, "min_overlap": min_overlap,
               "adjusted_for": kept if panel and adjusted else [], "left_out": dropped,
               "trimmed_items": adjustment.n_trimmed if panel and adjusted else 0}
    shift = ""
    if clean_test is not None and clean_shadow is not None and len(clean_test) >= 2 and len(clean_shadow) >= 2:
        g = hedges_g(clean_test, clean_shadow)
        numbers.update(hedges_g=json_number(g), mean_test=float(np.mean(clean_test)), mean_shadow=float(np.mean(clean_shadow)))
        shift = f"clean-model NLL {np.mean(clean_test):.3f} vs {np.mean(clean_shadow):.3f} {unit} (Hedges' g {g:+.3f})"
    parts = [shift] if shift else []
    if overlap:
        parts.append(", ".join(f"{k} SMD {v:+.2f} ({shares[k]:.0%} of items in common support)"
                               for k, v in overlap.smd.items()))
    described = "; ".join(parts) or "no covariates to compare"
    if panel and not adjusted:
        detail = (f"Shift between {what}: {described}. The cross-family test judges the suspect against the clean "
                  f"models' relation between their scores on the two groups, scored on the same items, so the shift "
                  f"does not bias it; it uses each model's group means, with no item-covariate adjustment.")
    elif panel:
        n = len(group)
        how = (f"adjusted for {', '.join(kept)}" if kept else "not adjusted") + (
            f" on the {n - adjustment.n_trimmed} of {n} items in common support (the {adjustment.n_trimmed} outside "
            f"it are trimmed: the adjustment would extrapolate for them)" if adjustment.n_trimmed else "") + (
            f"; left out of the adjustment, where it would extrapolate (under {min_overlap:.0%} in common support and "
            f"too few items to trim to): {', '.join(dropped)}" if dropped else "")
        detail = (f"Shift between {what}: {described}. The tests compare the suspect with clean models scored on "
                  f"the same items, so the shift does not bias them; {how}.")
    else:
        detail = (f"Shift between {what}: {described}. With one clean model the tests cannot separate this shift "
                  f"from model-to-model differences, so the verdict is INCONCLUSIVE.")
    return DesignCheck(name, True, detail, value=overlap.worst if overlap else None, threshold=min_overlap,
                       numbers=numbers)


def panel_too_small(n_clean: int, *, alpha: float, n_tests: int) -> str | None:
    """Why a rank-test panel cannot reach Holm's ``alpha / n_tests`` (None when it can).

    The rank test's smallest p-value is ``1 / (R + 1)``: with too few clean models no
    test can count, whatever the suspect did, so the audit is INCONCLUSIVE (not
    NO_EVIDENCE, which would read as a finding).
    """
    from contaudit.analysis.panel import references_needed

    needed = references_needed(alpha, n_tests)
    if n_clean >= needed:
        return None
    return (f"With {n_clean} clean models the rank test's smallest p-value is {1 / (n_clean + 1):.3g}, which cannot "
            f"pass Holm's alpha / {n_tests} = {alpha / n_tests:.3g}: no result could count. Add clean models "
            f"({needed} are needed) or use reference_test = 'robust'.")


def check_shadow_comparability(clean_test, clean_shadow, *, rule: str = "difference", margin: float = 0.2,
                               alpha: float = 0.05, unit: str = "nats/token") -> DesignCheck:
    """Does the clean model see the test and shadow sets as the same distribution?

    Compares the clean model's per-item mean NLL on the two sets: Hedges' g and a
    two-sided Welch t-test.

    * ``rule="difference"``: fails when the difference is both significant
      (Welch p < ``alpha``) and large (``|g| > margin``).
    * ``rule="equivalence"``: passes only when two one-sided Welch tests (TOST) show
      the mean difference lies within ``+-margin`` pooled standard deviations at
      level ``alpha``.
    """
    x = np.asarray(clean_test, dtype=float)
    y = np.asarray(clean_shadow, dtype=float)
    if rule not in ("difference", "equivalence"):
        raise InputError(f"`rule` must be 'difference' or 'equivalence'; got {rule!r}.")
    if x.size < 2 or y.size < 2:
        return DesignCheck("shadow_comparability", None, "shadow comparability not computed (fewer than 2 items)",
                           threshold=margin)
    g = hedges_g(x, y)
    welch = stats.ttest_ind(x, y, equal_var=False)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    diff = float(x.mean() - y.mean())
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    numbers = {"rule": rule, "hedges_g": json_number(g), "welch_pvalue": json_number(welch.pvalue), "mean_test": float(x.mean()),
               "mean_shadow": float(y.mean()), "difference": diff, "margin": margin, "alpha": alpha}
    if se == 0:
        ok = diff == 0
        numbers["tost_pvalue"] = 0.0 if ok else 1.0
    elif rule == "difference":
        ok = not (welch.pvalue < alpha and abs(g) > margin)
    else:
        df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
        bound = margin * pooled
        p_tost = max(stats.t.sf((diff + bound) / se, df), stats.t.cdf((diff - bound) / se, df))
        numbers["tost_pvalue"] = float(p_tost)
        ok = p_tost < alpha
    described = (f"clean-model NLL test {x.mean():.3f} vs shadow {y.mean():.3f} {unit} "
                 f"(Hedges' g {g:+.3f}, Welch p = {welch.pvalue:.3g})")
    if ok:
        detail = f"The clean model sees test and shadow alike: {described}."
    elif rule == "difference":
        detail = (f"The clean model sees the shadow set as a different distribution: {described}; the difference "
                  f"is significant at {alpha} and larger than the {margin} SD margin, so the shadow set cannot "
                  f"stand in for the test set.")
    else:
        detail = (f"Equivalence of test and shadow under the clean model is not shown: {described}; TOST "
                  f"p = {numbers['tost_pvalue']:.3g} for a +-{margin} SD margin at level {alpha}.")
    return DesignCheck("shadow_comparability", ok, detail, value=g, threshold=margin, numbers=numbers)


# --- the verdict ------------------------------------------------------------------------

def _direction_ok(estimate: float, direction: str) -> bool:
    return estimate < 0 if direction == "negative" else estimate > 0


def rule_label(n_counting: int, ceiling: str) -> str:
    """The decision rule, once: CONTAMINATED when both primary tests count and the design allows it,
    SUSPECT when one counts (or both, in a design capped at SUSPECT), NO_EVIDENCE when none does.

    >>> rule_label(2, CONTAMINATED), rule_label(2, SUSPECT), rule_label(1, CONTAMINATED), rule_label(0, SUSPECT)
    ('CONTAMINATED', 'SUSPECT', 'SUSPECT', 'NO_EVIDENCE')
    """
    if n_counting == 0:
        return NO_EVIDENCE
    return CONTAMINATED if n_counting >= 2 and ceiling == CONTAMINATED else SUSPECT


def rule_alpha(tests: list[dict], ceiling: str, reach: str) -> float:
    """The smallest alpha at which :func:`rule_label` reaches ``reach`` (SUSPECT or CONTAMINATED)
    for recorded primary tests (``pvalue_holm``, ``direction_ok``, ``above_minimum``); 1.0 when
    no alpha does. Only significance depends on alpha: SUSPECT needs the smallest Holm p of the
    tests that point the contamination way and are large enough, CONTAMINATED the largest of two.
    """
    eligible = [float(t["pvalue_holm"]) for t in tests if t["direction_ok"] and t["above_minimum"]]
    if reach == SUSPECT:
        return min(eligible, default=1.0)
    if ceiling != CONTAMINATED or len(eligible) < 2:
        return 1.0
    return max(eligible)


def primary_test_counts(estimate: float, p_holm: float, *, direction: str, min_effect: float, alpha: float,
                        interval: tuple[float | None, float | None] = (None, None)) -> bool:
    """The rule for one primary test: Holm-significant, in the contamination direction, and shown to reach the
    minimum effect (:func:`beyond_minimum`)."""
    return bool(p_holm <= alpha and _direction_ok(estimate, direction)
                and beyond_minimum(estimate, interval, direction=direction, min_effect=min_effect))


def beyond_minimum(estimate: float, interval: tuple[float | None, float | None], *, direction: str,
                   min_effect: float) -> bool:
    """Does the effect reach ``min_effect``? The interval's bound nearest zero must (so a true
    effect at the minimum passes about (1 - level) / 2 of the time, not half); without an
    interval (``n_bootstrap = 0``) the point estimate must.

    >>> beyond_minimum(-0.05, (-0.08, -0.02), direction="negative", min_effect=0.01)
    True
    >>> beyond_minimum(-0.05, (-0.09, -0.005), direction="negative", min_effect=0.01)
    False
    """
    low, high = interval
    if min_effect == 0:
        return True
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return abs(estimate) >= min_effect
    return high <= -min_effect if direction == "negative" else low >= min_effect


def _primary(name: str, result: DiDResult, p_holm: float, *, direction: str, min_effect: float, alpha: float,
             unit: str) -> PrimaryTest:
    est = result.statistic
    ci = (json_number(result.confidence_interval.low), json_number(result.confidence_interval.high))
    return PrimaryTest(name=name, estimate=est, pvalue=result.pvalue, pvalue_holm=float(p_holm),
                       confidence_interval=ci, direction=direction, min_effect=min_effect,
                       significant=bool(p_holm <= alpha), direction_ok=_direction_ok(est, direction),
                       above_minimum=beyond_minimum(est, ci, direction=direction, min_effect=min_effect), unit=unit)


def _mde(result, *, alpha: float, power: float, binary: bool) -> float:
    if hasattr(result, "minimum_detectable_effect"):  # cross-family panel: the relation's prediction error
        return result.minimum_detectable_effect(alpha, power)
    if hasattr(result, "reference_sd"):  # reference panel: the spread between clean models sets the scale
        from contaudit.analysis.panel import _heavy_null, robust_quantile

        r = result.n_references
        if r < 2 or not math.isfinite(result.reference_sd):
            return float("nan")
        scale = result.reference_sd * math.sqrt(1 + 1 / r)
        return float((robust_quantile(1 - alpha, r - 1, _heavy_null(r)) + stats.t.ppf(power, r - 1)) * scale)
    value = minimum_detectable_effect(result.sd[0], result.sd[1], result.n[0], result.n[1], alpha=alpha, power=power)
    if binary:
        # A 0/1 score whose seen rate rises by delta has variance delta(1 - delta) even when the
        # observed variance is 0 (nothing reproduced): solve delta = z sqrt(delta(1 - delta) / n).
        z = detection_z(alpha, power)
        value = max(value, z**2 / (result.n[0] + z**2))
    return value


def _ci(t: PrimaryTest, level: float) -> str:
    low, high = t.confidence_interval
    if low is None or high is None:
        return ""
    return f", {level:.0%} CI {low:+.3g} to {high:+.3g}"


def _clean(n_clean: int) -> str:
    return "the clean model does" if n_clean < 2 else f"a clean model would (judged against {n_clean} clean models)"


def _describe(t: PrimaryTest, level: float, n_clean: int = 1) -> str:
    what = {"perplexity_did": "perplexity DiD", "memorization_did": "memorization DiD"}[t.name]
    stats_ = f"{what} = {t.estimate:+.3g} {t.unit}{_ci(t, level)}; Holm-adjusted {format_p(t.pvalue_holm, named=True)}"
    if t.counts:
        if t.name == "perplexity_did":
            return (f"The suspect model finds the test set more familiar than the shadow set, by more than "
                    f"{_clean(n_clean)} ({stats_}).")
        how = ("is more likely to reproduce the suffixes of probes found in its training corpus verbatim than "
               "those of matched unseen probes" if t.unit in ("nats/token", "nats/byte") else
               "reproduces probes found in its training corpus more often than matched unseen probes")
        return f"The suspect model {how}, beyond what {_clean(n_clean)} ({stats_})."
    if t.significant and not t.direction_ok:
        return f"The {what} is significant but points away from contamination ({stats_})."
    if t.significant and not t.above_minimum:
        return (f"The {what} is significant but not shown to reach the protocol's minimum effect of "
                f"{t.min_effect:g} {t.unit}: its {level:.0%} interval reaches below it ({stats_}).")
    return f"The {what} is not significant ({stats_})."


def decide(perplexity: DiDResult | None, memorization: DiDResult | None, checks: list[DesignCheck],
           settings: AnalysisSettings, *, memorization_metric: str | None = None,
           cap_reason: str | None = None, n_clean: int = 1, memorization_not_run: str | None = None,
           inconclusive_reason: str | None = None, units=None) -> Verdict:
    """Apply the decision rule.

    Parameters
    ----------
    perplexity : DiDResult or None
        The perplexity DiD (None when it could not be computed; a failed sample-size
        check must then explain why).
    memorization : DiDResult or None
        The memorization DiD on the protocol's primary metric; None when no probes
        were given (the verdict is then at most SUSPECT).
    checks : list of DesignCheck
        Any check with ``passed is False`` makes the verdict INVALID_DESIGN.
    settings : AnalysisSettings
        alpha, minimum effects, power.
    memorization_metric : str
        Name of the primary completion metric, for the reasons.
    cap_reason : str, optional
        Why the design allows at most SUSPECT; CONTAMINATED then becomes SUSPECT with
        this reason.
    inconclusive_reason : str, optional
        Why the design cannot hold its false-positive rate (one clean model on sets that
        are not a random split; a rank panel too small): the label is INCONCLUSIVE
        whatever the tests show, and they are described for diagnosis only.
    units : contaudit.analysis.units.Units, optional
        The unit of the comparison (per token when not given).
    n_clean : int
        Clean models the tests compared with (2+: a reference panel), for the reasons.
    memorization_not_run : str, optional
        Why there is no memorization test although probes were built (the corpus holds
        too few benchmark items); the reason given instead of "no probes given".
    """
    level = settings.confidence_level
    ppl_unit = units.perplexity_unit if units is not None else "nats/token"
    mem_unit = memorization_metric or ""
    if memorization_metric in METRICS:
        mem_unit = (units.metric_unit(memorization_metric) if units is not None
                    else METRICS[memorization_metric].unit)
    results = [("perplexity_did", perplexity, "negative", settings.min_effect_perplexity, ppl_unit),
               ("memorization_did", memorization, "positive", settings.min_effect_memorization, mem_unit)]
    present = [r for r in results if r[1] is not None]
    tests: list[PrimaryTest] = []
    if present:
        adjusted = holm([r[1].pvalue for r in present])
        tests = [_primary(name, res, p, direction=d, min_effect=m, alpha=settings.alpha, unit=u)
                 for (name, res, d, m, u), p in zip(present, adjusted)]
    mde_alpha = settings.alpha / max(1, len(present))
    mde = {"power": settings.power, "alpha_per_test": mde_alpha}
    for name, res, _, _, _ in present:
        mde[name] = _mde(res, alpha=mde_alpha, power=settings.power,
                         binary=name == "memorization_did" and memorization_metric in METRICS
                         and METRICS[memorization_metric].binary)

    ceiling = (INCONCLUSIVE if inconclusive_reason else
               SUSPECT if cap_reason or memorization is None else CONTAMINATED)
    failed = [c for c in checks if c.passed is False]
    if inconclusive_reason:
        # The design cannot hold its error rate whatever the data: that comes first; failed checks are listed too.
        return Verdict(INCONCLUSIVE, [inconclusive_reason] + [f"Also: {c.detail}" for c in failed]
                       + [f"For diagnosis only: {_describe(t, level, n_clean)}" for t in tests],
                       settings.alpha, tests, mde, ceiling)
    if failed or perplexity is None:
        reasons = [c.detail for c in failed]
        if perplexity is None and not failed:
            reasons.append("The perplexity DiD could not be computed.")
        reasons.append("The design does not support a verdict; " + (
            "the tests below are shown for diagnosis only." if tests else "no primary test could be computed."))
        return Verdict(INVALID_DESIGN, reasons, settings.alpha, tests, mde, ceiling)

    reasons = [_describe(t, level, n_clean) for t in tests]
    n_counting = sum(t.counts for t in tests)
    if memorization is None:
        reasons.append(memorization_not_run or "No memorization test was run (no probes given), so the verdict cannot "
                       "be CONTAMINATED; build a corpus index and probes to run it.")
    label = rule_label(n_counting, ceiling)
    if n_counting == 2 and label == SUSPECT:
        reasons.insert(0, "Both primary tests show contamination, but this design allows at most SUSPECT.")
        reasons.append(cap_reason)
    elif label == CONTAMINATED:
        reasons.insert(0, "Both primary tests show contamination, in the same direction, above the minimum effects.")
    elif label == SUSPECT:
        reasons.insert(0, "Exactly one primary test shows contamination; the other does not confirm it.")
        if cap_reason:
            reasons.append(cap_reason)
    else:
        reasons.insert(0, f"Neither primary test shows contamination at alpha = {settings.alpha} (Holm-corrected).")
        parts = [f"a perplexity DiD of {-mde['perplexity_did']:+.3g} {ppl_unit}"]
        if "memorization_did" in mde:
            parts.append(f"a memorization DiD of {mde['memorization_did']:+.3g} ({memorization_metric})")
        reasons.append(f"This is not proof of a clean model: with these sample sizes the audit detects "
                       f"{' and '.join(parts)} or larger with {settings.power:.0%} power (one-sided, "
                       f"alpha = {mde_alpha:.3g} per test).")
    return Verdict(label, reasons, settings.alpha, tests, mde, ceiling)


def _describe_order(t: PrimaryTest, level: float) -> str:
    stats_ = (f"gap = {t.estimate:+.3g} nats per shard (published order minus the mean of shuffled orders)"
              f"{_ci(t, level)}; {format_p(t.pvalue, named=True)}")
    if t.counts:
        return (f"The suspect finds the test set's published item order more likely than shuffled orders "
                f"({stats_}): the pattern of a model that trained on the benchmark file.")
    if t.significant and not t.direction_ok:
        return f"The order test is significant but the published order is the less likely one ({stats_})."
    return f"The order test is not significant ({stats_})."


def decide_order_only(order, checks: list[DesignCheck], settings: AnalysisSettings, *, cap_reason: str,
                      mde: float | None = None, notes: tuple[str, ...] = ()) -> Verdict:
    """The decision rule of an audit without a clean model: Oren et al.'s order test alone.

    Parameters
    ----------
    order : ItemOrderResult or None
        The order test (one-sided, ``'greater'``); None when no item-order
        log-likelihoods were given (the design then fails).
    checks : list of DesignCheck
        Any failed check makes the verdict INVALID_DESIGN.
    settings : AnalysisSettings
        ``alpha``, ``confidence_level`` and ``power``.
    cap_reason : str
        Why such an audit allows at most SUSPECT; it is always among the reasons.
    mde : float, optional
        The smallest gap (nats per shard) the test detects with ``settings.power``.
    notes : tuple of str
        Supporting evidence worth a sentence among the reasons (it does not decide).

    The order test counts when ``p <= alpha`` with the published order the more likely
    (no correction: it is the only deciding test). Then the verdict is SUSPECT, else
    NO_EVIDENCE; never CONTAMINATED.
    """
    tests = []
    if order is not None:
        tests = [_primary("item_order", order, order.pvalue, direction="positive", min_effect=0.0,
                          alpha=settings.alpha, unit="nats/shard")]  # no minimum gap: any preference counts
    mde_record = {"power": settings.power, "alpha_per_test": settings.alpha}
    if mde is not None:
        mde_record["item_order"] = mde
    failed = [c for c in checks if c.passed is False]
    if failed or order is None:
        reasons = [c.detail for c in failed]
        reasons.append("The design does not support a verdict; " + (
            "the test below is shown for diagnosis only." if tests else "no test could be computed."))
        return Verdict(INVALID_DESIGN, reasons, settings.alpha, tests, mde_record, SUSPECT)
    t = tests[0]
    reasons = [_describe_order(t, settings.confidence_level)]
    label = rule_label(int(t.counts), SUSPECT)
    if label == SUSPECT:
        reasons.insert(0, "The order test shows contamination; without a clean model the verdict goes no higher "
                          "than SUSPECT.")
    else:
        reasons.insert(0, f"The order test does not show contamination at alpha = {settings.alpha}.")
        if mde is not None:
            reasons.append(f"This is not proof of a clean model: the test detects a gap of {mde:+.3g} nats per shard "
                           f"or larger with {settings.power:.0%} power, and only for a benchmark that leaked as a "
                           f"file in its published order.")
        else:
            reasons.append("This is not proof of a clean model: the test only sees a benchmark that leaked as a file "
                           "in its published order.")
    reasons += list(notes)
    reasons.append(cap_reason)
    return Verdict(label, reasons, settings.alpha, tests, mde_record, SUSPECT)


def gate(label: str, fail_on: str, *, inconclusive_fails: bool = False) -> int:
    """Exit code of a pre-release gate.

    0 when ``label`` ranks below ``fail_on`` (NO_EVIDENCE < SUSPECT < CONTAMINATED),
    1 when it reaches it, 3 for INVALID_DESIGN (an audit that cannot decide never
    passes), 4 for INCONCLUSIVE (1 with ``inconclusive_fails``).

    >>> gate("SUSPECT", "CONTAMINATED"), gate("SUSPECT", "SUSPECT"), gate("INVALID_DESIGN", "SUSPECT")
    (0, 1, 3)
    >>> gate("INCONCLUSIVE", "SUSPECT"), gate("INCONCLUSIVE", "SUSPECT", inconclusive_fails=True)
    (4, 1)
    """
    if fail_on not in (SUSPECT, CONTAMINATED):
        raise InputError(f"`fail_on` must be SUSPECT or CONTAMINATED; got {fail_on!r}.")
    if label == INVALID_DESIGN:
        return EXIT_INVALID
    if label == INCONCLUSIVE:
        return EXIT_FAIL if inconclusive_fails else EXIT_INCONCLUSIVE
    if label not in GATE_LEVELS:
        raise InputError(f"unknown verdict label {label!r}; expected one of {', '.join(LABELS)}.")
    return EXIT_FAIL if GATE_LEVELS[label] >= GATE_LEVELS[fail_on] else EXIT_PASS
