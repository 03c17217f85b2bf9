"""``contaudit analyze``: score files in, ``results.json`` out.

Reads the per-item score files of both models for the test and shadow sets (and,
optionally, for the seen/unseen probes), pairs them by id, runs the design checks,
the two primary DiD tests, the supporting evidence and the verdict, and writes
``RUN_DIR/results.json`` (schema in :mod:`contaudit.analysis.results`) with
``results.manifest.json`` beside it. Items present in only one file of a pair are
counted and reported (and checked against the protocol's limit), never dropped
silently.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from contaudit import __version__
from contaudit.analysis import verdict as _verdict
from contaudit.analysis.did import (DiDResult, _num, difference_in_means, dose_response, item_order_test,
                                    memorization_did, perplexity_did)
from contaudit.analysis.results import RESULTS_NAME, SCHEMA_VERSION, MANIFEST_NAME
from contaudit.errors import InputError
from contaudit.io import iter_jsonl
from contaudit.manifest import describe_path, make_manifest, read_json, write_json_atomic
from contaudit.protocol import COMPLETION_METRICS as COMPLETION_FIELDS
from contaudit.protocol import METRIC_UNITS, AnalysisSettings, Protocol, load_analysis_settings

MAX_LISTED_IDS = 20
MAX_LOCATIONS = 3


@dataclass
class ScoreFile:
    """One score file: rows by id (file order kept), and its manifest when present."""

    path: Path
    rows: dict[str, dict]
    manifest: dict | None


@dataclass
class Paired:
    """Items of one set scored by both models, and those scored by only one."""

    name: str
    ids: list[str]
    suspect: np.ndarray
    clean: np.ndarray
    only_suspect: list[str] = field(default_factory=list)
    only_clean: list[str] = field(default_factory=list)

    @property
    def n_unpaired(self) -> int:
        return len(self.only_suspect) + len(self.only_clean)

    def to_dict(self) -> dict:
        return {"n_paired": len(self.ids), "n_only_suspect": len(self.only_suspect),
                "n_only_clean": len(self.only_clean), "only_suspect": self.only_suspect[:MAX_LISTED_IDS],
                "only_clean": self.only_clean[:MAX_LISTED_IDS]}


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


def pair_scores(name: str, suspect: ScoreFile, clean: ScoreFile, metric: str, *,
                universe: list[str] | None = None) -> Paired:
    """Pair two score files by id on ``metric`` (suspect file order, or ``universe`` order)."""
    ids = universe if universe is not None else list(suspect.rows) + [i for i in clean.rows if i not in suspect.rows]
    both = [i for i in ids if i in suspect.rows and i in clean.rows]
    return Paired(
        name=name,
        ids=both,
        suspect=np.array([suspect.rows[i][metric] for i in both], dtype=float),
        clean=np.array([clean.rows[i][metric] for i in both], dtype=float),
        only_suspect=[i for i in ids if i in suspect.rows and i not in clean.rows],
        only_clean=[i for i in ids if i in clean.rows and i not in suspect.rows],
    )


@dataclass
class ProbeTable:
    """``probes.jsonl`` by id, with the balance and matching covariates from its manifest."""

    probes: dict[str, dict]
    balance: dict | None
    match_on: tuple[str, ...] | None


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
        probes[item_id] = {"probe_set": rec["probe_set"], "n_words": rec.get("n_words"), "rarity": rec.get("rarity")}
    manifest_path = _manifest_beside(path)
    if not probes and not manifest_path.exists():
        raise InputError("no probes; expected one JSON object per line", path=path)
    balance = match_on = None
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        balance = manifest.get("balance")
        if balance is not None and not isinstance(balance, dict):
            raise InputError(f"'balance' must be an object, got {type(balance).__name__}", path=manifest_path)
        recorded = (manifest.get("parameters") or {}).get("match_on")
        match_on = tuple(recorded) if isinstance(recorded, (list, tuple)) else None
    return ProbeTable(probes, balance, match_on)


def _probe_smd(probes: dict[str, dict], ids: list[str], key: str) -> float | None:
    """Standardized mean difference of ``key`` between seen and unseen probes (None if unavailable)."""
    values = {s: np.array([probes[i][key] for i in ids if probes[i]["probe_set"] == s
                           and isinstance(probes[i][key], (int, float))], dtype=float) for s in ("seen", "unseen")}
    a, b = values["seen"], values["unseen"]
    if a.size < 2 or b.size < 2:
        return None
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return float((a.mean() - b.mean()) / pooled) if pooled else 0.0


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


def _did_dict(result: DiDResult, *, metric: str, unit: str, direction: str) -> dict:
    return {"metric": metric, "unit": unit, "direction": direction, **result.to_dict()}


def _did_or_none(fn, *args, **kw) -> DiDResult | None:
    if any(np.asarray(a).size < 2 for a in args):
        return None
    return fn(*args, **kw)


def _perplexity(test: Paired, shadow: Paired, settings: AnalysisSettings, rng) -> DiDResult | None:
    return _did_or_none(perplexity_did, test.suspect, test.clean, shadow.suspect, shadow.clean,
                        n_resamples=settings.n_permutations, n_bootstrap=settings.n_bootstrap,
                        confidence_level=settings.confidence_level, rng=rng)


def _split_probes(paired: Paired, probes: dict[str, dict]):
    seen = np.array([probes[i]["probe_set"] == "seen" for i in paired.ids], dtype=bool)
    return paired.suspect[seen], paired.clean[seen], paired.suspect[~seen], paired.clean[~seen]


def analyze(suspect_test, clean_test, suspect_shadow, clean_shadow, *, suspect_probes=None, clean_probes=None,
            probes=None, index=None, item_order=None,
            protocol: str | Path | Protocol | AnalysisSettings | None = None, out: str | Path | None = None) -> dict:
    """Run the analysis on score files and return the results dict (see ``docs/analysis.md``).

    Parameters
    ----------
    suspect_test, clean_test, suspect_shadow, clean_shadow : path
        Score files (``scores/<model>/<set>.jsonl``), paired by item id.
    suspect_probes, clean_probes, probes : path, optional
        Probe score files of both models and ``probes.jsonl``; all three or none.
        Without them there is no memorization test and the verdict is at most SUSPECT.
    index : path, optional
        An index directory (``indexes/NAME``) for the dose-response and corpus locations.
    item_order : path, optional
        Suspect-model log-likelihoods of the test set in published vs shuffled orders,
        for the Oren et al. test (format in :func:`read_item_order`).
    protocol : path, Protocol, AnalysisSettings or None
        Only ``[analysis]`` is used; None means the built-in defaults.
    out : path, optional
        Run directory; ``results.json`` and ``results.manifest.json`` are written there
        atomically.

    Examples
    --------
    >>> results = analyze("scores/sus/test.jsonl", "scores/clean/test.jsonl",
    ...                   "scores/sus/shadow.jsonl", "scores/clean/shadow.jsonl",
    ...                   out="runs/demo")  # doctest: +SKIP
    >>> results["verdict"]["label"]  # doctest: +SKIP
    'SUSPECT'
    """
    started = time.perf_counter()
    settings, provenance = load_analysis_settings(protocol)
    probe_args = {"suspect_probes": suspect_probes, "clean_probes": clean_probes, "probes": probes}
    given = [k for k, v in probe_args.items() if v is not None]
    if given and len(given) != 3 and given != ["probes"]:
        missing = [f"--{k.replace('_', '-')}" for k, v in probe_args.items() if v is None]
        raise InputError(f"the memorization test needs --suspect-probes, --clean-probes and --probes together; "
                         f"missing {', '.join(missing)}")
    minkpp = f"minkpp_{settings.minkpp_k}"
    seeds = np.random.SeedSequence(settings.seed).spawn(5)
    rngs = [np.random.default_rng(s) for s in seeds]
    # perplexity rngs[0], supporting rngs[3]; one stream per completion metric
    mem_rngs = dict(zip(COMPLETION_FIELDS, (rngs[1], rngs[2], rngs[4])))
    warnings: list[str] = []

    files = {name: read_scores(p, optional=(minkpp,)) for name, p in
             (("suspect_test", suspect_test), ("clean_test", clean_test),
              ("suspect_shadow", suspect_shadow), ("clean_shadow", clean_shadow))}
    test = pair_scores("test", files["suspect_test"], files["clean_test"], "nll_mean")
    shadow = pair_scores("shadow", files["suspect_shadow"], files["clean_shadow"], "nll_mean")
    for name in ("test", "shadow"):
        if files[f"suspect_{name}"].rows == files[f"clean_{name}"].rows:
            warnings.append(f"The suspect and clean {name} score files hold identical scores: the same model "
                            f"was scored twice, so every difference is zero.")
    overlap = set(test.ids) & set(shadow.ids)
    if overlap:
        warnings.append(f"{len(overlap)} ids occur in both the test and the shadow set (e.g. {sorted(overlap)[0]!r}); "
                        f"check that the two sets are different files.")

    checks = _verdict.check_sample_sizes({"test": len(test.ids), "shadow": len(shadow.ids)},
                                         {"test": settings.min_items, "shadow": settings.min_items})
    checks += [_verdict.check_pairing(p.name, len(p.ids), p.n_unpaired, max_fraction=settings.max_unpaired_fraction)
               for p in (test, shadow)]
    checks.append(_verdict.check_shadow_comparability(test.clean, shadow.clean, rule=settings.shadow_rule,
                                                      margin=settings.shadow_margin, alpha=settings.shadow_alpha))
    ppl = _perplexity(test, shadow, settings, rngs[0])

    memorization = None
    mem_results: dict[str, DiDResult | None] = {}
    probe_items: list[dict] = []
    probe_data = None
    if probes is not None:
        table = read_probes(probes)
        probe_table = table.probes
        if not probe_table:
            # `contaudit probes` wrote no pairs (its manifest says why): the memorization test
            # cannot run, which is a failed sample-size check, not a missing analysis.
            checks += _verdict.check_sample_sizes({"seen": 0, "unseen": 0},
                                                  {"seen": settings.min_probes, "unseen": settings.min_probes})
            mem_results = {m: None for m in COMPLETION_FIELDS}
            probe_data = {"n_seen": 0, "n_unseen": 0}
        else:
            if suspect_probes is None or clean_probes is None:
                raise InputError("the memorization test needs --suspect-probes and --clean-probes with --probes")
            # Score files written before suffix_logprob existed still analyze on the other metrics.
            required = tuple(dict.fromkeys(("exact_match", "token_match_frac", settings.primary_metric)))
            optional = tuple(m for m in COMPLETION_FIELDS if m not in required)
            sus_p = read_scores(suspect_probes, require=required, optional=optional, allow_empty=True)
            clean_p = read_scores(clean_probes, require=required, optional=optional, allow_empty=True)
            for f in (sus_p, clean_p):
                if not f.rows:  # every probe skipped by the scorer, e.g. suffixes longer than the context
                    skipped = ((f.manifest or {}).get("counts") or {}).get("skip_reasons")
                    warnings.append(f"{f.path} has no scored probes (skipped: {skipped or 'reasons unknown'}); "
                                    f"the memorization test cannot run.")
            universe = list(probe_table)
            available = [m for m in COMPLETION_FIELDS
                         if all(not f.rows or m in next(iter(f.rows.values())) for f in (sus_p, clean_p))]
            for m in COMPLETION_FIELDS:
                if m not in available:
                    mem_results[m] = None
                    warnings.append(f"the probe score files have no {m!r}; rescore them with this version to get it")
            paired = {m: pair_scores("probes", sus_p, clean_p, m, universe=universe) for m in available}
            p0 = paired["exact_match"]
            extra = sorted((set(sus_p.rows) | set(clean_p.rows)) - set(probe_table))
            if extra:
                warnings.append(f"{len(extra)} scored probe ids are not in {probes} and were ignored "
                                f"(e.g. {extra[0]!r}); check that the probe files belong together.")
            unscored = [i for i in universe if i not in sus_p.rows and i not in clean_p.rows]
            n_seen = sum(probe_table[i]["probe_set"] == "seen" for i in p0.ids)
            n_unseen = len(p0.ids) - n_seen
            checks += _verdict.check_sample_sizes({"seen": n_seen, "unseen": n_unseen},
                                                  {"seen": settings.min_probes, "unseen": settings.min_probes})
            checks.append(_verdict.check_pairing("probe", len(p0.ids), p0.n_unpaired + len(unscored),
                                                 max_fraction=settings.max_unpaired_fraction))
            balance = table.balance
            if balance is None:
                balance = {f"{cov}_smd": _probe_smd(probe_table, p0.ids, field_) for cov, field_ in
                           (("length", "n_words"), ("rarity", "rarity"))}
                warnings.append("probes.manifest.json has no balance diagnostics; balance was computed from the "
                                "n_words and rarity fields of probes.jsonl.")
            matched = table.match_on or ("length", "rarity")
            checks += _verdict.check_probe_balance({cov: balance.get(f"{cov}_smd") for cov in ("length", "rarity")
                                                    if cov in matched}, threshold=settings.balance_threshold)
            for cov in ("length", "rarity"):
                if cov not in matched and balance.get(f"{cov}_smd") is not None:
                    warnings.append(f"The probes were not matched on {cov} (SMD {balance[f'{cov}_smd']:+.3f}); "
                                    f"it is reported but not checked.")
            for metric in available:
                mem_results[metric] = _did_or_none(
                    memorization_did, *_split_probes(paired[metric], probe_table), n_resamples=settings.n_permutations,
                    n_bootstrap=settings.n_bootstrap, confidence_level=settings.confidence_level,
                    rng=mem_rngs[metric])
            # None when a set has fewer than 2 probes; the sample-size check has then failed.
            memorization = mem_results[settings.primary_metric]
            probe_data = {**p0.to_dict(), "n_seen": n_seen, "n_unseen": n_unseen, "n_unscored": len(unscored),
                          "n_extra_scored": len(extra), "balance": balance}
            by_id = {m: dict(zip(paired[m].ids, zip(paired[m].suspect, paired[m].clean))) for m in available}
            for i, s, c in zip(p0.ids, p0.suspect, p0.clean):
                fs, fc = by_id["token_match_frac"].get(i, (None, None))
                ls, lc = by_id.get("suffix_logprob", {}).get(i, (None, None))
                probe_items.append({"id": i, "probe_set": probe_table[i]["probe_set"], "n_words": probe_table[i]["n_words"],
                                    "exact_sus": int(s), "exact_clean": int(c), "frac_sus": _num(fs),
                                    "frac_clean": _num(fc), "logprob_sus": _num(ls), "logprob_clean": _num(lc)})

    index_by_id: dict[str, dict] = {}
    index_data = None
    if index is not None:
        from contaudit.index.store import load_index

        idx = load_index(index)
        index_by_id = idx.by_id()
        index_data = {"path": str(index), "n_items": len(idx.items),
                      "n_test_items_found": sum(i in index_by_id for i in test.ids)}

    supporting = _supporting(test, shadow, files, minkpp, index_by_id, item_order, settings, rngs[3])
    decided = _verdict.decide(ppl, memorization, checks, settings,
                              memorization_metric=settings.primary_metric if probes is not None else None)

    d_test = test.suspect - test.clean
    results = {
        "schema_version": SCHEMA_VERSION,
        "kind": "contaudit-results",
        "contaudit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "protocol": {**provenance, "analysis": asdict(settings)},
        "verdict": decided.to_dict(),
        "perplexity_did": (_did_dict(ppl, metric="nll_mean", unit="nats/token", direction="negative")
                           if ppl is not None else None),
        "memorization_did": ({"primary_metric": settings.primary_metric,
                              **{m: (_did_dict(r, metric=m, unit=METRIC_UNITS[m], direction="positive") if r is not None else None)
                                 for m, r in mem_results.items()}} if probes is not None else None),
        "design_checks": [c.to_dict() for c in checks],
        "supporting": supporting,
        "data": {"test": test.to_dict(), "shadow": shadow.to_dict(), "probes": probe_data, "index": index_data},
        "warnings": warnings,
        "items": {
            "test": [{"id": i, "y_sus": float(s), "y_clean": float(c), "d": float(d),
                      **({"index": _index_record(index_by_id[i])} if i in index_by_id else {})}
                     for i, s, c, d in zip(test.ids, test.suspect, test.clean, d_test)],
            "shadow": [{"id": i, "y_sus": float(s), "y_clean": float(c), "d": float(s - c)}
                       for i, s, c in zip(shadow.ids, shadow.suspect, shadow.clean)],
            "probes": probe_items,
        },
        "inputs": {},
        "timing_s": None,
    }
    inputs = {"suspect_test": suspect_test, "clean_test": clean_test, "suspect_shadow": suspect_shadow,
              "clean_shadow": clean_shadow, **probe_args, "index": index, "item_order": item_order}
    results["inputs"] = {k: describe_path(v) for k, v in inputs.items() if v is not None}
    results["timing_s"] = round(time.perf_counter() - started, 3)
    if out is not None:
        write_results(results, out)
    return results


def _supporting(test: Paired, shadow: Paired, files: dict[str, ScoreFile], minkpp: str, index_by_id: dict,
                item_order, settings: AnalysisSettings, rng) -> dict:
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
    has = all(minkpp in next(iter(f.rows.values())) for f in files.values())
    if not has:
        out["minkpp_did"] = {"available": False, "reason": f"score files lack {minkpp}"}
    else:
        t = pair_scores("test", files["suspect_test"], files["clean_test"], minkpp)
        s = pair_scores("shadow", files["suspect_shadow"], files["clean_shadow"], minkpp)
        if min(len(t.ids), len(s.ids)) < 2:
            out["minkpp_did"] = {"available": False, "reason": "fewer than 2 paired items in a set"}
        else:
            res = difference_in_means(t.suspect - t.clean, s.suspect - s.clean, alternative="greater",
                                      n_resamples=settings.n_permutations, n_bootstrap=settings.n_bootstrap,
                                      confidence_level=settings.confidence_level, rng=rng)
            out["minkpp_did"] = {"available": True, **_did_dict(res, metric=minkpp, unit=minkpp,
                                                                direction="positive")}
    if item_order is None:
        out["item_order"] = {"available": False, "reason": "no item-order log-likelihoods given"}
    else:
        canonical, shuffled = read_item_order(item_order)
        try:
            res = item_order_test(canonical, shuffled, confidence_level=settings.confidence_level)
        except InputError as e:
            raise InputError(str(e), path=item_order) from None
        out["item_order"] = {"available": True, **res.to_dict()}
    return out


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
