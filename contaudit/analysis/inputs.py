"""What ``analyze`` reads: score files, probes, item-order files and the index, checked and
paired by item id into one (models x items) matrix per set and metric.

Every reader names the file and record of bad input (:class:`~contaudit.errors.InputError`);
items not scored by every model are counted (:class:`ScoreMatrix`), never dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contaudit.errors import InputError
from contaudit.io import iter_jsonl
from contaudit.manifest import manifest_beside, read_json
from contaudit.statistics import standardized_mean_difference


MAX_LISTED_IDS = 20


MAX_LOCATIONS = 3


@dataclass
class ScoreFile:
    """One score file: rows by id (file order kept), and its manifest when present."""

    path: Path
    rows: dict[str, dict]
    manifest: dict | None


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
    manifest_path = manifest_beside(path)
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
    manifest_path = manifest_beside(path)
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


def probe_smd(probes: dict[str, dict], ids: list[str], key: str) -> float | None:
    """Standardized mean difference of ``key`` between seen and unseen probes (None if unavailable)."""
    values = {s: [probes[i][key] for i in ids if probes[i]["probe_set"] == s and isinstance(probes[i][key], (int, float))]
              for s in ("seen", "unseen")}
    smd = standardized_mean_difference(values["seen"], values["unseen"])
    return None if math.isnan(smd) else smd


def probe_features(probe_table: dict[str, dict], ids: list[str]) -> dict[str, np.ndarray | None]:
    """Probe covariates for the adjustment: log word count and rarity (None where a probe lacks one)."""
    out: dict[str, np.ndarray | None] = {}
    for name, key, transform in (("length", "n_words", lambda v: np.log(np.maximum(v, 1.0))),
                                 ("rarity", "rarity", lambda v: v)):
        values = [probe_table[i].get(key) for i in ids]
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        out[name] = transform(np.array(values, dtype=float)) if ok and values else None
    return out


def index_evidence(index, test_ids) -> tuple[dict[str, dict], dict | None]:
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


def index_record(rec: dict) -> dict:
    return {"occurrences": rec.get("occurrences"), "coverage": rec.get("coverage"), "status": rec.get("status"),
            "locations": (rec.get("locations") or [])[:MAX_LOCATIONS], "neardup_location": rec.get("neardup_location")}


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


def check_expected_models(models: list[ModelFiles], expected: dict[str, str]) -> None:
    """Refuse score files made by another model than the one the audit names for their role
    (``expected``: role -> fingerprint id), e.g. another run's scores left in the run directory."""
    for m in models:
        want = expected.get(m.role)
        for path, (got, model_path) in m.model_ids().items():
            if want and got != want:
                raise InputError(f"the {m.role} score file {path} was made by {model_path} (fingerprint {got[:12]}), "
                                 f"but this audit's {m.role} model has fingerprint {want[:12]}: the run directory "
                                 f"holds another run's scores; rerun the audit (its scoring redoes them)")


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


def stack_sets(a: ScoreMatrix, b: ScoreMatrix) -> ScoreMatrix:
    return ScoreMatrix(f"{a.name}+{b.name}", a.ids + b.ids, np.hstack([a.values, b.values]))


def log_lengths(ids: list[str], lengths: dict[str, float] | None) -> np.ndarray | None:
    if not lengths or any(i not in lengths for i in ids):
        return None
    return np.log(np.maximum([lengths[i] for i in ids], 1.0))


def item_lengths(sets: list[list[ScoreFile]]) -> dict[str, float] | None:
    """Mean ``n_tokens`` per item over the models' score files of each set (None when a file lacks it)."""
    out: dict[str, float] = {}
    for files in sets:
        if any(not f.rows or "n_tokens" not in next(iter(f.rows.values())) for f in files):
            return None
        for i in set.intersection(*(set(f.rows) for f in files)):
            out[i] = float(np.mean([f.rows[i]["n_tokens"] for f in files]))
    return out


def set_warnings(models: list[ModelFiles], test: ScoreMatrix, shadow: ScoreMatrix) -> list[str]:
    """Warnings about the sets: a model scored twice (suspect and clean files identical), ids in both sets."""
    warnings = []
    for name in ("test", "shadow"):
        if len(models) > 1 and models[0].files[name].rows == models[1].files[name].rows:
            warnings.append(f"The suspect and clean {name} score files hold identical scores: the same model "
                            f"was scored twice, so every difference is zero.")
    overlap = set(test.ids) & set(shadow.ids)
    if overlap:
        warnings.append(f"{len(overlap)} ids occur in both the test and the shadow set (e.g. {sorted(overlap)[0]!r}); "
                        f"check that the two sets are different files.")
    return warnings
