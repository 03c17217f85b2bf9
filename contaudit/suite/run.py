"""Running a suite: audit one suspect against every benchmark of a suite file, then gate.

The suite file (:mod:`contaudit.suite.spec`) is validated before any work. Then the stages of
:func:`contaudit.audit.audit_benchmarks` run once for all benchmarks: the corpus is
scanned in one pass for every benchmark whose index is missing or stale, each model is
loaded once and scores every benchmark's sets through the score cache, and each
benchmark gets the audit ``contaudit audit`` would give it. Last, the gate
(:mod:`contaudit.suite.gate`), the suite results (:mod:`contaudit.suite.results`) and
the suite report (:mod:`contaudit.suite.report`). The run directory::

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

from contaudit.manifest import write_json_atomic
from contaudit.suite.results import SUITE_RESULTS, benchmark_row, suite_results
from contaudit.suite.spec import load_suite


@dataclass
class SuiteRun:
    """What running a suite produced: the suite results, the gate and the report files."""

    out: Path
    results: dict
    gate: object
    report: object
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return self.gate.exit_code


def run_suite(suite_path: str | Path, out: str | Path, *, fail_on: str | None = None,
              inconclusive_fails: bool | None = None,
              log: Callable[[str], None] = lambda s: None, score_progress=None) -> SuiteRun:
    """Audit the suspect of a suite file against each of its benchmarks, gate them; write ``out``.

    ``fail_on`` and ``inconclusive_fails`` override the suite's ``[gate]``. Returns the
    suite results, the gate (``exit_code``: 0 pass, 1 fail, 3 an invalid design and no
    failure, 4 an inconclusive benchmark and neither) and the report files.
    """
    suite = load_suite(suite_path)  # before any work: a bad suite fails at once
    from contaudit.analysis.verdict import EXIT_STATUS
    from contaudit.audit import BenchmarkRun, audit_benchmarks
    from contaudit.suite.gate import suite_gate
    from contaudit.rundir import run_directory
    from contaudit.suite.report import write_suite_report

    with run_directory(out, "screen") as out:
        index_dir = suite.index_dir(out) if suite.index is not None else None
        runs = [BenchmarkRun(bench.name, suite.protocol(bench), out / "benchmarks" / bench.name,
                             index=index_dir / bench.name if index_dir else None) for bench in suite.benchmarks]
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        staging = index_dir.with_name(index_dir.name + ".partial") if index_dir else out / "index.partial"
        shared = audit_benchmarks(runs, index_staging=staging, log=log, score_progress=score_progress,
                                  seconds=seconds)
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
    log(f"gate: {EXIT_STATUS[gate.exit_code]} at {fail_on} ({suite.gate.correction} across "
        f"{len(runs)} benchmarks)" + (f": {', '.join(failing)}" if failing else "") + f" -> {report.html}")
    return SuiteRun(out, results, gate, report, seconds)
