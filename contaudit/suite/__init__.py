"""Suites: one suspect model screened on several benchmarks, and the release gate (``contaudit screen``).

One module per concept:

* :mod:`contaudit.suite.spec` -- the suite file: :class:`Suite`, :func:`load_suite`;
* :mod:`contaudit.suite.run` -- running a suite's audits: :func:`run_suite`;
* :mod:`contaudit.suite.gate` -- the gate: one run (:func:`gate_run`), a suite's
  benchmarks with Holm across them (:func:`suite_gate`, :func:`gate_pvalue`), a finished
  suite run again (:func:`regate`);
* :mod:`contaudit.suite.results` -- ``RUN/suite.json``: writing and reading it;
* :mod:`contaudit.suite.report` -- the suite report rendered from ``suite.json``.

Names are imported on first use, so ``load_suite`` (and a bad suite's error) does not
load numpy, scipy or matplotlib. Example::

    from contaudit.suite import gate_run, run_suite
    run = run_suite("suite.toml", "runs/release-1")
    print(run.exit_code, run.report.html)
    gate_run("runs/audit", fail_on="SUSPECT").exit_code
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "spec": ("BenchmarkSpec", "GateSettings", "Suite", "load_suite"),
    "run": ("SuiteRun", "run_suite"),
    "gate": ("BenchmarkGate", "RunGate", "SuiteGate", "gate_pvalue", "gate_run", "regate", "suite_gate"),
    "results": ("SUITE_KIND", "SUITE_RESULTS", "SUITE_SCHEMA_VERSION", "benchmark_row", "load_suite_results",
                "suite_results"),
    "report": ("SuiteReportFiles", "render_suite_html", "render_suite_markdown", "write_suite_report"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Import a public name from its module the first time it is asked for."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
