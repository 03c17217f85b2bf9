"""``contaudit screen SUITE``: audit one suspect against every benchmark of a suite, then gate.

The suite file (:mod:`contaudit.suite`) is validated before any work. Then the stages of
:func:`contaudit.audit.audit_benchmarks` run once for all benchmarks: the corpus is
scanned in one pass for every benchmark whose index is missing or stale, each model is
loaded once and scores every benchmark's sets through the score cache, and each
benchmark gets the audit ``contaudit audit`` would give it. Last, the gate
(:mod:`contaudit.analysis.suite`) and the suite report. The run directory::

    RUN/suite.json                  the suite results: rows, gate, what the run did
    RUN/report.md, report.html, report.json
    RUN/benchmarks/NAME/            each benchmark's audit run (results.json, report.html, ...)
    RUN/index/NAME/                 each benchmark's index (unless [index] path says where)

Example::

    run = run_suite("suite.toml", "runs/release-1")
    print(run.gate.exit_code, run.report.html)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contaudit import __version__
from contaudit.errors import InputError
from contaudit.manifest import read_json, write_json_atomic
from contaudit.suite import Suite, load_suite

SUITE_RESULTS = "suite.json"
TOP_ITEMS = 3  # most-found test items listed per benchmark


@dataclass
class SuiteRun:
    """What a screen produced: the suite results, the gate and the report files."""

    out: Path
    results: dict
    gate: object
    report: object
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.gate.exit_code


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
                   "n_seen": corpus.get("n_seen"), "share_seen": corpus.get("share_seen")},
        "top_items": _top_items(results),
        "failed_checks": [c["name"] for c in results["design_checks"] if c["passed"] is False],
        "run": str(run_dir.relative_to(suite_dir)),
        "report": str((run_dir / "report.html").relative_to(suite_dir)),
    }


def suite_results(suite: Suite, rows: list[dict], gate, run: dict) -> dict:
    """The ``suite.json`` document."""
    from contaudit.analysis.suite import SUITE_KIND, SUITE_SCHEMA_VERSION

    return {"kind": SUITE_KIND, "schema_version": SUITE_SCHEMA_VERSION, "contaudit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "suite": {"source": str(suite.source), "sha256": suite.sha256, "name": suite.name,
                      "description": suite.description},
            "benchmarks": rows, "gate": gate.to_dict(), "run": run}


def run_suite(suite_path: str | Path, out: str | Path, *, fail_on: str | None = None,
              inconclusive_fails: bool | None = None,
              log: Callable[[str], None] = lambda s: None, score_progress=None) -> SuiteRun:
    """Screen the suspect of a suite file against each of its benchmarks; write ``out``.

    ``fail_on`` and ``inconclusive_fails`` override the suite's ``[gate]``. Returns the
    suite results, the gate (``exit_code``: 0 pass, 1 fail, 3 an invalid design and no
    failure, 4 an inconclusive benchmark and neither) and the report files.
    """
    suite = load_suite(suite_path)  # before any work: a bad suite fails at once
    from contaudit.analysis.suite import suite_gate
    from contaudit.audit import BenchmarkRun, audit_benchmarks
    from contaudit.report.suite import write_suite_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory; choose another --out", path=out)
    index_dir = suite.index_dir(out) if suite.index is not None else None
    runs = [BenchmarkRun(bench.name, suite.protocol(bench), out / "benchmarks" / bench.name,
                         index=index_dir / bench.name if index_dir else None) for bench in suite.benchmarks]
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    staging = index_dir.with_name(index_dir.name + ".partial") if index_dir else out / "index.partial"
    shared = audit_benchmarks(runs, index_staging=staging, log=log, score_progress=score_progress, seconds=seconds)
    fail_on = fail_on or suite.gate.fail_on
    if inconclusive_fails is None:
        inconclusive_fails = suite.gate.inconclusive_fails
    gate = suite_gate({run.name: run.results["verdict"] for run in runs}, fail_on=fail_on,
                      alpha=suite.analysis.alpha, correction=suite.gate.correction,
                      inconclusive_fails=inconclusive_fails)
    rows = [benchmark_row(run.name, run.results, run.out, out) for run in runs]
    shared["seconds"]["total"] = round(time.perf_counter() - started, 3)
    results = suite_results(suite, rows, gate, shared)
    write_json_atomic(out / SUITE_RESULTS, results)
    report = write_suite_report(out)
    failing = [b.name for b in gate.benchmarks if b.fails]
    from contaudit.analysis.verdict import EXIT_STATUS

    log(f"gate: {EXIT_STATUS[gate.exit_code]} at {fail_on} ({suite.gate.correction} across "
        f"{len(runs)} benchmarks)" + (f": {', '.join(failing)}" if failing else "") + f" -> {report.html}")
    return SuiteRun(out, results, gate, report, seconds)


def load_suite_results(run: str | Path) -> dict:
    """Read ``RUN/suite.json`` written by :func:`run_suite`."""
    path = Path(run) / SUITE_RESULTS
    if not path.exists():
        raise InputError(f"no {SUITE_RESULTS}; run `contaudit screen SUITE --out {run}` first", path=run)
    data = read_json(path)
    from contaudit.analysis.suite import SUITE_KIND

    if not isinstance(data, dict) or data.get("kind") != SUITE_KIND:
        raise InputError("not a contaudit suite results file (no \"kind\": \"contaudit-suite-results\")", path=path)
    return data


def regate(run: str | Path, *, fail_on: str | None = None, inconclusive_fails: bool | None = None) -> tuple[dict, object]:
    """The gate of a finished screen, at ``fail_on`` (default: the one it ran with), from its
    benchmarks' ``results.json``."""
    from contaudit.analysis.results import load_results
    from contaudit.analysis.suite import suite_gate

    data = load_suite_results(run)
    verdicts = {row["name"]: load_results(Path(run) / row["run"])["verdict"] for row in data["benchmarks"]}
    if inconclusive_fails is None:
        inconclusive_fails = bool(data["gate"].get("inconclusive_fails", False))
    return data, suite_gate(verdicts, fail_on=fail_on or data["gate"]["fail_on"], alpha=data["gate"]["alpha"],
                            correction=data["gate"]["correction"], inconclusive_fails=inconclusive_fails)
