"""``results.json``: its schema (written by :meth:`AnalysisResults.to_dict`), reading it back,
and summaries (the gate: :mod:`contaudit.suite.gate`).

The schema is documented in ``docs/analysis.md``. ``schema_version`` is
``MAJOR.MINOR``: a minor bump only adds fields; readers refuse another major version.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contaudit import __version__
import contaudit.analysis.verdict as _verdict
from contaudit.analysis.inputs import index_record
from contaudit.analysis.units import Units
from contaudit.analysis.verdict import DesignCheck
from contaudit.errors import InputError, ManifestMismatchError
from contaudit.manifest import RESULTS_MANIFEST, describe_path, make_manifest, read_json, write_json_atomic
from contaudit.protocol import AnalysisSettings
from contaudit.statistics import format_p, json_number

if TYPE_CHECKING:
    from contaudit.analysis.design import Design
    from contaudit.analysis.did import DiDResult
    from contaudit.analysis.inputs import ModelFiles, ScoreMatrix
    from contaudit.analysis.panel import PanelResult
    from contaudit.analysis.primary import MemorizationPart

SCHEMA_VERSION = "1.4"
RESULTS_NAME = "results.json"
MANIFEST_NAME = RESULTS_MANIFEST


def results_path(run: str | Path) -> Path:
    """``RUN_DIR/results.json`` for a run directory, or the path itself for a file."""
    run = Path(run)
    return run if run.is_file() else run / RESULTS_NAME


def _no_results_hint(run: Path) -> str:
    """What to do when ``run`` holds no results.json: the runs inside it, if any, else how to make one."""
    if run.is_dir():
        inside = sorted(p.parent.relative_to(run).as_posix() for p in run.glob(f"*/{RESULTS_NAME}"))
        inside += sorted(p.parent.relative_to(run).as_posix() for p in run.glob(f"benchmarks/*/{RESULTS_NAME}"))
        if inside:
            return (f"no {RESULTS_NAME} here; it holds the runs {', '.join(inside[:5])}"
                    f"{', ...' if len(inside) > 5 else ''}: give one of them (e.g. {run / inside[0]})")
    return f"no {RESULTS_NAME}; run `contaudit audit PROTOCOL --out {run}` (or `contaudit analyze ... --out {run}`) first"


def load_results(run: str | Path) -> dict:
    """Read ``results.json`` from a run directory (or a results file) and check its schema."""
    path = results_path(run)
    if not path.exists():
        raise InputError(_no_results_hint(Path(run)), path=run)
    results = read_json(path)
    if not isinstance(results, dict) or results.get("kind") != "contaudit-results":
        raise InputError("not a contaudit results file (no \"kind\": \"contaudit-results\")", path=path)
    version = str(results.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ManifestMismatchError(f"{path}: schema_version {version!r} cannot be read by this contaudit "
                                    f"(reads {SCHEMA_VERSION.split('.')[0]}.x); rerun `contaudit analyze`")
    return results


def summary(results: dict) -> dict:
    """A compact JSON summary: verdict, primary estimates with Holm p-values, failed checks, hashes."""
    v = results["verdict"]
    return {
        "schema_version": results["schema_version"],
        "verdict": v["label"],
        "reason": v["reasons"][0] if v["reasons"] else "",
        "alpha": v["alpha"],
        "tests": {t["name"]: {"estimate": t["estimate"], "unit": t["unit"], "pvalue_holm": t["pvalue_holm"],
                              "counts": t["counts"]} for t in v["tests"]},
        "failed_checks": [c["name"] for c in results["design_checks"] if c["passed"] is False],
        "minimum_detectable_effect": v.get("minimum_detectable_effect"),
        "protocol_sha256": results["protocol"]["sha256"],
    }


def summary_line(results: dict) -> str:
    """One line for logs and CI: the label, each primary estimate with its Holm p, the protocol hash."""
    s = summary(results)
    parts = []
    names = {"perplexity_did": "perplexity DiD", "memorization_did": "memorization DiD", "item_order": "order test"}
    for name, t in s["tests"].items():
        unit = f" {t['unit']}" if t["unit"] else ""
        holm = "" if name == "item_order" else "Holm "  # the order test decides alone: no correction
        parts.append(f"{names.get(name, name)} {t['estimate']:+.4g}{unit} ({holm}{format_p(t['pvalue_holm'], named=True)})")
    if s["failed_checks"]:
        parts.append("failed checks: " + ", ".join(s["failed_checks"]))
    return f"{s['verdict']}: " + "; ".join(parts) + f"; protocol {s['protocol_sha256'][:12]}"


def inflation_line(results: dict) -> str | None:
    """One line on the score inflation (None without outcomes): each model's test and shadow score, the
    inflation with its interval and p-value, and the suspect's score without the leak."""
    inf = results.get("inflation")
    if not inf:
        return None
    scores = "; ".join(f"{role} test {g['test']['mean']:.3f}, shadow {g['shadow']['mean']:.3f}"
                       for role, g in inf["scores"].items())
    low, high = inf["confidence_interval"]
    ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    return (f"{inf['metric']}: {scores}; inflation {inf['estimate']:+.3f}{ci} "
            f"(one-sided {format_p(inf['pvalue'], named=True)}); without the leak {inf['clean_score']['estimate']:.3f}")


# --- writing results.json ---------------------------------------------------------------

def did_dict(result, *, metric: str, unit: str, direction: str) -> dict:
    """A primary or supporting test's entry: what it measured, in which unit and direction, and its result."""
    return {"metric": metric, "unit": unit, "direction": direction, **result.to_dict()}


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
    inflation: dict | None = None  # the score inflation, when per-item evaluation outcomes were given

    def _items(self) -> dict:
        """Per-item rows: suspect and clean NLL and their difference ``d``; without a clean model the
        suspect's NLL alone (``y_sus``), and ``z`` against the suspect's shadow items."""
        test, shadow, mem = self.test, self.shadow, self.memorization

        def index(i):
            return {"index": index_record(self.index_by_id[i])} if i in self.index_by_id else {}

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
            "perplexity_did": (did_dict(self.perplexity, metric=units.perplexity_metric, unit=units.perplexity_unit,
                                         direction="negative") if self.perplexity is not None else None),
            "memorization_did": None if mem is None else {
                "primary_metric": self.settings.primary_metric, **({"not_run": mem.not_run} if mem.not_run else {}),
                **{m: (did_dict(r, metric=m, unit=units.metric_unit(m), direction="positive")
                       if r is not None else None) for m, r in mem.results.items()}},
            "design_checks": [c.to_dict() for c in self.checks],
            "supporting": self.supporting,
            "inflation": self.inflation,
            "data": {"test": test.to_dict(), "shadow": shadow.to_dict(), "probes": mem.data if mem else None,
                     "index": self.index_data},
            "warnings": self.warnings,
            "items": self._items(),
            "inputs": self.inputs,
            "timing_s": self.timing_s,
        }


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
