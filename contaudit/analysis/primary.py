"""The two primary tests, the perplexity DiD and the memorization DiD, run as the design
allows: item permutation tests with one clean model, a reference panel with two or more
(seed siblings: :mod:`~contaudit.analysis.panel`; other families:
:mod:`~contaudit.analysis.families`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import contaudit.analysis.verdict as _verdict
from contaudit.analysis.verdict import DesignCheck
from contaudit.analysis.design import Design, covariates
from contaudit.analysis.did import DiDResult, memorization_did, perplexity_did
from contaudit.analysis.families import FamilyResult, family_did
from contaudit.analysis.inputs import (ModelFiles, ScoreMatrix, log_lengths, probe_features, probe_smd, stack_sets,
                                       read_probes, read_scores, score_matrix)
from contaudit.analysis.panel import Adjustment, PanelResult, common_support_adjustment, panel_did
from contaudit.analysis.units import Units, suffix_mean_per_byte
from contaudit.errors import InputError
from contaudit.metrics import METRICS
from contaudit.protocol import AnalysisSettings
from contaudit.statistics import json_number


# One random stream per test, spawned from the protocol's seed; each keeps its position (a new
# completion metric takes the next free one in contaudit/metrics.py), so results stay
# reproducible across versions.
TEST_STREAMS = {"perplexity": 0, "supporting": 3, "inflation": 100}  # 100: far from the metrics' next numbers


def random_streams(seed: int) -> dict[str, np.random.Generator]:
    """The named random streams of one analysis: the tests' and each completion metric's."""
    streams = {**TEST_STREAMS, **{m.name: m.stream for m in METRICS.values()}}
    if len(set(streams.values())) < len(streams):
        raise ValueError(f"two tests share a random stream: {streams}; give each metric its own `stream`")
    spawned = np.random.SeedSequence(seed).spawn(max(streams.values()) + 1)
    return {name: np.random.default_rng(spawned[k]) for name, k in streams.items()}


def _adjustment(matrix: ScoreMatrix, group: np.ndarray, features: dict[str, np.ndarray],
                settings: AnalysisSettings) -> Adjustment:
    """The covariates the panel test adjusts for, and the items in their common support."""
    return common_support_adjustment(group, covariates(matrix, settings.adjust_for, features),
                                     min_overlap=settings.min_overlap)


def _panel_test(matrix: ScoreMatrix, group: np.ndarray, adjustment: Adjustment, *, alternative: str,
                settings: AnalysisSettings) -> PanelResult | FamilyResult | None:
    if group.sum() < 2 or (~group).sum() < 2:
        return None
    if settings.references == "families":
        if matrix.references.shape[0] < 3:
            return None  # the design says why (Design.inconclusive_reason)
        return family_did(matrix.suspect, matrix.references, group, alternative=alternative,
                          method="robust" if settings.reference_test == "robust" else "conformal",
                          alpha=settings.alpha, n_tests=2, confidence_level=settings.confidence_level)
    keep = adjustment.keep if adjustment.keep is not None else np.ones(group.size, bool)
    return panel_did(matrix.suspect[keep], matrix.references[:, keep], group[keep],
                     covariates={k: v[keep] for k, v in adjustment.covariates.items()}, alternative=alternative,
                     method=settings.reference_test, alpha=settings.alpha, n_tests=2,
                     confidence_level=settings.confidence_level)


def perplexity_test(test: ScoreMatrix, shadow: ScoreMatrix, design: Design, settings: AnalysisSettings, rng, *,
                    lengths: dict[str, float] | None = None) -> DiDResult | PanelResult | None:
    """The perplexity DiD: item permutation test with one clean model, reference panel with two or more."""
    if min(len(test.ids), len(shadow.ids)) < 2:
        return None
    if not design.panel:
        return perplexity_did(test.suspect, test.clean, shadow.suspect, shadow.clean,
                              n_resamples=settings.n_permutations, n_bootstrap=settings.n_bootstrap,
                              confidence_level=settings.confidence_level, rng=rng)
    both = stack_sets(test, shadow)
    group = np.r_[np.ones(len(test.ids), bool), np.zeros(len(shadow.ids), bool)]
    features = {"length": log_lengths(test.ids + shadow.ids, lengths)}
    return _panel_test(both, group, _adjustment(both, group, features, settings), alternative="less",
                       settings=settings)


def memorization_test(probes: ScoreMatrix, seen: np.ndarray, features: dict[str, np.ndarray], design: Design,
                      settings: AnalysisSettings, rng) -> DiDResult | PanelResult | None:
    """The memorization DiD on one completion metric (seen vs unseen probes)."""
    if seen.sum() < 2 or (~seen).sum() < 2:
        return None
    if not design.panel:
        return memorization_did(probes.suspect[seen], probes.clean[seen], probes.suspect[~seen],
                                probes.clean[~seen], n_resamples=settings.n_permutations,
                                n_bootstrap=settings.n_bootstrap, confidence_level=settings.confidence_level,
                                rng=rng)
    return _panel_test(probes, seen, _adjustment(probes, seen, features, settings), alternative="greater",
                       settings=settings)


def panel_warnings(what: str, result) -> list[str]:
    """What a reader of a panel test should know: a spread that does not look normal (sibling panel);
    a suspect outside the references' range, or a relation that predicts little (cross-family panel)."""
    out = []
    if isinstance(result, PanelResult) and math.isfinite(result.normality_pvalue) and result.normality_pvalue < 0.05:
        out.append(f"The clean models' {what} effects do not look normal (Shapiro p = {result.normality_pvalue:.3g}). "
                   f"The robust prediction test allows for heavy tails and outliers (docs/analysis.md); "
                   f"reference_test = 'rank' with {result.references_needed}+ clean models assumes nothing about "
                   f"their spread.")
    if isinstance(result, FamilyResult):
        x_s = result.suspect_point[0]
        low, high = result.reference_points[:, 0].min(), result.reference_points[:, 0].max()
        if result.extrapolation:
            out.append(f"The {what} test extrapolates: the suspect's shadow score ({x_s:.4g}) lies outside the "
                       f"references' range ({low:.4g} to {high:.4g}), so the prediction of its test score leans on the "
                       f"relation's straightness (leverage {result.leverage:.2f}); add references on its side.")
        if math.isfinite(result.slope_pvalue) and (result.slope_pvalue > 0.05 or result.r_squared < 0.3):
            out.append(f"The references' {what} relation is weak (R² {result.r_squared:.2f}, slope p = "
                       f"{result.slope_pvalue:.2g}): the shadow score predicts little of the test score, so the "
                       f"suspect is judged mostly against the references' mean, with a wide interval.")
    return out


@dataclass
class MemorizationPart:
    """The memorization test on every completion metric, with its checks and per-probe rows."""

    results: dict[str, DiDResult | PanelResult | None]
    checks: list[DesignCheck]
    warnings: list[str]
    data: dict
    items: list[dict]
    not_run: str | None = None  # why the test was not run (the corpus holds too few benchmark items)
    suffix_tokens_per_byte: float | None = None  # the suspect's, when suffix log-probs are compared per byte


def memorization_part(probes, probe_paths: list, models: list[ModelFiles], design: Design,
                      settings: AnalysisSettings, streams: dict[str, np.random.Generator],
                      units: Units | None = None) -> MemorizationPart:
    """Read the probes and every model's probe scores, check the design, run the test on each metric."""
    table = read_probes(probes)
    probe_table = table.probes
    n_seen_items = (table.index_items or {}).get("seen")
    if n_seen_items is not None and n_seen_items < settings.min_probes:
        # The corpus holds (almost) none of the benchmark: nothing for the test to compare.
        # That is corpus evidence, not a design failure; the perplexity DiD decides alone.
        n_items = sum(table.index_items.values())
        reason = (f"The memorization test was not run: the corpus index marks {n_seen_items} of {n_items} benchmark "
                  f"items seen, fewer than the {settings.min_probes} seen probes it needs (so the corpus holds "
                  f"almost none of this benchmark). The verdict rests on the perplexity DiD and cannot be "
                  f"CONTAMINATED.")
        return MemorizationPart({m: None for m in METRICS}, [], [],
                                {"n_seen": 0, "n_unseen": 0, "index_items": table.index_items}, [], not_run=reason)
    if not probe_table:
        # `contaudit probes` wrote no pairs (its manifest says why) although the corpus holds
        # benchmark items: the test should run and cannot, a failed sample-size check.
        checks = _verdict.check_sample_sizes({"seen": 0, "unseen": 0},
                                             {"seen": settings.min_probes, "unseen": settings.min_probes})
        return MemorizationPart({m: None for m in METRICS}, checks, [], {"n_seen": 0, "n_unseen": 0}, [])
    if any(p is None for p in probe_paths[:2]):
        raise InputError("the memorization test needs --suspect-probes and --clean-probes with --probes")
    # Score files written before a metric existed still analyze on the others.
    required = tuple(dict.fromkeys((*(m for m in METRICS if METRICS[m].required), settings.primary_metric)))
    optional = tuple(m for m in METRICS if m not in required)
    probe_files = [read_scores(p, require=required, optional=optional + ("suffix_tokens",), allow_empty=True)
                   for p in probe_paths]
    for m, f in zip(models, probe_files):
        m.files["probes"] = f
    warnings: list[str] = []
    for f in probe_files:
        if not f.rows:  # every probe skipped by the scorer, e.g. suffixes longer than the context
            skipped = ((f.manifest or {}).get("counts") or {}).get("skip_reasons")
            warnings.append(f"{f.path} has no scored probes (skipped: {skipped or 'reasons unknown'}); "
                            f"the memorization test cannot run.")
    universe = list(probe_table)
    available = [m for m in METRICS
                 if all(not f.rows or m in next(iter(f.rows.values())) for f in probe_files)]
    results: dict[str, DiDResult | PanelResult | None] = {}
    for m in METRICS:
        if m not in available:
            results[m] = None
            warnings.append(f"the probe score files have no {m!r}; rescore them with this version to get it")
    matrices = {m: score_matrix("probes", probe_files, m, universe=universe) for m in available}
    suffix_tpb = None
    per_token = [m for m in matrices if METRICS[m].per_token]
    if units is not None and units.per_byte and per_token:
        suffix_bytes = {i: p.get("suffix_bytes") for i, p in probe_table.items()}
        for m in per_token:
            matrices[m].values = suffix_mean_per_byte(matrices[m], probe_files, suffix_bytes)
        ids = matrices[per_token[0]].ids
        suffix_tpb = (sum(probe_files[0].rows[i]["suffix_tokens"] for i in ids)
                      / max(1, sum(suffix_bytes[i] for i in ids)))
    p0 = matrices[next(m for m in METRICS if METRICS[m].required)]  # every probe file has it
    extra = sorted(set().union(*(f.rows for f in probe_files)) - set(probe_table))
    if extra:
        warnings.append(f"{len(extra)} scored probe ids are not in {probes} and were ignored "
                        f"(e.g. {extra[0]!r}); check that the probe files belong together.")
    unscored = [i for i in universe if all(i not in f.rows for f in probe_files)]
    seen = np.array([probe_table[i]["probe_set"] == "seen" for i in p0.ids], dtype=bool)
    n_seen, n_unseen = int(seen.sum()), int((~seen).sum())
    checks = _verdict.check_sample_sizes({"seen": n_seen, "unseen": n_unseen},
                                         {"seen": settings.min_probes, "unseen": settings.min_probes})
    checks.append(_verdict.check_pairing("probe", len(p0.ids), p0.n_unpaired + len(unscored),
                                         max_fraction=settings.max_unpaired_fraction))
    balance = table.balance
    if balance is None:
        balance = {f"{cov}_smd": probe_smd(probe_table, p0.ids, field_) for cov, field_ in
                   (("length", "n_words"), ("rarity", "rarity"))}
        warnings.append("probes.manifest.json has no balance diagnostics; balance was computed from the "
                        "n_words and rarity fields of probes.jsonl.")
    features = probe_features(probe_table, p0.ids)
    if design.panel:
        # The panel compares models on the same probes, so imbalance does not bias it; it is
        # reported, and the covariates with enough overlap are adjusted for.
        covs = {k: v for k, v in features.items() if v is not None and k in settings.adjust_for}
        if n_seen >= 2 and n_unseen >= 2:
            checks.append(_verdict.check_shift_overlap("probe_shift", "seen and unseen probes", seen, covs,
                                                       min_overlap=settings.min_overlap, panel=True,
                                                       adjusted=settings.references == "siblings"))
    else:
        matched = table.match_on or ("length", "rarity")
        checks += _verdict.check_probe_balance({cov: balance.get(f"{cov}_smd") for cov in ("length", "rarity")
                                                if cov in matched}, threshold=settings.balance_threshold)
        for cov in ("length", "rarity"):
            if cov not in matched and balance.get(f"{cov}_smd") is not None:
                warnings.append(f"The probes were not matched on {cov} (SMD {balance[f'{cov}_smd']:+.3f}); "
                                f"it is reported but not checked.")
    for metric in available:
        results[metric] = memorization_test(matrices[metric], seen, features, design, settings, streams[metric])
    data = {**p0.to_dict(), "n_seen": n_seen, "n_unseen": n_unseen, "n_unscored": len(unscored),
            "n_extra_scored": len(extra), "balance": balance}
    by_id = {m: dict(zip(matrices[m].ids, zip(matrices[m].suspect, matrices[m].clean))) for m in available}
    items = []
    for i in p0.ids:
        row = {"id": i, "probe_set": probe_table[i]["probe_set"], "n_words": probe_table[i]["n_words"]}
        for m, spec in METRICS.items():
            s, c = by_id.get(m, {}).get(i, (None, None))
            if spec.binary and s is not None:  # 0/1; the panel's clean side is a mean over references
                s, c = int(s), json_number(c) if design.panel else int(c)
            else:
                s, c = json_number(s), json_number(c)
            row.update({f"{spec.item_key}_sus": s, f"{spec.item_key}_clean": c})
        items.append(row)
    return MemorizationPart(results, checks, warnings, data, items, suffix_tokens_per_byte=suffix_tpb)
