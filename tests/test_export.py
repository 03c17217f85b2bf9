"""contaudit export: finished runs as CONDA rows and LM Contamination Index entries, read back as published."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import cli, one_line_error
from test_suite_run import suite_text

from contaudit.analysis import analyze
from contaudit.analysis.simulate import simulate_audit, write_audit
from contaudit.export import Evidence, to_conda, to_lmci
from contaudit.protocol import AnalysisSettings
from contaudit.report import write_report

# contamination_report.csv's header as the CONDA-Workshop/Data-Contamination-Database space publishes it
# (Version since its PR #17), and the keys of hitz-zentroa/lm-contamination's data.json, in their order.
CONDA_HEADER = ["Evaluation Dataset", "Subset", "Contaminated Source", "Version", "Model or corpus", "Train Split",
                "Development Split", "Test Split", "Approach", "Reference", "PR"]
LMCI_KEYS = ["corpus", "dataset", "train_split", "dev_split", "test_split", "train_percent", "dev_percent",
             "test_percent", "guidelines", "source"]
FAST = AnalysisSettings(n_permutations=500, n_bootstrap=500)
NAMES = ("--dataset-name", "openai_humaneval", "--model-name", "my-org/suspect-7b", "--corpus-name", "my-org/corpus")
URL = "https://example.org/audit/report.html"


def _audit(directory: Path, *, index=True, probes=True, report=False, **simulation) -> Path:
    """A finished audit of a simulated benchmark (``shadow_origin`` decides whether the design can decide)."""
    origin = simulation.pop("shadow_origin", "random_split")
    files = {k: str(v) for k, v in write_audit(simulate_audit(n_test=80, n_shadow=80, n_seen=50, n_unseen=50,
                                                              **simulation), directory / "data", index=index).items()}
    if not probes:
        files = {k: v for k, v in files.items() if k not in ("suspect_probes", "clean_probes", "probes")}
    analyze(**files, protocol=FAST, shadow_origin=origin, out=directory / "run")
    if report:
        write_report(directory / "run")
    return directory / "run"


def _conda(*args) -> tuple[list[str], list[dict]]:
    code, output = cli("export", *args, "--format", "conda")
    assert code == 0, output
    reader = csv.DictReader(output.splitlines(), delimiter=";")
    return reader.fieldnames, list(reader)


def _lmci(*args) -> list[dict]:
    code, output = cli("export", *args, "--format", "lmci")
    assert code == 0, output
    return json.loads(output)


def _corpus(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["supporting"]["corpus"]


def _label(run: Path) -> str:
    return json.loads((run / "results.json").read_text())["verdict"]["label"]


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory) -> Path:
    run = _audit(tmp_path_factory.mktemp("contaminated"), report=True, ppl_effect=0.1, mem_effect=0.4,
                 contaminated_fraction=0.7, rng=21)
    assert _label(run) == "CONTAMINATED"
    return run


def test_a_contaminated_audit_gives_conda_rows_with_the_published_columns(contaminated):
    header, rows = _conda(contaminated, *NAMES, "--reference", URL)
    assert header == CONDA_HEADER
    corpus = _corpus(contaminated)
    seen = round(100 * corpus["n_seen"] / corpus["n_test"], 2)
    assert 0 < seen < 100
    common = {"Evaluation Dataset": "openai_humaneval", "Subset": "", "Version": "", "Train Split": "",
              "Development Split": "", "Reference": URL, "PR": ""}
    assert rows == [
        {**common, "Contaminated Source": "my-org/suspect-7b", "Model or corpus": "model", "Test Split": "100.0",
         "Approach": "model-based"},
        {**common, "Contaminated Source": "my-org/corpus", "Model or corpus": "corpus", "Test Split": str(seen),
         "Approach": "data-based"},
    ]


def test_a_contaminated_audit_gives_lmci_entries_with_the_published_keys(contaminated):
    entries = _lmci(contaminated, *NAMES, "--subset", "test-half", "--reference", URL)
    assert all(list(e) == LMCI_KEYS for e in entries)
    corpus = _corpus(contaminated)
    common = {"dataset": "openai_humaneval (test-half)", "train_split": None, "dev_split": None,
              "train_percent": None, "dev_percent": None, "guidelines": None, "source": URL}
    assert entries == [
        {**common, "corpus": "my-org/suspect-7b", "test_split": "contaminated", "test_percent": None},
        {**common, "corpus": "my-org/corpus", "test_split": "contaminated",
         "test_percent": float(f"{100 * corpus['n_seen'] / corpus['n_test']:.1f}")},
    ]


def test_the_default_reference_is_the_reports_absolute_path_and_out_writes_that_file_only(contaminated, tmp_path):
    before = sorted(p.relative_to(contaminated) for p in contaminated.rglob("*"))
    out = tmp_path / "exports" / "conda.csv"
    code, output = cli("export", contaminated, "--format", "conda", *NAMES, "--out", out)
    assert code == 0, output
    rows = list(csv.DictReader(out.read_text().splitlines(), delimiter=";"))
    assert {r["Reference"] for r in rows} == {str((contaminated / "report.html").resolve())}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path("exports"),
                                                                         Path("exports/conda.csv")]
    assert sorted(p.relative_to(contaminated) for p in contaminated.rglob("*")) == before


def test_names_the_run_cannot_tell_must_be_given(contaminated):
    """Simulated score files name no model, its index no corpus, and analyze ran without a protocol."""
    one_line_error(*cli("export", contaminated, "--format", "conda"), "--dataset-name")
    one_line_error(*cli("export", contaminated, "--format", "conda", "--dataset-name", "x"), "--model-name")
    one_line_error(*cli("export", contaminated, "--format", "conda", "--dataset-name", "x", "--model-name", "m"),
                   "--corpus-name")
    one_line_error(*cli("export", contaminated, "--format", "csv", *NAMES), "conda, lmci", "'csv'")
    one_line_error(*cli("export", contaminated, "--format", "lmci", "--dataset-name", "a=b", *NAMES[2:]),
                   "is for a suite")


def test_no_evidence_is_a_clean_result_in_both_databases(tmp_path):
    run = _audit(tmp_path, index=False, rng=3)
    assert _label(run) == "NO_EVIDENCE"
    _, rows = _conda(run, *NAMES, "--reference", URL)
    assert [(r["Contaminated Source"], r["Test Split"], r["Approach"]) for r in rows] == [
        ("my-org/suspect-7b", "0.0", "model-based")]
    entries = _lmci(run, *NAMES, "--reference", URL)
    assert [(e["corpus"], e["test_split"], e["test_percent"]) for e in entries] == [("my-org/suspect-7b", "clean", None)]


def test_a_suspect_verdict_is_suspicious_in_lmci_and_no_conda_row(tmp_path):
    run = _audit(tmp_path, index=False, probes=False, ppl_effect=0.1, contaminated_fraction=1.0, rng=5)
    assert _label(run) == "SUSPECT"
    entries = _lmci(run, *NAMES, "--reference", URL)
    assert [(e["corpus"], e["test_split"], e["test_percent"]) for e in entries] == [
        ("my-org/suspect-7b", "suspicious", None)]
    one_line_error(*cli("export", run, "--format", "conda", *NAMES, "--reference", URL),
                   "nothing to export to CONDA", "suspicious", "--format lmci")


def test_an_inconclusive_run_makes_no_model_based_claim(tmp_path):
    """One clean model on sets that are not a random split: the design cannot decide."""
    run = _audit(tmp_path / "indexed", shadow_origin="later_set", ppl_effect=0.1, mem_effect=0.4, rng=21)
    assert _label(run) == "INCONCLUSIVE"
    names = ("--dataset-name", "openai_humaneval", "--corpus-name", "my-org/corpus", "--reference", URL)  # no model
    _, rows = _conda(run, *names)
    assert [(r["Contaminated Source"], r["Model or corpus"], r["Approach"]) for r in rows] == [
        ("my-org/corpus", "corpus", "data-based")]
    entries = _lmci(run, *names)
    assert [(e["corpus"], e["test_split"]) for e in entries] == [("my-org/corpus", "contaminated")]

    bare = _audit(tmp_path / "bare", index=False, shadow_origin="later_set", rng=21)
    assert _label(bare) == "INCONCLUSIVE"
    for fmt in ("conda", "lmci"):
        one_line_error(*cli("export", bare, "--format", fmt, *NAMES, "--reference", URL),
                       "nothing to export", "INCONCLUSIVE", "no corpus index")


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path, contaminated):
    one_line_error(*cli("export", tmp_path, "--format", "conda", *NAMES), str(tmp_path), "no results.json")
    one_line_error(*cli("export", tmp_path / "missing", "--format", "lmci", *NAMES), "no results.json")
    no_report = _audit(tmp_path / "unreported", index=False, rng=3)
    one_line_error(*cli("export", no_report, "--format", "conda", *NAMES), "no report.html",
                   "contaudit report", "--reference")


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    """A real screen of two benchmarks cut from one planted corpus, with two tiny models (as test_suite_run)."""
    from planted import make_planted
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("suite")
    rows = [json.loads(line) for line in make_planted(root, n_items=150, n_docs=100).bench.read_text().splitlines()]
    names = []
    for k, name in enumerate(("alpha", "beta")):
        part = [json.dumps({"id": f"q{i}", "text": r["text"]}) + "\n" for i, r in enumerate(rows[k::2])]
        (root / f"{name}-test.jsonl").write_text("".join(part[0::2]))
        (root / f"{name}-shadow.jsonl").write_text("".join(part[1::2]))
        names.append((name, f"{name}-test.jsonl", f"{name}-shadow.jsonl"))
    save_tiny_model(root / "suspect", seed=0)
    save_tiny_model(root / "clean", seed=1)
    (root / "suite.toml").write_text(suite_text(names))
    code, output = cli("screen", root / "suite.toml", "--out", root / "run")
    assert code in (0, 1, 3, 4), output
    return root / "run"


def _expected_claims(suite: Path, name: str) -> list[tuple[str, str, str, str]]:
    """(source, kind, test split, approach) a benchmark's CONDA rows must hold, from its results.json."""
    results = json.loads((suite / "benchmarks" / name / "results.json").read_text())
    claims = []
    model_split = {"CONTAMINATED": "100.0", "NO_EVIDENCE": "0.0"}.get(results["verdict"]["label"])
    if model_split is not None:
        claims.append(("suspect", "model", model_split, "model-based"))
    corpus = results["supporting"]["corpus"]
    claims.append(("corpus", "corpus", str(round(100 * corpus["n_seen"] / corpus["n_test"], 2)), "data-based"))
    return claims


def test_a_suite_gives_rows_per_benchmark_named_by_the_suite_with_each_benchmarks_report(suite):
    header, rows = _conda(suite)
    assert header == CONDA_HEADER
    assert [r["Evaluation Dataset"] for r in rows] == sorted(r["Evaluation Dataset"] for r in rows)
    for name in ("alpha", "beta"):
        mine = [r for r in rows if r["Evaluation Dataset"] == name]
        assert [(r["Contaminated Source"], r["Model or corpus"], r["Test Split"], r["Approach"]) for r in mine] == \
            _expected_claims(suite, name)
        assert {r["Reference"] for r in mine} == {str((suite / "benchmarks" / name / "report.html").resolve())}
    entries = _lmci(suite)
    assert all(list(e) == LMCI_KEYS for e in entries)
    assert {e["dataset"] for e in entries} == {"alpha", "beta"}
    assert len([e for e in entries if e["corpus"] == "corpus"]) == 2  # the index's evidence, benchmark by benchmark


def test_a_suite_takes_public_names_per_benchmark(suite):
    _, rows = _conda(suite, "--dataset-name", "alpha=openai_humaneval", "--dataset-name", "beta=mbpp",
                     "--subset", "beta=sanitized", "--model-name", "my-org/suspect-7b", "--reference", URL)
    assert {(r["Evaluation Dataset"], r["Subset"]) for r in rows} == {("openai_humaneval", ""), ("mbpp", "sanitized")}
    assert {r["Contaminated Source"] for r in rows if r["Model or corpus"] == "model"} <= {"my-org/suspect-7b"}
    one_line_error(*cli("export", suite, "--format", "conda", "--dataset-name", "openai_humaneval"),
                   "2 benchmarks", "alpha, beta", "NAME=VALUE")
    one_line_error(*cli("export", suite, "--format", "conda", "--dataset-name", "gamma=x"),
                   "gamma", "no such benchmark", "alpha, beta")


def test_shares_are_never_rounded_away_and_small_corpus_overlaps_are_suspicious_in_lmci():
    def data(percent, dataset="d;1"):
        return Evidence(dataset, "", "c", "corpus", "data-based", "clean" if percent == 0 else "contaminated",
                        percent, URL)

    rows = list(csv.DictReader(to_conda([data(0.0), data(0.004), data(0.5), data(28.7), data(100.0)]).splitlines(),
                               delimiter=";"))
    assert [r["Test Split"] for r in rows] == ["0.0", "0.004", "0.5", "28.7", "100.0"]
    assert {r["Evaluation Dataset"] for r in rows} == {"d;1"}  # a ';' in a name is quoted, not a new column
    entries = json.loads(to_lmci([data(0.0), data(0.5), data(0.96), data(28.66)]))
    assert [(e["test_split"], e["test_percent"]) for e in entries] == [
        ("clean", None), ("suspicious", None), ("contaminated", 1.0), ("contaminated", 28.7)]
