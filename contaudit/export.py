"""``contaudit export``: a finished run's evidence in the formats of the field's two databases.

* the **CONDA Data Contamination Database** (``contamination_report.csv`` of the
  CONDA-Workshop/Data-Contamination-Database space): ``;``-separated rows, one per
  (benchmark, contaminated source, approach), split columns holding the percentage of the
  split found contaminated;
* the **LM Contamination Index** (``data.json`` of hitz-zentroa/lm-contamination): JSON
  entries with a status per split (``contaminated`` / ``suspicious`` / ``clean`` / ``n/a``)
  and percentages.

A run gives per benchmark (an audit one, a screen one per benchmark) at most two claims
about its test split: the **model-based** one from the verdict (the suspect model as the
source) and the **data-based** one from the corpus index (the corpus as the source, the
share of test items it holds as the percentage). Which verdict maps to which status, and
why, is in ``docs/export.md``. An ``INCONCLUSIVE`` or ``INVALID_DESIGN`` verdict makes no
model-based claim.

Example::

    text = export_run("runs/humaneval", "conda", dataset_name="openai_humaneval",
                      model_name="my-org/my-model", reference="https://example.org/report")
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contaudit.analysis.results import load_results
from contaudit.errors import InputError
from contaudit.manifest import (
    DATA_SUFFIXES,
    check_can_create,
    manifest_beside,
    read_json,
    write_text_atomic,
)
from contaudit.suite.results import SUITE_RESULTS, load_suite_results

FORMATS = ("conda", "lmci")

# contamination_report.csv's header since the database's "File fixes and cleaning" (#17, April 2024) added Version.
CONDA_COLUMNS = ("Evaluation Dataset", "Subset", "Contaminated Source", "Version", "Model or corpus", "Train Split",
                 "Development Split", "Test Split", "Approach", "Reference", "PR")
# data.json's keys, in its order (``corpus`` names a model or a corpus since the index's 2023-11-29 "Corrections").
LMCI_KEYS = ("corpus", "dataset", "train_split", "dev_split", "test_split", "train_percent", "dev_percent",
             "test_percent", "guidelines", "source")

# The model-based claim of each verdict: the databases' status, or None for no claim at all.
VERDICT_STATUS = {"CONTAMINATED": "contaminated", "SUSPECT": "suspicious", "NO_EVIDENCE": "clean",
                  "INCONCLUSIVE": None, "INVALID_DESIGN": None}
LMCI_CONTAMINATED_FROM = 1.0  # percent of the test split found in a corpus; below it (and above 0) "suspicious"
REPORT_NAME = "report.html"

Names = str | Mapping[str, str] | None


@dataclass(frozen=True)
class Evidence:
    """One claim about one benchmark's test split, before a database's format is applied.

    ``status`` is ``contaminated``, ``suspicious`` or ``clean``; ``percent`` the share of
    the test split found (data-based), None when the approach measures no share.
    """

    dataset: str
    subset: str
    source: str  # the suspect model or the corpus
    kind: str  # "model" or "corpus"
    approach: str  # "model-based" or "data-based"
    status: str
    percent: float | None
    reference: str


@dataclass(frozen=True)
class _Benchmark:
    """One audited benchmark of a run: its results, its default name and its report."""

    name: str  # the suite's benchmark name, or "" for an audit run
    default_dataset: str | None
    results: dict
    run: Path
    report: Path


def export_run(run: str | Path, fmt: str, *, dataset_name: Names = None, subset: Names = None,
               model_name: str | None = None, corpus_name: str | None = None, reference: str | None = None,
               out: str | Path | None = None) -> str:
    """A finished run's evidence as CONDA rows (``fmt="conda"``) or LM Contamination Index entries (``"lmci"``).

    ``run`` is an audit run directory (``results.json``, ``report.html``) or a screen's
    (``suite.json``). ``dataset_name`` and ``subset`` take one name, or for a suite a
    mapping from benchmark name to name; ``model_name``, ``corpus_name`` and ``reference``
    override the defaults (the suspect model's and the corpus's file names, the report's
    absolute path). With ``out`` the text is also written there, atomically. Returns the text.
    """
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if out is not None:
        check_can_create(out)
    evidence = collect_evidence(run, dataset_name=dataset_name, subset=subset, model_name=model_name,
                                corpus_name=corpus_name, reference=reference)
    if fmt == "conda" and all(e.status == "suspicious" for e in evidence):
        raise InputError("nothing to export to CONDA: the verdict is SUSPECT and the database keeps no "
                         "'suspicious' reports (its maintainers removed them for lack of evidence); the LM "
                         "Contamination Index records them (--format lmci)", path=run)
    text = to_conda(evidence) if fmt == "conda" else to_lmci(evidence)
    if out is not None:
        write_text_atomic(out, text)
    return text


def collect_evidence(run: str | Path, *, dataset_name: Names = None, subset: Names = None,
                     model_name: str | None = None, corpus_name: str | None = None,
                     reference: str | None = None) -> list[Evidence]:
    """The claims a finished run makes, per benchmark: model-based (the verdict), then data-based (the index)."""
    run = Path(run)
    benchmarks = _benchmarks(run)
    names = [b.name for b in benchmarks]
    evidence, silent = [], []
    for b in benchmarks:
        label = b.results["verdict"]["label"]
        verdict_status = VERDICT_STATUS.get(label)
        corpus = (b.results.get("supporting") or {}).get("corpus") or {}
        has_index = bool(corpus.get("available") and corpus.get("n_test"))
        if verdict_status is None and not has_index:
            silent.append(f"{b.name + ': ' if b.name else ''}the verdict is {label} (no model-based claim) "
                          f"and the run had no corpus index (no data-based evidence)")
            continue
        dataset = _name_for(dataset_name, b, names, "dataset name") or b.default_dataset
        if not dataset:
            raise InputError("the run has no protocol to name its benchmark; give the dataset's public name "
                             "(--dataset-name, e.g. openai_humaneval)", path=run)
        where = {"dataset": dataset, "subset": _name_for(subset, b, names, "subset") or "",
                 "reference": reference or _report(b)}
        if verdict_status is not None:
            evidence.append(Evidence(source=model_name or _model_name(b), kind="model", approach="model-based",
                                     status=verdict_status, percent=None, **where))
        if has_index:
            percent = 100.0 * corpus["n_seen"] / corpus["n_test"]
            evidence.append(Evidence(source=corpus_name or _corpus_name(b), kind="corpus", approach="data-based",
                                     status="clean" if percent == 0 else "contaminated", percent=percent, **where))
    if not evidence:
        raise InputError("nothing to export: " + "; ".join(silent), path=run)
    return evidence


def to_conda(evidence: list[Evidence]) -> str:
    """``contamination_report.csv`` rows (with the header) for the claims; ``suspicious`` ones are left out.

    The test split's column holds the percentage found contaminated: the share of items
    in the corpus (data-based), 100.0 for a model-based CONTAMINATED (the extent is not
    measured; the database's convention), 0.0 for a clean result. PR stays empty until
    the pull request is opened.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\n")
    writer.writerow(CONDA_COLUMNS)
    for e in evidence:
        if e.status == "suspicious":
            continue
        percent = e.percent if e.percent is not None else (100.0 if e.status == "contaminated" else 0.0)
        writer.writerow([e.dataset, e.subset, e.source, "", e.kind, "", "", _conda_percent(percent), e.approach,
                         e.reference, ""])
    return buffer.getvalue()


def to_lmci(evidence: list[Evidence]) -> str:
    """LM Contamination Index entries (a JSON list, indented as ``data.json``) for the claims.

    Data-based shares below :data:`LMCI_CONTAMINATED_FROM` percent are ``suspicious``
    without a percentage, as the index records corpus overlaps that small.
    """
    entries = []
    for e in evidence:
        status, percent = e.status, e.percent
        if e.approach == "data-based" and percent:
            percent = float(f"{percent:.1f}")  # the index's precision (its scripts/check_integrity.py)
            if percent < LMCI_CONTAMINATED_FROM:
                status, percent = "suspicious", None
        entries.append(dict(zip(LMCI_KEYS, (
            e.source, f"{e.dataset} ({e.subset})" if e.subset else e.dataset, None, None, status, None, None,
            percent if status == "contaminated" else None, None, e.reference))))
    return json.dumps(entries, indent=4, ensure_ascii=False) + "\n"


# --- reading a finished run --------------------------------------------------------------


def _benchmarks(run: Path) -> list[_Benchmark]:
    """An audit run's one benchmark, or a screen's benchmarks in the suite's order."""
    if run.is_dir() and (run / SUITE_RESULTS).exists():
        suite = load_suite_results(run)
        return [_Benchmark(row["name"], row["name"], load_results(run / row["run"]), run / row["run"],
                           run / row["report"]) for row in suite.get("benchmarks", [])]
    results = load_results(run)  # without results.json: says what the folder holds instead, and what to do
    folder = run if run.is_dir() else run.parent
    protocol = results.get("protocol") or {}
    default = protocol.get("name") if protocol.get("source") else None  # not "built-in defaults"
    return [_Benchmark("", default, results, folder, folder / REPORT_NAME)]


def _name_for(value: Names, benchmark: _Benchmark, names: list[str], what: str) -> str | None:
    """The ``what`` given for ``benchmark``: one name for an audit, or its entry in a per-benchmark mapping."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(names) > 1:
            raise InputError(f"one {what} ({value!r}) for {len(names)} benchmarks ({', '.join(names)}); "
                             f"give NAME=VALUE once per benchmark")
        return value
    if not benchmark.name:
        raise InputError(f"a {what} per benchmark ({', '.join(value)}) is for a suite; this run audits one "
                         f"benchmark: give one {what}")
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise InputError(f"{what} for {', '.join(unknown)}: no such benchmark in the suite "
                         f"(it has {', '.join(names)})")
    return value.get(benchmark.name)


def _report(benchmark: _Benchmark) -> str:
    """The benchmark's report as an absolute path: the default reference."""
    if not benchmark.report.is_file():
        raise InputError(f"no {REPORT_NAME} to cite; run `contaudit report {benchmark.run}` first, or give "
                         f"--reference URL", path=benchmark.run)
    return str(benchmark.report.resolve())


def _model_name(benchmark: _Benchmark) -> str:
    """The suspect model's directory (or GGUF file) name, from the manifest of its test-set scores."""
    score_file = ((benchmark.results.get("inputs") or {}).get("suspect_test") or {}).get("path")
    manifest = manifest_beside(score_file) if score_file else None
    model = read_json(manifest).get("model") if manifest is not None and manifest.is_file() else None
    if not isinstance(model, dict) or not model.get("path"):
        raise InputError("the suspect's score manifest does not name its model; give its public name "
                         "(--model-name, e.g. mistralai/Mistral-7B-v0.1)", path=benchmark.run)
    return Path(model["gguf_file"]).stem if model.get("gguf_file") else Path(model["path"]).name


def _corpus_name(benchmark: _Benchmark) -> str:
    """The indexed corpus's name: its one file's (without the data suffix) or its files' common folder's."""
    index = ((benchmark.results.get("data") or {}).get("index") or {}).get("path")
    manifest = Path(index) / "manifest.json" if index else None
    inputs = read_json(manifest).get("inputs") if manifest is not None and manifest.is_file() else None
    paths = [Path(i["path"]) for i in inputs or [] if isinstance(i, dict) and i.get("path")]
    if not paths:
        raise InputError("the corpus index's manifest does not name the corpus; give its public name "
                         "(--corpus-name, e.g. allenai/c4)", path=benchmark.run)
    if len(paths) > 1:
        return Path(os.path.commonpath([str(p) for p in paths])).name
    name = paths[0].name
    return next((name[: -len(s)] for s in DATA_SUFFIXES + (".parquet", ".txt") if name.endswith(s)), name)


def _conda_percent(percent: float) -> str:
    """A percentage as the database writes it (``28.7``, ``0.03``, ``100.0``), never rounding a find to 0."""
    if percent == 0:
        return "0.0"
    rounded = round(percent, 2)
    return str(rounded) if rounded else f"{percent:.2g}"
