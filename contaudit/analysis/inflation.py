"""How much did contamination inflate a benchmark score? Per-item evaluation outcomes in, inflation out.

The outcomes are what an evaluation gave each item (1/0 correctness, or a real-valued score),
for the suspect and, when the user has them, the clean model or the reference panel. The
inflation estimate is the difference-in-differences of scores:

    inflation = (S_test - S_shadow) - (C_test - C_shadow)

with ``S`` the suspect's mean score and ``C`` the clean model's (the panel's mean per item),
computed as the difference of the per-item paired differences ``d = S - C`` between test and
shadow items (:func:`contaudit.analysis.did.difference_in_means`: permutation p-value, BCa
interval), as the perplexity DiD is. Contamination *raises* the test score, so the test is
one-sided (``greater``). Without a clean model the estimate is the suspect's test-minus-shadow
gap, which is unbiased only when test and shadow are exchangeable (a random split).

The "clean score" is what the suspect would score on the test set without the leak:
``S_test - inflation`` (= ``C_test + mean_shadow(S - C)``), and, where the corpus index says
which test items the corpus holds, the suspect's score on the unseen test items reweighted to
the whole test set's difficulty (post-stratified on the clean model's outcome, the one
difficulty covariate every audit with a clean model has).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from contaudit.analysis.did import difference_in_means
from contaudit.errors import InputError
from contaudit.statistics import json_number


# The item groups each model is scored on: key in results.json, the report table's label, the plot's label.
# The "found" groups need the corpus index, the "answer" ones an index of the answers too (`answer_field`).
SCORE_GROUPS = (("test", "Test, all", "test, all"),
                ("test_seen", "Test, found in the corpus", "test, in corpus"),
                ("test_seen_with_answer", "Test, found with its answer", "found with answer"),
                ("test_seen_without_answer", "Test, found without its answer", "found, answer not"),
                ("test_unseen", "Test, not found", "test, not in corpus"),
                ("shadow", "Shadow", "shadow"))


@dataclass(frozen=True)
class ModelOutcomes:
    """One model's per-item outcomes (item id -> score) and where they came from."""

    role: str
    scores: dict[str, float]
    metric: str = "score"
    source: dict | None = None  # {"path", "sha256", "format", ...}: the file the outcomes were read from


def is_binary(values) -> bool:
    """Whether every outcome is 0 or 1 (correctness), so proportions get Wilson intervals."""
    values = np.asarray(values, dtype=float)
    return values.size > 0 and bool(np.all((values == 0) | (values == 1)))


def _clip(interval: list, binary: bool) -> list:
    """An interval of a share of 0/1 outcomes stays within [0, 1]."""
    if not binary:
        return interval
    return [None if v is None else min(1.0, max(0.0, v)) for v in interval]


def score_summary(values, *, confidence_level: float = 0.95) -> dict:
    """Mean outcome of a group of items with its interval: Wilson for 0/1 outcomes, t otherwise."""
    values = np.asarray(values, dtype=float)
    n = int(values.size)
    if n == 0:
        return {"mean": None, "n": 0, "confidence_interval": [None, None], "ci_method": "none"}
    mean = float(values.mean())
    if is_binary(values):
        ci = stats.binomtest(int(values.sum()), n).proportion_ci(confidence_level, method="wilson")
        low, high, method = ci.low, ci.high, "wilson"
    elif n >= 2 and values.std(ddof=1) > 0:
        low, high = stats.t.interval(confidence_level, n - 1, loc=mean, scale=stats.sem(values))
        method = "t"
    else:
        low, high, method = mean, mean, "none"
    return {"mean": mean, "n": n, "confidence_interval": [json_number(low), json_number(high)], "ci_method": method}


def _comparison_scores(ids: list[str], clean: ModelOutcomes | None, references: list[ModelOutcomes]) -> np.ndarray:
    """Per item: the mean outcome of every clean model given (the clean model and the references)."""
    models = ([clean] if clean is not None else []) + list(references)
    return np.asarray([np.mean([m.scores[i] for m in models]) for i in ids], dtype=float)


def _unseen_score(suspect: np.ndarray, baseline: np.ndarray | None, unseen: np.ndarray, *,
                  confidence_level: float) -> dict:
    """The suspect's mean on unseen test items, post-stratified to the test set's difficulty.

    Strata are the comparison model's outcome (0/1) or, for real-valued outcomes, its halves at the
    median. When a stratum holds no unseen item (or there is no comparison model) no reweighting is
    possible and the plain mean of the unseen items is given, with ``reweighted`` false.
    """
    plain = score_summary(suspect[unseen], confidence_level=confidence_level)
    if baseline is None or not unseen.any():
        return {**plain, "reweighted": False, "strata": None}
    strata = baseline if is_binary(baseline) else (baseline > np.median(baseline)).astype(float)
    levels = np.unique(strata)
    # one stratum: nothing to reweight; a stratum with fewer than 2 unseen items has no variance to add
    if len(levels) < 2 or any((unseen & (strata == s)).sum() < 2 for s in levels):
        return {**plain, "reweighted": False, "strata": None}
    weights = np.asarray([(strata == s).mean() for s in levels])
    groups = [suspect[unseen & (strata == s)] for s in levels]
    means = np.asarray([g.mean() for g in groups])
    variances = np.asarray([g.var(ddof=1) / g.size if g.size > 1 else 0.0 for g in groups])
    estimate = float(weights @ means)
    se = float(np.sqrt((weights ** 2) @ variances))
    z = stats.norm.ppf(0.5 + confidence_level / 2)
    interval = _clip([estimate - z * se, estimate + z * se], is_binary(suspect))
    return {"mean": estimate, "n": int(unseen.sum()), "confidence_interval": interval,
            "ci_method": "normal, post-stratified", "reweighted": True,
            "strata": [{"baseline": float(s), "weight": float(w), "n_unseen": int(g.size), "mean": float(g.mean())}
                       for s, w, g in zip(levels, weights, groups)]}


def score_inflation(suspect: ModelOutcomes, test_ids: list[str], shadow_ids: list[str], *,
                    clean: ModelOutcomes | None = None, references: list[ModelOutcomes] = (),
                    index_status: dict[str, str] | None = None, answer_status: dict[str, str] | None = None,
                    n_resamples: int = 10_000, n_bootstrap: int = 10_000, confidence_level: float = 0.95,
                    rng=None) -> dict:
    """The inflation of the suspect's benchmark score by contamination, and its score without it.

    ``test_ids`` / ``shadow_ids`` are the audit's items; every model must have an outcome for each
    (items without one are refused, naming how many: dropping them silently would change the sets).
    ``index_status`` maps test ids to the corpus index's ``seen`` / ``unseen`` / ``ambiguous``;
    ``answer_status`` the same for each item's answer alone, splitting the seen items into those found with
    their answer (input and label contaminated) and those whose answer the corpus does not hold (input only;
    an answer too short to tell, ``ambiguous``, is in neither).
    Returns a JSON-ready dict (see docs/analysis.md, "Score inflation").
    """
    references = list(references)
    models = [suspect] + ([clean] if clean is not None else []) + references
    for model in models:
        missing = [i for i in list(test_ids) + list(shadow_ids) if i not in model.scores]
        if missing:
            where = f" ({model.source['path']})" if (model.source or {}).get("path") else ""
            raise InputError(f"outcomes of {model.role}{where} miss {len(missing)} of the audit's "
                             f"{len(test_ids) + len(shadow_ids)} items (first: {missing[0]!r}); "
                             f"evaluate the model on the whole test and shadow sets")
    s_test = np.asarray([suspect.scores[i] for i in test_ids], dtype=float)
    s_shadow = np.asarray([suspect.scores[i] for i in shadow_ids], dtype=float)
    compared = clean is not None or bool(references)
    c_test = _comparison_scores(test_ids, clean, references) if compared else None
    c_shadow = _comparison_scores(shadow_ids, clean, references) if compared else None

    if compared:
        did = difference_in_means(s_test - c_test, s_shadow - c_shadow, alternative="greater",
                                  n_resamples=n_resamples, n_bootstrap=n_bootstrap,
                                  confidence_level=confidence_level, rng=rng)
        design = ("suspect vs clean model" if not references else
                  f"suspect vs the mean of {len(references) + (clean is not None)} clean models")
        d_shadow = s_shadow - c_shadow
        counterfactual = float(c_test.mean() + d_shadow.mean())
        se = float(np.sqrt(c_test.var(ddof=1) / c_test.size + d_shadow.var(ddof=1) / d_shadow.size))
    else:
        did = difference_in_means(s_test, s_shadow, alternative="greater", n_resamples=n_resamples,
                                  n_bootstrap=n_bootstrap, confidence_level=confidence_level, rng=rng)
        design = "suspect alone: test minus shadow (unbiased only for a random split)"
        counterfactual = float(s_shadow.mean())
        se = float(s_shadow.std(ddof=1) / np.sqrt(s_shadow.size))
    z = stats.norm.ppf(0.5 + confidence_level / 2)
    binary = all(is_binary(list(m.scores.values())) for m in models)
    interval = did.confidence_interval.to_list()
    ci_method = did.ci_method
    if did.sd[0] == 0 and did.sd[1] == 0:
        # every item's difference is the same (e.g. no model passes anything): a resampling interval is a point
        interval, ci_method = [None, None], "none: every outcome difference is the same"
    clean_interval = [counterfactual - z * se, counterfactual + z * se] if se > 0 else [None, None]

    groups = {"test": list(test_ids), "shadow": list(shadow_ids)}
    unseen = None
    if index_status:
        status = np.asarray([index_status.get(i, "unknown") for i in test_ids])
        groups["test_seen"] = [i for i, s in zip(test_ids, status) if s == "seen"]
        if answer_status:
            answer = [answer_status.get(i, "unknown") for i in test_ids]
            groups["test_seen_with_answer"] = [i for i, s, a in zip(test_ids, status, answer)
                                               if s == "seen" and a == "seen"]
            groups["test_seen_without_answer"] = [i for i, s, a in zip(test_ids, status, answer)
                                                  if s == "seen" and a == "unseen"]
        groups["test_unseen"] = [i for i, s in zip(test_ids, status) if s == "unseen"]
        unseen = status == "unseen"
    scores = {m.role: {name: score_summary([m.scores[i] for i in ids], confidence_level=confidence_level)
                       for name, ids in groups.items()} for m in models}
    result = {
        "metric": suspect.metric,
        "design": design,
        "estimate": json_number(did.statistic),
        "pvalue": json_number(did.pvalue),
        "confidence_interval": interval,
        "confidence_level": confidence_level,
        "ci_method": ci_method,
        "alternative": "greater",
        "n": {"test": len(test_ids), "shadow": len(shadow_ids)},
        "suspect_test_score": float(s_test.mean()),
        "clean_score": {"estimate": counterfactual, "confidence_interval": _clip(clean_interval, binary),
                        "method": "suspect's test score minus the inflation"},
        "unseen_items_score": (_unseen_score(s_test, c_test, unseen, confidence_level=confidence_level)
                               if unseen is not None else None),
        "scores": scores,
        "inputs": {m.role: m.source for m in models if m.source},
    }
    return result
