"""The suite file: one suspect model, several benchmarks, one TOML file (``contaudit screen SUITE``).

A suite file (TOML) holds what a protocol holds, once: the models (``[models.*]``), the
corpus or prebuilt indexes (``[index]``), the ``[probes]`` / ``[scoring]`` /
``[analysis]`` / ``[item_order]`` settings, and then a list of ``[[benchmarks]]``
tables, each with a ``name`` and its sets exactly as a protocol's ``[sets]`` table
(``[benchmarks.test]`` + ``[benchmarks.shadow]``, or ``[benchmarks.split]``, optional
``[[benchmarks.heldout]]`` and ``shadow_origin``). A benchmark may override
``[benchmarks.probes]``, ``[benchmarks.analysis]`` and ``[benchmarks.item_order]``:
its keys replace the suite's, key by key. ``[gate]`` says how the suite's pass/fail
combines the benchmarks (:mod:`contaudit.suite.gate`).

Each benchmark becomes an ordinary :class:`~contaudit.protocol.Protocol`
(:meth:`Suite.protocol`), so its audit is the one ``contaudit audit`` runs. The whole
file is validated before any work; errors name the file and the key
(``benchmarks[1].analysis.alpha``)::

    >>> suite = load_suite("examples/suite/suite.toml", check_paths=False)  # doctest: +SKIP
    >>> [b.name for b in suite.benchmarks]  # doctest: +SKIP
    ['humaneval', 'debian-changelogs', 'man-pages']
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from contaudit.config import AnalysisSettings, ItemOrderConfig, ProbeConfig, required, setting
from contaudit.errors import ProtocolError
from contaudit.protocol import (AuditSettings, Loader, OutcomesSpec, Protocol, Sets, check_answer_field,
                                check_cutoffs, check_models,
                                check_outcomes, check_paths_exist, check_sets, input_paths, outcome_paths, read_toml,
                                set_paths)

# Keys a [[benchmarks]] table may override, each merged key by key over the suite's table.
OVERRIDABLE = ("probes", "analysis", "item_order")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _name_ok(value: str) -> str | None:
    if _NAME.fullmatch(value):
        return None
    return "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (it names a directory)"


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec(Sets):
    """One ``[[benchmarks]]`` table: a name, its sets (as a protocol's ``[sets]``), and overrides."""

    name: str = required(check=_name_ok, help="a short name, unique in the suite (names its run directory)")
    description: str = setting("", help="free text")
    probes: Optional[ProbeConfig] = setting(None, help="this benchmark's [probes] keys, over the suite's")
    analysis: Optional[AnalysisSettings] = setting(None, help="this benchmark's [analysis] keys, over the suite's")
    item_order: Optional[ItemOrderConfig] = setting(None, help="this benchmark's [item_order] keys, over the suite's")
    outcomes: Optional[OutcomesSpec] = setting(
        None, help="this benchmark's per-item evaluation outcomes (as a protocol's [outcomes]): its score inflation")


@dataclass(frozen=True)
class GateSettings:
    """``[gate]``: the suite's pass/fail (``contaudit screen`` exits 0 pass, 1 fail, 3 invalid design, 4 inconclusive)."""

    fail_on: Literal["SUSPECT", "CONTAMINATED"] = setting(
        "CONTAMINATED", help="a benchmark fails the gate when its verdict reaches this (--fail-on overrides it)")
    correction: Literal["holm", "none"] = setting(
        "holm", help="'holm': a benchmark fails only if it still does after Holm's correction across the suite's "
                     "benchmarks (family-wise error <= [analysis] alpha); 'none': each verdict as it stands")
    inconclusive_fails: bool = setting(
        False, help="true: an INCONCLUSIVE benchmark fails the gate (exit 1); false: it exits 4 unless another fails")


@dataclass(frozen=True, kw_only=True)
class Suite(AuditSettings):
    """A validated screening suite: shared models, index and settings, and its benchmarks."""

    name: str = setting("suite", help="a short name for reports")
    benchmarks: tuple[BenchmarkSpec, ...] = required(
        help="[[benchmarks]] tables, each with a name and [benchmarks.test] + [benchmarks.shadow] or "
             "[benchmarks.split]")
    gate: GateSettings = setting(GateSettings(), help="how the suite's pass/fail combines its benchmarks")

    def protocol(self, benchmark: BenchmarkSpec) -> Protocol:
        """The audit protocol of one benchmark: the suite's models, index and settings with its overrides.

        Its ``sha256`` is the suite file's (the file that fixed the audit before it ran).
        """
        sets = Sets(**{f.name: getattr(benchmark, f.name) for f in dataclasses.fields(Sets)})
        return Protocol(models=self.models, name=f"{self.name} / {benchmark.name}",
                        description=benchmark.description or self.description, index=self.index,
                        probes=benchmark.probes or self.probes, scoring=self.scoring,
                        analysis=benchmark.analysis or self.analysis, item_order=benchmark.item_order or self.item_order,
                        sets=sets, outcomes=benchmark.outcomes, source=self.source, sha256=self.sha256)

    def index_dir(self, run: Path) -> Path:
        """The directory holding one index per benchmark (``NAME/``): ``[index] path``, else ``RUN/index``."""
        return self.index.path if self.index is not None and self.index.path is not None else run / "index"


def _merge_overrides(table: dict) -> None:
    """Merge each benchmark's override tables over the suite's, key by key (in place, before validation)."""
    benchmarks = table.get("benchmarks")
    if not isinstance(benchmarks, list):
        return  # the loader reports the wrong type
    for bench in benchmarks:
        if not isinstance(bench, dict):
            continue
        for key in OVERRIDABLE:
            shared = table.get(key, {})
            if isinstance(bench.get(key), dict) and isinstance(shared, dict):
                bench[key] = {**shared, **bench[key]}


def load_suite(path: str | Path, *, check_paths: bool = True) -> Suite:
    """Read and validate a suite file; every error names the file and the key.

    ``check_paths`` also requires every model, set and corpus path to exist (and, for
    prebuilt indexes, ``[index] path``/NAME for every benchmark).

    Raises
    ------
    ProtocolError
        Unreadable TOML, a missing, unknown or ill-typed key, no benchmarks, a repeated
        benchmark name, a benchmark with both a split and test/shadow sets, or (with
        ``check_paths``) a missing file.
    """
    path = Path(path)
    raw, table = read_toml(path, "suite")
    loader = Loader(path)
    if "sets" in table and "benchmarks" not in table:
        raise ProtocolError(f"{path}: key `sets`: a suite lists its benchmarks as [[benchmarks]] tables, each with "
                            f"a name and [benchmarks.test] + [benchmarks.shadow]; this looks like an audit protocol "
                            f"(run it with `contaudit audit`)")
    _merge_overrides(table)
    suite = loader.build(Suite, table, "")
    if not suite.benchmarks:
        raise loader.fail("benchmarks", "is empty; list at least one [[benchmarks]] table")
    check_models(loader, suite.models)
    first: dict[str, int] = {}
    for i, bench in enumerate(suite.benchmarks):
        key = f"benchmarks[{i}]"
        check_sets(loader, bench, key)
        check_cutoffs(loader, suite.models, bench, key)
        check_outcomes(loader, bench.outcomes, suite.models, f"{key}.outcomes")
        check_answer_field(loader, bench, bench.outcomes, suite.index, key)
        if bench.name in first:
            raise loader.fail(f"{key}.name", f"{bench.name!r} is also the name of benchmarks[{first[bench.name]}]; "
                                             "names must be unique")
        first[bench.name] = i
    if check_paths:
        wanted = input_paths(suite)
        for i, bench in enumerate(suite.benchmarks):
            wanted += set_paths(bench, f"benchmarks[{i}]")
            wanted += outcome_paths(bench.outcomes, f"benchmarks[{i}].outcomes")
        if suite.index is not None and suite.index.path is not None and not suite.index.corpus:
            wanted += [("index.path", suite.index.path / bench.name) for bench in suite.benchmarks]
        check_paths_exist(loader, wanted)
    return dataclasses.replace(suite, source=path, sha256=hashlib.sha256(raw).hexdigest())
