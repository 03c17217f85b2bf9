"""The gate: pass or fail for one audit run, or for a suite's benchmarks together, with the error rate stated.

One run (:func:`gate_run`, ``contaudit screen RUN_DIR``): its verdict against ``fail_on``
(:func:`contaudit.analysis.verdict.gate`).

A suite (:func:`suite_gate`, ``contaudit screen SUITE``; :func:`regate` on a finished
suite run): each benchmark keeps its own verdict (its own alpha, Holm across its two
primary tests). The gate asks, per benchmark, "does the verdict reach ``fail_on``?", and
the answer is a test: the verdict reaches ``fail_on`` exactly when a *gate p-value* is at
most alpha (:func:`gate_pvalue`). With ``correction = "holm"`` (the default) the gate
applies Holm's step-down across the K benchmarks to those p-values, so the chance that
any benchmark of a clean model fails the gate stays at most alpha however many
benchmarks the suite holds (instead of up to K x alpha). With ``"none"`` each verdict
counts as it stands.

An INCONCLUSIVE or INVALID_DESIGN benchmark has no gate p-value: it enters Holm's
correction with p = 1 (so it cannot make another benchmark fail) and neither passes nor
fails by p-value.

Exit codes (named in :data:`contaudit.analysis.verdict.EXIT_STATUS`): 0 pass, 1 at least
one benchmark fails the gate (or, with ``inconclusive_fails``, is INCONCLUSIVE), 3 none
fails but at least one is INVALID_DESIGN, 4 none fails or is invalid but at least one is
INCONCLUSIVE (an audit that cannot decide never passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contaudit.statistics import holm
from contaudit.analysis.results import load_results, summary, summary_line
from contaudit.analysis.verdict import (CONTAMINATED, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_INVALID, EXIT_PASS,
                                        INCONCLUSIVE, INVALID_DESIGN, SUSPECT, UNDECIDED, gate, rule_alpha)
from contaudit.errors import InputError
from contaudit.suite.results import load_suite_results

CORRECTIONS = ("holm", "none")


def _ceiling(verdict: dict) -> str:
    """The highest label the benchmark's design allows (results before schema 1.2 lack it: inferred)."""
    if "ceiling" in verdict:
        return verdict["ceiling"]
    names = {t["name"] for t in verdict["tests"]}
    return CONTAMINATED if {"perplexity_did", "memorization_did"} <= names else SUSPECT


def gate_pvalue(verdict: dict, fail_on: str) -> float | None:
    """The smallest alpha at which this verdict reaches ``fail_on``; None for INCONCLUSIVE and INVALID_DESIGN.

    A primary test counts when its Holm-adjusted p is at most alpha, its estimate points
    the contamination way and reaches the minimum effect; only the first depends on
    alpha. So SUSPECT is reached when the smallest p of the tests that point the right
    way and are large enough is <= alpha, and CONTAMINATED (when the design allows it)
    when the largest p of the two is. 1.0 when ``fail_on`` cannot be reached at any alpha.

    >>> t = lambda name, p: {"name": name, "pvalue_holm": p, "direction_ok": True, "above_minimum": True}
    >>> v = {"label": "SUSPECT", "ceiling": "CONTAMINATED", "tests": [t("perplexity_did", 0.01), t("memorization_did", 0.2)]}
    >>> gate_pvalue(v, "SUSPECT"), gate_pvalue(v, "CONTAMINATED")
    (0.01, 0.2)
    """
    if fail_on not in (SUSPECT, CONTAMINATED):
        raise InputError(f"`fail_on` must be SUSPECT or CONTAMINATED; got {fail_on!r}.")
    if verdict["label"] in UNDECIDED:
        return None
    return rule_alpha(verdict["tests"], _ceiling(verdict), fail_on)


@dataclass
class BenchmarkGate:
    """One benchmark's part in the gate."""

    name: str
    label: str
    pvalue: float | None  # gate p-value (None: INCONCLUSIVE or INVALID_DESIGN)
    adjusted: float | None  # after the suite's correction
    fails: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.label, "gate_pvalue": self.pvalue,
                "gate_pvalue_adjusted": self.adjusted, "fails": self.fails}


@dataclass
class SuiteGate:
    """The suite's pass/fail: per-benchmark parts, the exit code and a sentence saying how it was reached."""

    fail_on: str
    correction: str
    alpha: float
    benchmarks: list[BenchmarkGate]
    exit_code: int
    rule: str
    inconclusive_fails: bool = False

    def to_dict(self) -> dict:
        return {"fail_on": self.fail_on, "correction": self.correction, "alpha": self.alpha,
                "inconclusive_fails": self.inconclusive_fails,
                "exit_code": self.exit_code, "passed": self.exit_code == EXIT_PASS, "rule": self.rule,
                "benchmarks": [b.to_dict() for b in self.benchmarks]}


def suite_gate(verdicts: dict[str, dict], *, fail_on: str, alpha: float, correction: str = "holm",
               inconclusive_fails: bool = False) -> SuiteGate:
    """Combine benchmarks' verdicts (``results.json``'s ``verdict``, by name) into one gate.

    With ``correction="holm"`` benchmark k fails when its Holm-adjusted gate p-value
    (over all K benchmarks; an INCONCLUSIVE or INVALID_DESIGN one enters with p = 1) is
    <= ``alpha``; with ``"none"`` when its own verdict reaches ``fail_on``
    (:func:`~contaudit.analysis.verdict.gate`). With ``inconclusive_fails`` an
    INCONCLUSIVE benchmark fails the gate too.
    """
    if correction not in CORRECTIONS:
        raise InputError(f"`correction` must be one of {', '.join(CORRECTIONS)}; got {correction!r}.")
    if not verdicts:
        raise InputError("a suite gate needs at least one benchmark")
    names = list(verdicts)
    pvalues = [gate_pvalue(verdicts[n], fail_on) for n in names]
    if correction == "holm":
        adjusted = holm([1.0 if p is None else p for p in pvalues]).tolist()
        fails = [p is not None and a <= alpha for p, a in zip(pvalues, adjusted)]
        rule = (f"A benchmark fails the gate when its verdict reaches {fail_on} after Holm's correction across the "
                f"{len(names)} benchmarks (adjusted gate p <= {alpha:g}): the chance that a model without "
                f"contamination fails on any benchmark is at most {alpha:g}. Each benchmark's own verdict uses its "
                f"own alpha, so a benchmark can read {fail_on} and still pass the gate.")
    else:
        adjusted = list(pvalues)
        fails = [gate(verdicts[n]["label"], fail_on) == EXIT_FAIL for n in names]
        rule = (f"A benchmark fails the gate when its own verdict reaches {fail_on} (no correction across the "
                f"{len(names)} benchmarks: the chance that a model without contamination fails on some benchmark "
                f"grows with their number, up to {len(names)} x alpha).")
    labels = [verdicts[n]["label"] for n in names]
    if inconclusive_fails:
        fails = [f or label == INCONCLUSIVE for f, label in zip(fails, labels)]
    if INCONCLUSIVE in labels:
        rule += (" An INCONCLUSIVE benchmark (a design that cannot hold its error rate) "
                 + ("fails the gate (inconclusive_fails)." if inconclusive_fails else
                    "neither passes nor fails: exit 4 unless another benchmark fails."))
    parts = [BenchmarkGate(n, label, p, None if p is None else a, f)
             for n, label, p, a, f in zip(names, labels, pvalues, adjusted, fails)]
    if any(fails):
        code = EXIT_FAIL
    elif INVALID_DESIGN in labels:
        code = EXIT_INVALID
    elif INCONCLUSIVE in labels:
        code = EXIT_INCONCLUSIVE
    else:
        code = EXIT_PASS
    return SuiteGate(fail_on, correction, alpha, parts, code, rule, inconclusive_fails)


def regate(run: str | Path, *, fail_on: str | None = None, inconclusive_fails: bool | None = None) -> tuple[dict, SuiteGate]:
    """The gate of a finished suite run, at ``fail_on`` (default: the one it ran with), from its
    benchmarks' ``results.json``; returns the suite results and the gate."""
    data = load_suite_results(run)
    verdicts = {}
    for row in data["benchmarks"]:
        results = load_results(Path(run) / row["run"])
        made_by, recorded = (results.get("protocol") or {}).get("sha256"), row.get("protocol_sha256")
        if recorded and made_by != recorded:  # rows of suites written before 1.x record none
            raise InputError(f"{row['run']}/results.json was made by protocol {str(made_by)[:12]}, but "
                             f"suite.json gated the run of protocol {recorded[:12]}: this run directory mixes two "
                             f"runs; screen the suite again into it (or into a new --out)", path=run)
        verdicts[row["name"]] = results["verdict"]
    if inconclusive_fails is None:
        inconclusive_fails = bool(data["gate"].get("inconclusive_fails", False))
    return data, suite_gate(verdicts, fail_on=fail_on or data["gate"]["fail_on"], alpha=data["gate"]["alpha"],
                            correction=data["gate"]["correction"], inconclusive_fails=inconclusive_fails)


@dataclass
class RunGate:
    """The gate of one audit run (:func:`gate_run`): the exit code, one line, and the JSON summary."""

    exit_code: int
    line: str
    summary: dict


def gate_run(run: str | Path, *, fail_on: str = "CONTAMINATED", inconclusive_fails: bool = False) -> RunGate:
    """A pre-release gate over a finished audit run (``RUN_DIR/results.json``).

    Exit codes: 0 pass; 1 the verdict reaches ``fail_on`` (``SUSPECT`` or
    ``CONTAMINATED``; NO_EVIDENCE < SUSPECT < CONTAMINATED); 3 INVALID_DESIGN; 4
    INCONCLUSIVE (1 with ``inconclusive_fails``). An audit that cannot decide never passes.
    """
    results = load_results(run)
    code = gate(results["verdict"]["label"], fail_on, inconclusive_fails=inconclusive_fails)
    s = summary(results)
    s.update(fail_on=fail_on, exit_code=code, passed=code == 0)
    return RunGate(code, summary_line(results), s)
