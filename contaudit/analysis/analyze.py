"""``contaudit analyze``: score files in, ``results.json`` out.

Reads the per-item score files of the suspect and the clean model (and of any more
clean reference models) for the test and shadow sets and, optionally, the seen/unseen
probes; checks from the manifests that each role's files come from one model; pairs
items by id; runs the design checks, the two primary DiD tests (item permutation tests
with one clean model, reference-panel tests with two or more:
:mod:`contaudit.analysis.panel`), the supporting evidence and the verdict; and writes
``RUN_DIR/results.json`` (:meth:`AnalysisResults.to_dict` is its schema, documented in
``docs/analysis.md``) with ``results.manifest.json`` beside it. Items not scored by
every model are counted and reported (and checked against the protocol's limit), never
dropped silently.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from contaudit import __version__
from contaudit.analysis import verdict as _verdict
from contaudit.analysis.did import DiDResult, ItemOrderResult, difference_in_means, dose_response, item_order_mde, item_order_test, memorization_did, perplexity_did
from contaudit.statistics import json_number, format_p, standardized_mean_difference
from contaudit.analysis.families import FamilyResult, family_did
from contaudit.analysis.units import (Units, choose_units, require_per_byte, suffix_logprob_per_byte,
                                     tokens_per_byte)
from contaudit.analysis.panel import Adjustment, PanelResult, common_support_adjustment, panel_did
from contaudit.analysis.verdict import SUSPECT, DesignCheck
from contaudit.analysis.results import RESULTS_NAME, SCHEMA_VERSION, MANIFEST_NAME
from contaudit.errors import InputError
from contaudit.io import iter_jsonl
from contaudit.manifest import describe_path, make_manifest, read_json, write_json_atomic
from contaudit.protocol import COMPLETION_METRICS as COMPLETION_FIELDS
from contaudit.protocol import METRIC_UNITS, SHADOW_ORIGINS, AnalysisSettings, Protocol, load_analysis_settings

MAX_LISTED_IDS = 20
MAX_LOCATIONS = 3


@dataclass
class ScoreFile:
    """One score file: rows by id (file order kept), and its manifest when present."""

    path: Path
    rows: dict[str, dict]
    manifest: dict | None


def _manifest_beside(path: Path) -> Path:
    name = path.name
    for suffix in (".jsonl.gz", ".jsonl.zst", ".jsonl", ".json"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".manifest.json")
    return path.with_name(name + ".manifest.json")


def _number(value, key: str, *, path: Path, record: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"field {key!r} must be a finite number; got {value!r}", path=path, record=record)
    return float(value)


def read_scores(path: str | Path, *, require: tuple[str, ...] = ("nll_mean",),
                optional: tuple[str, ...] = (), allow_empty: bool = False) -> ScoreFile:
    """Read a score file (``scores/<model>/<set>.jsonl``).

    Every row needs ``id`` and the ``require`` fields as finite numbers; ``optional``
    fields are kept when present (a file either has them on every row or they are
    dropped for the whole file). Duplicate ids are errors, and so is an empty file
    unless ``allow_empty`` (probe files: every probe may have been skipped).
    """
    path = Path(path)
    rows: dict[str, dict] = {}
    first: dict[str, int] = {}
    present = set(optional)
    for record, rec in iter_jsonl(path):
        if "id" not in rec:
            raise InputError(f"missing field 'id'; fields are {sorted(rec)}", path=path, record=record)
        item_id = str(rec["id"])
        if item_id in first:
            raise InputError(f"duplicate id {item_id!r} (first at record {first[item_id]}); ids must be unique",
                             path=path, record=record)
        first[item_id] = record
        row = {}
        for key in require:
            if key not in rec:
                raise InputError(f"missing field {key!r}; a score file needs {list(require)}", path=path, record=record)
            row[key] = _number(rec[key], key, path=path, record=record)
        for key in list(present):
            if key in rec:
                row[key] = _number(rec[key], key, path=path, record=record)
            else:
                present.discard(key)
        rows[item_id] = row
    if not rows and not allow_empty:
        raise InputError("no scored items; expected one JSON object per line", path=path)
    for row in rows.values():
        for key in set(optional) - present:
            row.pop(key, None)
    manifest_path = _manifest_beside(path)
    manifest = read_json(manifest_path) if manifest_path.exists() else None
    return ScoreFile(path, rows, manifest)


@dataclass
class ProbeTable:
    """``probes.jsonl`` by id, with the balance and matching covariates from its manifest."""

    probes: dict[str, dict]
    balance: dict | None
    match_on: tuple[str, ...] | None
    index_items: dict[str, int] | None = None  # benchmark items in the index by status (None: not recorded)


def read_probes(path: str | Path) -> ProbeTable:
    """Read ``probes.jsonl`` (``id``, ``probe_set``, ``n_words``, ``rarity``) and ``probes.manifest.json``."""
    path = Path(path)
    probes: dict[str, dict] = {}
    for record, rec in iter_jsonl(path):
        for key in ("id", "probe_set"):
            if key not in rec:
                raise InputError(f"missing field {key!r}; fields are {sorted(rec)}", path=path, record=record)
        if rec["probe_set"] not in ("seen", "unseen"):
            raise InputError(f"probe_set must be 'seen' or 'unseen'; got {rec['probe_set']!r}", path=path,
                             record=record)
        item_id = str(rec["id"])
        if item_id in probes:
            raise InputError(f"duplicate probe id {item_id!r}", path=path, record=record)
        probes[item_id] = {"probe_set": rec["probe_set"], "n_words": rec.get("n_words"), "rarity": rec.get("rarity"),
                           "suffix_bytes": len(rec["suffix"].encode("utf-8")) if isinstance(rec.get("suffix"), str)
                           else None}
    manifest_path = _manifest_beside(path)
    if not probes and not manifest_path.exists():
        raise InputError("no probes; expected one JSON object per line", path=path)
    balance = match_on = index_items = None
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        balance = manifest.get("balance")
        if balance is not None and not isinstance(balance, dict):
            raise InputError(f"'balance' must be an object, got {type(balance).__name__}", path=manifest_path)
        recorded = (manifest.get("parameters") or {}).get("match_on")
        match_on = tuple(recorded) if isinstance(recorded, (list, tuple)) else None
        counts = manifest.get("counts")
        if isinstance(counts, dict) and isinstance(counts.get("n_seen"), int):
            index_items = {status: int(counts.get(f"{status}_items", 0)) for status in ("seen", "unseen", "ambiguous")}
    return ProbeTable(probes, balance, match_on, index_items)


def _probe_smd(probes: dict[str, dict], ids: list[str], key: str) -> float | None:
    """Standardized mean difference of ``key`` between seen and unseen probes (None if unavailable)."""
    values = {s: [probes[i][key] for i in ids if probes[i]["probe_set"] == s and isinstance(probes[i][key], (int, float))]
              for s in ("seen", "unseen")}
    smd = standardized_mean_difference(values["seen"], values["unseen"])
    return None if math.isnan(smd) else smd


def _index_evidence(index, test_ids) -> tuple[dict[str, dict], dict | None]:
    """The index's items by id, and what results.json records of it (None without an index)."""
    if index is None:
        return {}, None
    from contaudit.index.store import load_index

    idx = load_index(index)
    by_id = idx.by_id()
    return by_id, {"path": str(index), "n_items": len(idx.items),
                   "n_test_items_found": sum(i in by_id for i in test_ids)}


def read_item_order(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An item-order file: ``{"canonical": [ll per shard], "shuffled": [[ll per permutation] per shard]}``."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "canonical" not in data or "shuffled" not in data:
        raise InputError("expected an object with 'canonical' (per-shard log-likelihoods) and 'shuffled' "
                         "(per-shard lists of log-likelihoods of shuffled orders)", path=path)
    try:
        return np.asarray(data["canonical"], dtype=float), np.asarray(data["shuffled"], dtype=float)
    except (TypeError, ValueError):
        raise InputError("'canonical' must be a list of numbers and 'shuffled' a list of equal-length lists "
                         "of numbers", path=path) from None


def _index_record(rec: dict) -> dict:
    return {"occurrences": rec.get("occurrences"), "coverage": rec.get("coverage"), "status": rec.get("status"),
            "locations": (rec.get("locations") or [])[:MAX_LOCATIONS], "neardup_location": rec.get("neardup_location")}


def _did_dict(result: DiDResult | PanelResult, *, metric: str, unit: str, direction: str) -> dict:
    return {"metric": metric, "unit": unit, "direction": direction, **result.to_dict()}


# --- the models and their score files ---------------------------------------------------

@dataclass
class ReferenceScores:
    """Score files of one more clean reference model (``[[models.reference]]``)."""

    test: str | Path
    shadow: str | Path
    probes: str | Path | None = None


@dataclass
class ModelFiles:
    """The score files of one model, by set (``probes`` only with the memorization test)."""

    role: str
    files: dict[str, ScoreFile]

    def model_ids(self) -> dict[str, tuple[str, str]]:
        """``{file path: (fingerprint id, model path)}`` for files whose manifest names the model."""
        out = {}
        for f in self.files.values():
            model = (f.manifest or {}).get("model") if isinstance(f.manifest, dict) else None
            if isinstance(model, dict) and model.get("id"):
                out[str(f.path)] = (str(model["id"]), str(model.get("path", "?")))
        return out


def check_same_models(models: list[ModelFiles]) -> list[str]:
    """Refuse score files that do not belong together, using the model fingerprints in their manifests.

    Every file of one role must come from one model, and a reference model may not be
    the suspect, the clean model or another reference (that would shrink the spread the
    panel measures), and the clean model may not be the suspect (a copied directory has the
    same fingerprint): every difference would be zero and the audit would pass any gate.
    Returns warnings. Files without a manifest are not checked (the caller warns).
    """
    warnings = []
    owner: dict[str, tuple[str, str, str]] = {}  # fingerprint -> (role, file, model path)
    for m in models:
        ids = m.model_ids()
        distinct = {fp for fp, _ in ids.values()}
        if len(distinct) > 1:
            (fa, (ia, pa)), (fb, (ib, pb)) = [next((f, v) for f, v in ids.items() if v[0] == fp) for fp in
                                              sorted(distinct)[:2]]
            raise InputError(f"the {m.role} score files come from different models: {fa} was scored with {pa} "
                             f"(fingerprint {ia[:12]}) but {fb} with {pb} (fingerprint {ib[:12]}); give the "
                             f"{m.role} model's scores of every set")
        for fp in distinct:
            f, (_, path) = next((f, v) for f, v in ids.items() if v[0] == fp)
            if fp in owner:
                role, other, other_path = owner[fp]
                if {role, m.role} == {"suspect", "clean"}:
                    raise InputError(f"the suspect and clean score files come from the same model ({path}, "
                                     f"fingerprint {fp[:12]}): {f} and {other}; the clean control must be another "
                                     f"model, or every difference is zero and any gate passes")
                raise InputError(f"the {m.role} and {role} score files come from the same model ({path}, "
                                 f"fingerprint {fp[:12]}): {f} and {other}; each role needs its own model")
            owner[fp] = (m.role, f, path)
    return warnings


@dataclass
class ScoreMatrix:
    """One metric of one set for every model: row 0 the suspect, then the clean models."""

    name: str
    ids: list[str]  # items every model scored
    values: np.ndarray  # (M, N)
    only_suspect: list[str] = field(default_factory=list)  # scored by the suspect, missing from a clean model
    only_clean: list[str] = field(default_factory=list)  # scored by a clean model, not by the suspect

    @property
    def suspect(self) -> np.ndarray:
        return self.values[0]

    @property
    def references(self) -> np.ndarray:
        return self.values[1:]

    @property
    def clean(self) -> np.ndarray:
        """The clean side of the difference: the clean model, or the reference panel's mean."""
        return self.values[1:].mean(axis=0)

    @property
    def n_unpaired(self) -> int:
        return len(self.only_suspect) + len(self.only_clean)

    def to_dict(self) -> dict:
        return {"n_paired": len(self.ids), "n_only_suspect": len(self.only_suspect),
                "n_only_clean": len(self.only_clean), "only_suspect": self.only_suspect[:MAX_LISTED_IDS],
                "only_clean": self.only_clean[:MAX_LISTED_IDS]}


def score_matrix(name: str, files: list[ScoreFile], metric: str, *, universe: list[str] | None = None) -> ScoreMatrix:
    """Items scored by every file (suspect file order, or ``universe`` order), as a (models, items) matrix."""
    suspect, others = files[0], files[1:]
    ids = universe if universe is not None else list(dict.fromkeys(
        [*suspect.rows, *(i for f in others for i in f.rows)]))
    every = [i for i in ids if all(i in f.rows for f in files)]
    return ScoreMatrix(
        name=name, ids=every,
        values=np.array([[f.rows[i][metric] for i in every] for f in files], dtype=float).reshape(len(files), -1),
        only_suspect=[i for i in ids if i in suspect.rows and any(i not in f.rows for f in others)],
        only_clean=[i for i in ids if i not in suspect.rows and any(i in f.rows for f in others)])


def pair_scores(name: str, suspect: ScoreFile, clean: ScoreFile, metric: str, *,
                universe: list[str] | None = None) -> ScoreMatrix:
    """Pair two score files by id on ``metric`` (suspect file order, or ``universe`` order)."""
    return score_matrix(name, [suspect, clean], metric, universe=universe)


# --- how the tests are run ---------------------------------------------------------------

NO_CLEAN_REASON = (
    "There is no clean model, so the perplexity and memorization DiDs cannot run and nothing separates what "
    "the suspect learned from the benchmark from how hard its items are. The verdict rests on Oren et al.'s "
    "order test, whose p-value needs only the suspect (valid when the published item order is exchangeable "
    "with random orders): it detects a "
    "benchmark that leaked as a file in its published order, and is blind to items leaked one by one, "
    "shuffled, paraphrased or in another format (the calibration in the README finds it at chance for "
    "per-item leaks). It says nothing of how much the suspect gained. So the verdict is at most SUSPECT; add "
    "[models.clean] (and [[models.reference]] models) for the DiD tests and a CONTAMINATED verdict.")


@dataclass(frozen=True)
class Design:
    """What the data allow: a reference panel (2+ clean models) and/or exchangeable sets; or,
    with no clean model at all, only the suspect's own evidence (the order test decides)."""

    shadow_origin: str
    n_clean: int  # the clean control plus the reference models; 0: no clean model
    refuted: str | None = None  # why sets declared a random split are not treated as exchangeable
    split_verified: bool = False  # a random split contaudit made, re-derived from its file at analysis

    @property
    def panel(self) -> bool:
        return self.n_clean >= 2

    @property
    def order_only(self) -> bool:
        """No clean model: the verdict rests on Oren et al.'s order test (at most SUSPECT)."""
        return self.n_clean == 0

    @property
    def exchangeable(self) -> bool:
        return self.shadow_origin == "random_split" and self.refuted is None

    @property
    def cap_reason(self) -> str | None:
        """Why the verdict can be at most SUSPECT, or None."""
        return NO_CLEAN_REASON if self.order_only else None

    @property
    def inconclusive_reason(self) -> str | None:
        """Why this design cannot hold its false-positive rate (the verdict is INCONCLUSIVE), or None."""
        if self.order_only or self.panel or self.exchangeable:
            return None
        what = (f"the test and shadow sets are declared a random split, but {self.refuted}" if self.refuted else
                f"the shadow set is a {self.shadow_origin.replace('_', ' ')}, not a random split")
        return (f"INCONCLUSIVE: {what}, and there is only one clean model. The item-level tests cannot tell contamination from the way two "
                f"clean models differ on shifted sets (on a real date split of Debian changelogs, 21.5 % of "
                f"clean-vs-clean pairs reach p < 0.05; README), so no label here would carry its stated error "
                f"rate. To decide: add [[models.reference]] clean models (a reference panel; docs/analysis.md says "
                f"how many), or make the shadow set a random split of the benchmark.")

    def to_dict(self) -> dict:
        return {"shadow_origin": self.shadow_origin, "n_clean_models": self.n_clean,
                "test": "order test" if self.order_only else "reference panel" if self.panel else "item permutation",
                "exchangeable_sets": self.exchangeable, "verdict_cap": SUSPECT if self.cap_reason else None,
                "random_split_verified": self.split_verified, "exchangeability_refuted": self.refuted,
                "inconclusive": self.inconclusive_reason}


def _covariates(matrix: ScoreMatrix, wanted: tuple[str, ...], features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Candidate adjustment covariates: ``difficulty`` is the mean over every model (so no model is singled out)."""
    out = {}
    for name in wanted:
        if name == "difficulty":
            out[name] = matrix.values.mean(axis=0)
        elif name in features and features[name] is not None:
            out[name] = features[name]
    return out


def _adjustment(matrix: ScoreMatrix, group: np.ndarray, features: dict[str, np.ndarray],
                settings: AnalysisSettings) -> Adjustment:
    """The covariates the panel test adjusts for, and the items in their common support."""
    return common_support_adjustment(group, _covariates(matrix, settings.adjust_for, features),
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
    both = _stack(test, shadow)
    group = np.r_[np.ones(len(test.ids), bool), np.zeros(len(shadow.ids), bool)]
    features = {"length": _log_lengths(test.ids + shadow.ids, lengths)}
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


def _stack(a: ScoreMatrix, b: ScoreMatrix) -> ScoreMatrix:
    return ScoreMatrix(f"{a.name}+{b.name}", a.ids + b.ids, np.hstack([a.values, b.values]))


def _log_lengths(ids: list[str], lengths: dict[str, float] | None) -> np.ndarray | None:
    if not lengths or any(i not in lengths for i in ids):
        return None
    return np.log(np.maximum([lengths[i] for i in ids], 1.0))


def _item_lengths(sets: list[list[ScoreFile]]) -> dict[str, float] | None:
    """Mean ``n_tokens`` per item over the models' score files of each set (None when a file lacks it)."""
    out: dict[str, float] = {}
    for files in sets:
        if any(not f.rows or "n_tokens" not in next(iter(f.rows.values())) for f in files):
            return None
        for i in set.intersection(*(set(f.rows) for f in files)):
            out[i] = float(np.mean([f.rows[i]["n_tokens"] for f in files]))
    return out


def _shift_check(test: ScoreMatrix, shadow: ScoreMatrix, design: Design, settings: AnalysisSettings,
                 lengths: dict[str, float] | None, unit: str = "nats/token") -> DesignCheck:
    """With exchangeable sets and one clean model: today's comparability check. Otherwise the shift is
    expected; it is reported, and the check asks only that the adjustment's covariates overlap."""
    if design.exchangeable and not design.panel:
        return _verdict.check_shadow_comparability(test.clean, shadow.clean, rule=settings.shadow_rule,
                                                   margin=settings.shadow_margin, alpha=settings.shadow_alpha,
                                                   unit=unit)
    if min(len(test.ids), len(shadow.ids)) < 2:
        return DesignCheck("shadow_shift", None, "shadow shift not computed (fewer than 2 items)")
    both = _stack(test, shadow)
    group = np.r_[np.ones(len(test.ids), bool), np.zeros(len(shadow.ids), bool)]
    covs = _covariates(both, settings.adjust_for, {"length": _log_lengths(both.ids, lengths)})
    return _verdict.check_shift_overlap("shadow_shift", "the test and shadow sets", group, covs,
                                        clean_test=test.clean, clean_shadow=shadow.clean,
                                        min_overlap=settings.min_overlap, panel=design.panel, unit=unit,
                                        adjusted=settings.references == "siblings")


# --- the analysis ---------------------------------------------------------------------------

# One random stream per test, spawned in this order from the protocol's seed (the order fixes
# each stream, so results stay reproducible across versions).
STREAMS = ("perplexity", "exact_match", "token_match_frac", "supporting", "suffix_logprob")


def random_streams(seed: int) -> dict[str, np.random.Generator]:
    """The named random streams of one analysis."""
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, np.random.SeedSequence(seed).spawn(len(STREAMS)))}


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


@dataclass
class AnalysisResults:
    """Everything ``analyze`` found; :meth:`to_dict` is the one place the ``results.json`` schema is written."""

    settings: AnalysisSettings
    provenance: dict
    design: Design
    models: list[ModelFiles]
    verdict: _verdict.Verdict
    perplexity: DiDResult | PanelResult | None
    memorization: MemorizationPart | None
    checks: list[DesignCheck]
    supporting: dict
    test: ScoreMatrix
    shadow: ScoreMatrix
    index_by_id: dict[str, dict]
    index_data: dict | None
    warnings: list[str]
    inputs: dict
    timing_s: float = 0.0
    units: Units | None = None  # None: an audit without a clean model (the suspect alone, per token)
    cutoffs: dict | None = None  # each model's training cutoff against the shadow set's start (protocol)

    def _items(self) -> dict:
        """Per-item rows: suspect and clean NLL and their difference ``d``; without a clean model the
        suspect's NLL alone (``y_sus``), and ``z`` against the suspect's shadow items."""
        test, shadow, mem = self.test, self.shadow, self.memorization

        def index(i):
            return {"index": _index_record(self.index_by_id[i])} if i in self.index_by_id else {}

        if self.design.order_only:
            mean = float(np.mean(shadow.suspect)) if len(shadow.ids) else float("nan")
            sd = float(np.std(shadow.suspect, ddof=1)) if len(shadow.ids) > 1 else float("nan")
            z = (lambda y: json_number((y - mean) / sd)) if sd and math.isfinite(sd) else (lambda y: None)
            return {"test": [{"id": i, "y_sus": float(y), "z_vs_shadow": z(y), **index(i)}
                             for i, y in zip(test.ids, test.suspect)],
                    "shadow": [{"id": i, "y_sus": float(y)} for i, y in zip(shadow.ids, shadow.suspect)],
                    "probes": []}
        return {
            "test": [{"id": i, "y_sus": float(s), "y_clean": float(c), "d": float(s - c), **index(i)}
                     for i, s, c in zip(test.ids, test.suspect, test.clean)],
            "shadow": [{"id": i, "y_sus": float(s), "y_clean": float(c), "d": float(s - c)}
                       for i, s, c in zip(shadow.ids, shadow.suspect, shadow.clean)],
            "probes": mem.items if mem else [],
        }

    def to_dict(self) -> dict:
        """The ``results.json`` document (schema in ``docs/analysis.md``)."""
        mem = self.memorization
        test, shadow = self.test, self.shadow
        units = self.units or Units(False, "", None)
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "contaudit-results",
            "contaudit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "protocol": {**self.provenance, "shadow_origin": self.design.shadow_origin,
                         "analysis": asdict(self.settings)},
            "design": {**self.design.to_dict(), "cutoffs": self.cutoffs, "models": [
                {"role": m.role, "fingerprints": sorted({fp for fp, _ in m.model_ids().values()})}
                for m in self.models]},
            "verdict": self.verdict.to_dict(),
            "units": self.units.to_dict() if self.units else None,
            "perplexity_did": (_did_dict(self.perplexity, metric=units.perplexity_metric, unit=units.perplexity_unit,
                                         direction="negative") if self.perplexity is not None else None),
            "memorization_did": None if mem is None else {
                "primary_metric": self.settings.primary_metric, **({"not_run": mem.not_run} if mem.not_run else {}),
                **{m: (_did_dict(r, metric=m, unit=units.metric_unit(m, METRIC_UNITS[m]), direction="positive")
                       if r is not None else None) for m, r in mem.results.items()}},
            "design_checks": [c.to_dict() for c in self.checks],
            "supporting": self.supporting,
            "data": {"test": test.to_dict(), "shadow": shadow.to_dict(), "probes": mem.data if mem else None,
                     "index": self.index_data},
            "warnings": self.warnings,
            "items": self._items(),
            "inputs": self.inputs,
            "timing_s": self.timing_s,
        }


def analyze(suspect_test, clean_test=None, suspect_shadow=None, clean_shadow=None, *, suspect_probes=None,
            clean_probes=None,
            probes=None, references: list[ReferenceScores] | tuple = (), index=None, item_order=None,
            shadow_origin: str | None = None,
            protocol: str | Path | Protocol | AnalysisSettings | None = None, out: str | Path | None = None,
            warnings: list[str] | tuple = (), sets: dict | None = None) -> dict:
    """Run the analysis on score files and return the results dict (see ``docs/analysis.md``).

    Parameters
    ----------
    suspect_test, clean_test, suspect_shadow, clean_shadow : path
        Score files (``scores/<model>/<set>.jsonl``), paired by item id. Without a clean
        model (``clean_test`` and ``clean_shadow`` None) the verdict rests on the order
        test (``item_order``, then required) and is at most SUSPECT; Min-K%++ (suspect
        only, test vs shadow) and the index's corpus evidence are reported beside it.
    suspect_probes, clean_probes, probes : path, optional
        Probe score files of both models and ``probes.jsonl``; all three or none.
        Without them there is no memorization test and the verdict is at most SUSPECT.
    references : list of ReferenceScores, optional
        Score files of more clean models. With two or more clean models in all, both
        tests judge the suspect against the spread between clean models, adjusted for
        item covariates (:mod:`contaudit.analysis.panel`).
    index : path, optional
        An index directory (``indexes/NAME``) for the dose-response and corpus locations.
    item_order : path, optional
        Suspect-model log-likelihoods of the test set in published vs shuffled orders,
        for the Oren et al. test (format in :func:`read_item_order`).
    shadow_origin : {'random_split', 'date_split', 'later_set'}, optional
        How the shadow set was made; default: the protocol's, else ``'later_set'``
        (the conservative assumption). With one clean model and a shadow set that is
        not a random split, the verdict is at most SUSPECT.
    protocol : path, Protocol, AnalysisSettings or None
        ``[analysis]`` (and the shadow origin from ``[sets]``); None means the defaults.
    out : path, optional
        Run directory; ``results.json`` and ``results.manifest.json`` are written there
        atomically.
    warnings : list of str, optional
        Warnings of earlier stages (duplicate texts left out of the sets), reported first.
    sets : dict, optional
        ``{"test": path, "shadow": path}`` of the sets' ``{id, text}`` JSON Lines (as the
        audit writes them), for the blind baseline (:mod:`contaudit.analysis.blind`).

    Examples
    --------
    >>> results = analyze("scores/sus/test.jsonl", "scores/clean/test.jsonl",
    ...                   "scores/sus/shadow.jsonl", "scores/clean/shadow.jsonl",
    ...                   shadow_origin="random_split", out="runs/demo")  # doctest: +SKIP
    >>> results["verdict"]["label"]  # doctest: +SKIP
    'SUSPECT'
    """
    started = time.perf_counter()
    settings, provenance = load_analysis_settings(protocol)
    split_spec = provenance.pop("random_split", None)
    cutoffs = provenance.pop("cutoffs", None)
    origin = shadow_origin or provenance.get("shadow_origin") or "later_set"
    if origin not in SHADOW_ORIGINS:
        raise InputError(f"`shadow_origin` must be one of {', '.join(SHADOW_ORIGINS)}; got {origin!r}")
    references = [r if isinstance(r, ReferenceScores) else ReferenceScores(*r) for r in references]
    probe_args = {"suspect_probes": suspect_probes, "clean_probes": clean_probes, "probes": probes}
    given = [k for k, v in probe_args.items() if v is not None]
    if given and len(given) != 3 and given != ["probes"]:
        missing = [f"--{k.replace('_', '-')}" for k, v in probe_args.items() if v is None]
        raise InputError(f"the memorization test needs --suspect-probes, --clean-probes and --probes together; "
                         f"missing {', '.join(missing)}")
    if suspect_probes is not None and any(r.probes is None for r in references):
        raise InputError("the memorization test needs every reference model's probe scores (--reference-probes)")
    if suspect_shadow is None:
        raise InputError("the suspect's shadow-set scores are needed (--suspect-shadow)")
    if (clean_test is None) != (clean_shadow is None):
        raise InputError("give the clean model's scores of both sets (--clean-test and --clean-shadow), or neither "
                         "for an audit without a clean model")
    no_clean = clean_test is None
    if no_clean and (references or suspect_probes is not None or clean_probes is not None):
        raise InputError("reference models and probe scores need a clean model: give --clean-test and "
                         "--clean-shadow, or leave them out for an order-test audit")
    design = Design(origin, 0 if no_clean else 1 + len(references))
    minkpp = f"minkpp_{settings.minkpp_k}"
    streams = random_streams(settings.seed)
    warnings = [str(w) for w in warnings]
    if no_clean:
        return _analyze_without_clean(suspect_test, suspect_shadow, probes=probes, index=index,
                                      item_order=item_order, settings=settings, provenance=provenance, design=design,
                                      minkpp=minkpp, streams=streams, out=out, started=started, warnings=warnings,
                                      sets=sets)

    def read(p):
        return read_scores(p, optional=(minkpp, "n_tokens", "n_bytes", "nll_per_byte"))

    models = [ModelFiles("suspect", {"test": read(suspect_test), "shadow": read(suspect_shadow)}),
              ModelFiles("clean", {"test": read(clean_test), "shadow": read(clean_shadow)})]
    models += [ModelFiles(f"reference[{k}]", {"test": read(r.test), "shadow": read(r.shadow)})
               for k, r in enumerate(references, 1)]
    score_files = [f for m in models for f in m.files.values()]
    units = choose_units([m.files["test"].manifest for m in models], settings.unit,
                         per_byte_available=all(f.rows and all("nll_per_byte" in r for r in f.rows.values())
                                                for f in score_files))
    if units.per_byte:
        require_per_byte(score_files)
        units = replace(units, tokens_per_byte=tokens_per_byte([models[0].files["test"], models[0].files["shadow"]]))
    test = score_matrix("test", [m.files["test"] for m in models], units.perplexity_metric)
    shadow = score_matrix("shadow", [m.files["shadow"] for m in models], units.perplexity_metric)
    lengths = _item_lengths([[m.files[s] for m in models] for s in ("test", "shadow")])
    if split_spec is not None and origin == "random_split":
        from contaudit.splits import verify_random_split

        provenance["split"] = verify_random_split(split_spec, test.ids, shadow.ids)
        design = replace(design, split_verified=True)
    warnings += _set_warnings(models, test, shadow)

    checks = _verdict.check_sample_sizes({"test": len(test.ids), "shadow": len(shadow.ids)},
                                         {"test": settings.min_items, "shadow": settings.min_items})
    checks += [_verdict.check_pairing(p.name, len(p.ids), p.n_unpaired, max_fraction=settings.max_unpaired_fraction)
               for p in (test, shadow)]
    shift = _shift_check(test, shadow, design, settings, lengths, units.perplexity_unit)
    if shift.name == "shadow_comparability" and design.split_verified:
        # contaudit drew this split itself: any difference the check finds is chance, by construction.
        shift.detail += (" Reported, not judged: contaudit made this split at random and re-derived it here, so a "
                         "difference between the sets can only be chance, which the exact tests allow for.")
        shift.passed = None
    elif shift.name == "shadow_comparability" and shift.passed is False:
        # Under a true randomisation this fires only by chance; so either it is chance or the split was not
        # random. Neither makes the design invalid: the sets are treated as not exchangeable.
        design = replace(design, refuted="the clean model sees them as different distributions "
                                     "(shadow_comparability check)")
        shift.passed = None
        shift.detail += (" A genuine random split fails this check only by chance, so the sets are treated as "
                         "not exchangeable rather than the design as invalid.")
    checks.append(shift)
    inconclusive = design.inconclusive_reason
    if design.panel and settings.references == "families" and design.n_clean < 3:
        inconclusive = (f"INCONCLUSIVE: the cross-family test (references = 'families') fits the clean models' "
                        f"shadow-to-test relation, which needs at least 3 clean models; there are {design.n_clean}. "
                        f"Add [[models.reference]] models, or set references = 'siblings' if they share the "
                        f"suspect's recipe and differ only by seed.")
    if design.panel and settings.reference_test == "rank":
        inconclusive = inconclusive or _verdict.panel_too_small(design.n_clean, alpha=settings.alpha, n_tests=2)
    ppl = perplexity_test(test, shadow, design, settings, streams["perplexity"], lengths=lengths)

    mem = None
    if probes is not None:
        probe_paths = [suspect_probes, clean_probes, *(r.probes for r in references)]
        mem = memorization_part(probes, probe_paths, models, design, settings, streams, units=units)
        checks += mem.checks
        warnings += mem.warnings
    memorization = mem.results.get(settings.primary_metric) if mem else None  # None: < 2 probes (check failed)

    warnings += check_same_models(models)
    unchecked = [str(f.path) for m in models for f in m.files.values() if not (f.manifest or {}).get("model")]
    if unchecked:
        warnings.append(f"{len(unchecked)} score files have no manifest naming their model (e.g. {unchecked[0]}), "
                        f"so they could not be checked to belong to the models they stand for.")
    if design.panel:
        warnings += panel_warnings("perplexity", ppl) + panel_warnings("memorization", memorization)

    index_by_id, index_data = _index_evidence(index, test.ids)

    files = {"suspect_test": models[0].files["test"], "clean_test": models[1].files["test"],
             "suspect_shadow": models[0].files["shadow"], "clean_shadow": models[1].files["shadow"]}
    supporting = _supporting(test, shadow, files, minkpp, index_by_id, item_order, settings, streams["supporting"],
                             reference_files=[m.files for m in models[2:]])
    supporting["blind_baseline"] = blind_entry(sets, test.ids, shadow.ids, settings)
    warnings += supporting["item_order"].get("order_warnings", [])
    not_run = mem.not_run if mem else None
    if mem is not None and mem.suffix_tokens_per_byte:
        units = replace(units, suffix_tokens_per_byte=mem.suffix_tokens_per_byte)
    decided = _verdict.decide(ppl, memorization, checks, units.min_effects(settings),
                              memorization_metric=settings.primary_metric if probes is not None and not not_run else None,
                              cap_reason=design.cap_reason, n_clean=design.n_clean, memorization_not_run=not_run,
                              inconclusive_reason=inconclusive, units=units)
    inputs = {"suspect_test": suspect_test, "clean_test": clean_test, "suspect_shadow": suspect_shadow,
              "clean_shadow": clean_shadow, **probe_args, "index": index, "item_order": item_order}
    for k, r in enumerate(references, 1):
        inputs.update({f"reference{k}_test": r.test, f"reference{k}_shadow": r.shadow, f"reference{k}_probes": r.probes})
    analysis = AnalysisResults(settings, provenance, design, models, decided, ppl, mem, checks, supporting, test, shadow,
                               index_by_id, index_data, warnings,
                               {k: describe_path(v) for k, v in inputs.items() if v is not None})
    analysis.timing_s = round(time.perf_counter() - started, 3)
    analysis.units = units
    analysis.cutoffs = cutoffs
    if cutoffs and design.panel and not design.exchangeable and not cutoffs["checked"]:
        warnings.append("The training cutoffs of the clean models are not all recorded ([models.*] cutoff) or the "
                        "shadow set's start is not ([sets] shadow_from): a reference trained on the shadow period "
                        "would make a clean suspect look contaminated, and this audit could not check it.")
    suspect_cut = next((m for m in (cutoffs or {}).get("models", []) if m["role"] == "suspect"), None)
    if suspect_cut and suspect_cut["precedes_shadow"] is False:
        warnings.append(f"The suspect's training cutoff ({suspect_cut['cutoff']}) is not before the shadow set's start "
                        f"({cutoffs['shadow_from']}): it may have seen shadow-period text, which makes its shadow set "
                        f"look familiar and can only hide contamination.")
    results = analysis.to_dict()
    if out is not None:
        write_results(results, out)
    return results


def _analyze_without_clean(suspect_test, suspect_shadow, *, probes, index, item_order, settings: AnalysisSettings,
                           provenance: dict, design: Design, minkpp: str, streams, out, started: float,
                           warnings: list[str], sets: dict | None = None) -> dict:
    """The analysis of an audit without a clean model: the order test decides, at most SUSPECT.

    Reported beside it: Min-K%++ of the suspect, test vs shadow (a fair comparison only
    when the sets are a random split), and what the corpus index finds of the test items.
    """
    models = [ModelFiles("suspect", {"test": read_scores(suspect_test, optional=(minkpp, "n_tokens")),
                                     "shadow": read_scores(suspect_shadow, optional=(minkpp, "n_tokens"))})]
    test = score_matrix("test", [models[0].files["test"]], "nll_mean")
    shadow = score_matrix("shadow", [models[0].files["shadow"]], "nll_mean")
    overlap = set(test.ids) & set(shadow.ids)
    if overlap:
        warnings.append(f"{len(overlap)} ids occur in both the test and the shadow set (e.g. {sorted(overlap)[0]!r}); "
                        f"check that the two sets are different files.")
    n = len(test.ids)
    checks = [DesignCheck("sample_size_test", n >= settings.min_items,
                          f"{n} test items scored (at least {settings.min_items} needed)" if n >= settings.min_items
                          else f"Too few test items: {n} scored, the protocol needs at least {settings.min_items}.",
                          value=n, threshold=settings.min_items)]
    order_entry, order = item_order_entry(item_order, settings)
    warnings += order_entry.get("order_warnings", [])
    if order is None:
        checks.append(DesignCheck("order_test", False, "Without a clean model the order test is the only test that "
                                  "can decide, and no item-order log-likelihoods were given; compute them with "
                                  "`contaudit order` (or give [models.clean])."))
    else:
        checks.append(DesignCheck("order_test", True, f"Order test on {order.n_shards} shard(s) of consecutive test "
                                  f"items, {order.n_permutations} shuffled orders each ({order.method}).",
                                  value=order.n_shards, numbers={"n_permutations": order.n_permutations}))
        recorded = order_entry.get("model_id")
        suspect_ids = {fp for fp, _ in models[0].model_ids().values()}
        if recorded and suspect_ids and recorded not in suspect_ids:
            warnings.append(f"The item-order file {item_order} was computed with another model (fingerprint "
                            f"{recorded[:12]}) than the suspect's score files ({sorted(suspect_ids)[0][:12]}).")
    if probes is not None:
        warnings.append("Probes were given but there is no clean model: the memorization DiD needs one, so they "
                        "were not used.")

    index_by_id, index_data = _index_evidence(index, test.ids)
    supporting: dict = {"dose_response": {"available": False, "reason": "needs a clean model (d = suspect - clean)"}}
    files = models[0].files
    if not all(minkpp in next(iter(f.rows.values())) for f in files.values()):
        supporting["minkpp_did"] = {"available": False, "reason": f"score files lack {minkpp}"}
    else:
        t = score_matrix("test", [files["test"]], minkpp)
        sh = score_matrix("shadow", [files["shadow"]], minkpp)
        if min(len(t.ids), len(sh.ids)) < 2:
            supporting["minkpp_did"] = {"available": False, "reason": "fewer than 2 items in a set"}
        else:
            res = difference_in_means(t.suspect, sh.suspect, alternative="greater",
                                      n_resamples=settings.n_permutations, n_bootstrap=settings.n_bootstrap,
                                      confidence_level=settings.confidence_level, rng=streams["supporting"])
            supporting["minkpp_did"] = {
                "available": True, "suspect_only": True, **_did_dict(res, metric=minkpp, unit=minkpp,
                                                                     direction="positive"),
                "caveat": None if design.exchangeable else
                f"the shadow set is a {design.shadow_origin.replace('_', ' ')}: without a clean model a difference "
                f"in Min-K%++ may be the shift between the sets, not contamination"}
    supporting["item_order"] = order_entry
    supporting["corpus"] = corpus_entry(test.ids, index_by_id)
    supporting["blind_baseline"] = blind_entry(sets, test.ids, shadow.ids, settings)
    notes = []
    mk = supporting["minkpp_did"]
    if mk.get("available") and mk["pvalue"] is not None and mk["pvalue"] <= settings.alpha and mk["estimate"] > 0:
        why = ("the sets are a random split, so this points at the test items having leaked, in whatever order"
               if design.exchangeable else "the sets differ in origin, so this may be the shift between them")
        notes.append(f"Supporting evidence, not deciding: the suspect's Min-K%++ ranks test items as more "
                     f"member-like than shadow items ({mk['estimate']:+.3g}, {format_p(mk['pvalue'], named=True)}); "
                     f"{why}.")
    if order_entry.get("published_order_sorted"):
        notes.append("The published order is the items' ids sorted: the order test is valid only if that order "
                     "carries nothing a model could know without the file; a small p-value may then be a preference "
                     "for sorted ids (or content that drifts with them), not the file.")
    decided = _verdict.decide_order_only(order, checks, settings, cap_reason=design.cap_reason,
                                         mde=order_entry.get("minimum_detectable_effect"), notes=tuple(notes))
    inputs = {"suspect_test": suspect_test, "suspect_shadow": suspect_shadow, "index": index,
              "item_order": item_order}
    analysis = AnalysisResults(settings, provenance, design, models, decided, None, None, checks, supporting, test,
                               shadow, index_by_id, index_data, warnings,
                               {k: describe_path(v) for k, v in inputs.items() if v is not None})
    analysis.timing_s = round(time.perf_counter() - started, 3)
    results = analysis.to_dict()
    if out is not None:
        write_results(results, out)
    return results


def _set_warnings(models: list[ModelFiles], test: ScoreMatrix, shadow: ScoreMatrix) -> list[str]:
    warnings = []
    for name in ("test", "shadow"):
        if models[0].files[name].rows == models[1].files[name].rows:
            warnings.append(f"The suspect and clean {name} score files hold identical scores: the same model "
                            f"was scored twice, so every difference is zero.")
    overlap = set(test.ids) & set(shadow.ids)
    if overlap:
        warnings.append(f"{len(overlap)} ids occur in both the test and the shadow set (e.g. {sorted(overlap)[0]!r}); "
                        f"check that the two sets are different files.")
    return warnings


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
        return MemorizationPart({m: None for m in COMPLETION_FIELDS}, [], [],
                                {"n_seen": 0, "n_unseen": 0, "index_items": table.index_items}, [], not_run=reason)
    if not probe_table:
        # `contaudit probes` wrote no pairs (its manifest says why) although the corpus holds
        # benchmark items: the test should run and cannot, a failed sample-size check.
        checks = _verdict.check_sample_sizes({"seen": 0, "unseen": 0},
                                             {"seen": settings.min_probes, "unseen": settings.min_probes})
        return MemorizationPart({m: None for m in COMPLETION_FIELDS}, checks, [], {"n_seen": 0, "n_unseen": 0}, [])
    if any(p is None for p in probe_paths[:2]):
        raise InputError("the memorization test needs --suspect-probes and --clean-probes with --probes")
    # Score files written before suffix_logprob existed still analyze on the other metrics.
    required = tuple(dict.fromkeys(("exact_match", "token_match_frac", settings.primary_metric)))
    optional = tuple(m for m in COMPLETION_FIELDS if m not in required)
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
    available = [m for m in COMPLETION_FIELDS
                 if all(not f.rows or m in next(iter(f.rows.values())) for f in probe_files)]
    results: dict[str, DiDResult | PanelResult | None] = {}
    for m in COMPLETION_FIELDS:
        if m not in available:
            results[m] = None
            warnings.append(f"the probe score files have no {m!r}; rescore them with this version to get it")
    matrices = {m: score_matrix("probes", probe_files, m, universe=universe) for m in available}
    suffix_tpb = None
    if units is not None and units.per_byte and "suffix_logprob" in matrices:
        lp = matrices["suffix_logprob"]
        suffix_bytes = {i: p.get("suffix_bytes") for i, p in probe_table.items()}
        lp.values = suffix_logprob_per_byte(lp, probe_files, suffix_bytes)
        suffix_tpb = (sum(probe_files[0].rows[i]["suffix_tokens"] for i in lp.ids)
                      / max(1, sum(suffix_bytes[i] for i in lp.ids)))
    p0 = matrices["exact_match"]
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
        balance = {f"{cov}_smd": _probe_smd(probe_table, p0.ids, field_) for cov, field_ in
                   (("length", "n_words"), ("rarity", "rarity"))}
        warnings.append("probes.manifest.json has no balance diagnostics; balance was computed from the "
                        "n_words and rarity fields of probes.jsonl.")
    features = _probe_features(probe_table, p0.ids)
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
    for i, s, c in zip(p0.ids, p0.suspect, p0.clean):
        fs, fc = by_id["token_match_frac"].get(i, (None, None))
        ls, lc = by_id.get("suffix_logprob", {}).get(i, (None, None))
        items.append({"id": i, "probe_set": probe_table[i]["probe_set"], "n_words": probe_table[i]["n_words"],
                      "exact_sus": int(s), "exact_clean": json_number(c) if design.panel else int(c),
                      "frac_sus": json_number(fs), "frac_clean": json_number(fc), "logprob_sus": json_number(ls), "logprob_clean": json_number(lc)})
    return MemorizationPart(results, checks, warnings, data, items, suffix_tokens_per_byte=suffix_tpb)


def _probe_features(probe_table: dict[str, dict], ids: list[str]) -> dict[str, np.ndarray | None]:
    """Probe covariates for the adjustment: log word count and rarity (None where a probe lacks one)."""
    out: dict[str, np.ndarray | None] = {}
    for name, key, transform in (("length", "n_words", lambda v: np.log(np.maximum(v, 1.0))),
                                 ("rarity", "rarity", lambda v: v)):
        values = [probe_table[i].get(key) for i in ids]
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        out[name] = transform(np.array(values, dtype=float)) if ok and values else None
    return out


def _supporting(test: ScoreMatrix, shadow: ScoreMatrix, files: dict[str, ScoreFile], minkpp: str, index_by_id: dict,
                item_order, settings: AnalysisSettings, rng, reference_files: list[dict[str, ScoreFile]] = ()) -> dict:
    """Dose-response, Min-K%++ DiD and the item-order test; each says why when it is not available."""
    out: dict = {}
    # Dose-response over test items the index knows.
    ids = [i for i in test.ids if i in index_by_id and isinstance(index_by_id[i].get("occurrences"), (int, float))]
    if not index_by_id:
        out["dose_response"] = {"available": False, "reason": "no index given"}
    elif len(ids) < 4:
        out["dose_response"] = {"available": False, "reason": f"only {len(ids)} test items found in the index"}
    else:
        pos = {i: k for k, i in enumerate(test.ids)}
        occ = np.array([index_by_id[i]["occurrences"] for i in ids], dtype=float)
        d = np.array([test.suspect[pos[i]] - test.clean[pos[i]] for i in ids])
        res = dose_response(occ, d, alternative="less", confidence_level=settings.confidence_level)
        entry = {"available": True, **res.to_dict(), "n_with_occurrences": int(np.sum(occ > 0))}
        if res.statistic != res.statistic:
            entry.update(available=False, reason="occurrence counts (or differences) are constant")
        out["dose_response"] = entry
    # Min-K%++ DiD (higher = more member-like, so positive under contamination).
    ref_test = [r["test"] for r in reference_files]
    ref_shadow = [r["shadow"] for r in reference_files]
    has = all(minkpp in next(iter(f.rows.values())) for f in [*files.values(), *ref_test, *ref_shadow])
    if not has:
        out["minkpp_did"] = {"available": False, "reason": f"score files lack {minkpp}"}
    else:
        t = score_matrix("test", [files["suspect_test"], files["clean_test"], *ref_test], minkpp)
        s = score_matrix("shadow", [files["suspect_shadow"], files["clean_shadow"], *ref_shadow], minkpp)
        if min(len(t.ids), len(s.ids)) < 2:
            out["minkpp_did"] = {"available": False, "reason": "fewer than 2 paired items in a set"}
        else:
            res = difference_in_means(t.suspect - t.clean, s.suspect - s.clean, alternative="greater",
                                      n_resamples=settings.n_permutations, n_bootstrap=settings.n_bootstrap,
                                      confidence_level=settings.confidence_level, rng=rng)
            out["minkpp_did"] = {"available": True, **_did_dict(res, metric=minkpp, unit=minkpp,
                                                                direction="positive")}
    out["item_order"] = item_order_entry(item_order, settings)[0]
    out["corpus"] = corpus_entry(test.ids, index_by_id)
    return out


def blind_entry(sets: dict | None, test_ids: list[str], shadow_ids: list[str], settings: AnalysisSettings) -> dict:
    """The blind baseline's results entry (text-only classifier, test vs shadow), or why it is not available."""
    from contaudit.analysis.blind import blind_baseline

    if not sets or not sets.get("test") or not sets.get("shadow"):
        return {"available": False, "reason": "needs the sets' texts (an audit passes them; analyze: --test-set and --shadow-set)"}
    texts = {str(rec["id"]): rec["text"] for name in ("test", "shadow")
             for _, rec in iter_jsonl(Path(sets[name]))}
    missing = [i for i in test_ids + shadow_ids if i not in texts]
    if missing:
        return {"available": False, "reason": f"{len(missing)} scored items have no text in the sets "
                                              f"(e.g. {missing[0]!r})"}
    if min(len(test_ids), len(shadow_ids)) < 5:
        return {"available": False, "reason": "fewer than 5 items in a set"}
    rng = np.random.default_rng([settings.seed, 1 + len(STREAMS)])  # its own stream: the others stay as they were
    res = blind_baseline([texts[i] for i in test_ids], [texts[i] for i in shadow_ids], rng=rng)
    return res.to_dict()


def item_order_entry(item_order, settings: AnalysisSettings) -> tuple[dict, "ItemOrderResult | None"]:
    """The order test's results entry (and result) from an item-order file, or why it is not available.

    Besides the test (:func:`~contaudit.analysis.did.item_order_test`) the entry keeps,
    per shard, the gap ``canonical - mean(shuffled)`` and the spread of the shuffled
    orders, and the settings the file records (``contaudit order`` writes them).
    """
    if item_order is None:
        return {"available": False, "reason": "no item-order log-likelihoods given"}, None
    canonical, shuffled = read_item_order(item_order)
    try:
        res = item_order_test(canonical, shuffled, confidence_level=settings.confidence_level)
    except InputError as e:
        raise InputError(str(e), path=item_order) from None
    if shuffled.ndim == 1:
        shuffled = shuffled[None, :]
    spread = shuffled.std(axis=1, ddof=1) if shuffled.shape[1] > 1 else np.full(len(canonical), np.nan)
    per_shard = [{"gap": float(c - row.mean()), "shuffled_sd": json_number(sd),
                  "share_shuffled_at_least": float(np.mean(row >= c))}
                 for c, row, sd in zip(np.atleast_1d(canonical), shuffled, spread)]
    recorded = read_json(Path(item_order))
    entry = {"available": True, **res.to_dict(), "unit": "nats per shard", "per_shard": per_shard,
             "settings": recorded.get("settings") if isinstance(recorded.get("settings"), dict) else None,
             "model_id": (recorded.get("model") or {}).get("id") if isinstance(recorded.get("model"), dict) else None,
             "published_order_sorted": bool(recorded.get("published_order_sorted")),
             "order_warnings": [str(w) for w in recorded.get("warnings") or []]}
    if len(per_shard) >= 2 and settings.power:
        entry["minimum_detectable_effect"] = item_order_mde(canonical, shuffled, alpha=settings.alpha,
                                                            power=settings.power)
    return entry, res


def corpus_entry(test_ids: list[str], index_by_id: dict) -> dict:
    """What the corpus index says of the test items: how many it finds seen, ambiguous or unseen."""
    if not index_by_id:
        return {"available": False, "reason": "no index given"}
    found = [index_by_id[i] for i in test_ids if i in index_by_id]
    status = [r.get("status") for r in found]
    seen = [i for i in test_ids if i in index_by_id and index_by_id[i].get("status") == "seen"]
    occurrences = [r.get("occurrences") for r in found if isinstance(r.get("occurrences"), (int, float))]
    return {"available": True, "n_test": len(test_ids), "n_in_index": len(found), "n_seen": status.count("seen"),
            "n_ambiguous": status.count("ambiguous"), "n_unseen": status.count("unseen"),
            "share_seen": status.count("seen") / len(found) if found else None,
            "total_occurrences": int(sum(occurrences)) if occurrences else 0, "seen_ids": seen[:MAX_LISTED_IDS]}


def write_results(results: dict, out: str | Path) -> Path:
    """Write ``results.json`` then ``results.manifest.json`` into the run directory, atomically."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("the run directory is a file; give a directory for --out", path=out)
    path = out / RESULTS_NAME
    write_json_atomic(path, results)
    manifest = make_manifest("analyze", inputs=list(results["inputs"].values()),
                             parameters=results["protocol"]["analysis"], protocol_sha256=results["protocol"]["sha256"],
                             schema_version=results["schema_version"], output=describe_path(path))
    write_json_atomic(out / MANIFEST_NAME, manifest)
    return path
