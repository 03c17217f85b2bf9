"""``results.json``: its schema version, reading it back, and summaries (the gate: :mod:`contaudit.suite.gate`).

The schema is documented in ``docs/analysis.md``. ``schema_version`` is
``MAJOR.MINOR``: a minor bump only adds fields; readers refuse another major version.
"""

from __future__ import annotations

from pathlib import Path

from contaudit.analysis.did import format_p
from contaudit.errors import InputError, ManifestMismatchError
from contaudit.manifest import read_json

SCHEMA_VERSION = "1.3"
RESULTS_NAME = "results.json"
MANIFEST_NAME = "results.manifest.json"


def results_path(run: str | Path) -> Path:
    """``RUN_DIR/results.json`` for a run directory, or the path itself for a file."""
    run = Path(run)
    return run if run.is_file() else run / RESULTS_NAME


def load_results(run: str | Path) -> dict:
    """Read ``results.json`` from a run directory (or a results file) and check its schema."""
    path = results_path(run)
    if not path.exists():
        raise InputError(f"no {RESULTS_NAME}; run `contaudit analyze ... --out {Path(run)}` first", path=run)
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

