"""``RUN/suite.json``: the suite results a screen writes, and reading them back.

One document per suite run: the suite file (source, SHA-256, name), one row per
benchmark (its verdict, primary tests, corpus evidence and most-found items, taken from
its ``results.json``), the gate (:class:`contaudit.suite.gate.SuiteGate`) and what the
run did (corpus passes, model loads, seconds). ``schema_version`` is ``MAJOR.MINOR`` as
for ``results.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

from contaudit import __version__
from contaudit.errors import InputError
from contaudit.manifest import read_json
from contaudit.suite.spec import Suite

SUITE_RESULTS = "suite.json"
SUITE_KIND = "contaudit-suite-results"
SUITE_SCHEMA_VERSION = "1.0"
TOP_ITEMS = 3  # most-found test items listed per benchmark


def _did_cell(test: dict | None) -> dict | None:
    if test is None:
        return None
    return {"estimate": test["estimate"], "confidence_interval": test["confidence_interval"],
            "pvalue_holm": test["pvalue_holm"], "counts": test["counts"], "unit": test["unit"]}


def _top_items(results: dict) -> list[dict]:
    """The test items the corpus holds most often, each with its first location."""
    seen = [row for row in results.get("items", {}).get("test", [])
            if (row.get("index") or {}).get("status") == "seen"]
    seen.sort(key=lambda row: (-(row["index"].get("occurrences") or 0), row["id"]))
    out = []
    for row in seen[:TOP_ITEMS]:
        where = (row["index"].get("locations") or [row["index"].get("neardup_location")])[0]
        out.append({"id": row["id"], "occurrences": row["index"].get("occurrences"), "location": where})
    return out


def benchmark_row(name: str, results: dict, run_dir: Path, suite_dir: Path) -> dict:
    """One row of the suite table, from a benchmark's ``results.json``."""
    tests = {t["name"]: t for t in results["verdict"]["tests"]}
    corpus = (results.get("supporting") or {}).get("corpus") or {}
    return {
        "name": name,
        "verdict": results["verdict"]["label"],
        "reason": results["verdict"]["reasons"][0] if results["verdict"]["reasons"] else "",
        "perplexity_did": _did_cell(tests.get("perplexity_did")),
        "memorization_did": _did_cell(tests.get("memorization_did")),
        "item_order": _did_cell(tests.get("item_order")),
        "corpus": {"available": bool(corpus.get("available")), "n_test": corpus.get("n_test"),
                   "n_seen": corpus.get("n_seen"), "share_seen": corpus.get("share_seen"),
                   **({"n_paraphrased": corpus["n_paraphrased"]} if "n_paraphrased" in corpus else {})},
        "top_items": _top_items(results),
        "failed_checks": [c["name"] for c in results["design_checks"] if c["passed"] is False],
        "run": str(run_dir.relative_to(suite_dir)),
        "report": str((run_dir / "report.html").relative_to(suite_dir)),
        "protocol_sha256": (results.get("protocol") or {}).get("sha256"),  # a re-gate checks it
        "inflation": _inflation_cell(results.get("inflation")),
    }


def _inflation_cell(inflation: dict | None) -> dict | None:
    """The score inflation of a benchmark with [benchmarks.outcomes]: estimate, interval, p, the suspect's
    test score and its score without the leak."""
    if not inflation:
        return None
    return {"metric": inflation["metric"], "estimate": inflation["estimate"],
            "confidence_interval": inflation["confidence_interval"], "pvalue": inflation["pvalue"],
            "suspect_test_score": inflation["suspect_test_score"],
            "clean_score": inflation["clean_score"]["estimate"]}


def suite_results(suite: Suite, rows: list[dict], gate, run: dict) -> dict:
    """The ``suite.json`` document: the suite, its rows (:func:`benchmark_row`), the gate and the run."""
    return {"kind": SUITE_KIND, "schema_version": SUITE_SCHEMA_VERSION, "contaudit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "suite": {"source": str(suite.source), "sha256": suite.sha256, "name": suite.name,
                      "description": suite.description},
            "benchmarks": rows, "gate": gate.to_dict(), "run": run}


def load_suite_results(run: str | Path) -> dict:
    """Read ``RUN/suite.json`` written by :func:`contaudit.suite.run_suite`."""
    path = Path(run) / SUITE_RESULTS
    if not path.exists():
        raise InputError(f"no {SUITE_RESULTS}; run `contaudit screen SUITE --out {run}` first", path=run)
    data = read_json(path)
    if not isinstance(data, dict) or data.get("kind") != SUITE_KIND:
        raise InputError("not a contaudit suite results file (no \"kind\": \"contaudit-suite-results\")", path=path)
    return data
