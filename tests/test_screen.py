"""`contaudit screen SUITE`: one corpus pass, each model loaded once, one table and one gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from cli_helpers import cli, one_line_error, runner
from contaudit.cli import app
from contaudit.statistics import holm
from contaudit.analysis.suite import gate_pvalue, suite_gate
from contaudit.analysis.verdict import gate
from planted import make_planted

ANALYSIS = """
[analysis]
n_permutations = 499
n_bootstrap = 0
min_items = 10
min_probes = 3
"""


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def suite_text(benchmarks: list[tuple[str, str, str]], *, extra: str = "", index: str | None = None) -> str:
    """A suite over the tiny models in the fixture's folder; ``benchmarks``: (name, test, shadow)."""
    text = f"""
name = "tiny suite"
[models.suspect]
path = "suspect"
[models.clean]
path = "clean"
[index]
corpus = ["{index or 'corpus.jsonl'}"]
[probes]
suffix_words = 12
min_seen = 3
{ANALYSIS}
{extra}
"""
    for name, test, shadow in benchmarks:
        text += f"""
[[benchmarks]]
name = "{name}"
shadow_origin = "random_split"
[benchmarks.test]
path = "{test}"
[benchmarks.shadow]
path = "{shadow}"
"""
    return text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny random models and three benchmarks cut from one planted corpus (ids repeat across them)."""
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("screen")
    planted = make_planted(root, n_items=150, n_docs=100)
    rows = [json.loads(line) for line in planted.bench.read_text().splitlines()]
    names = []
    for k, name in enumerate(("alpha", "beta", "gamma")):
        part = [{"id": f"q{i}", "text": r["text"]} for i, r in enumerate(rows[k::3])]  # same ids in every benchmark
        _write(root / f"{name}-test.jsonl", part[0::2])
        _write(root / f"{name}-shadow.jsonl", part[1::2])
        names.append((name, f"{name}-test.jsonl", f"{name}-shadow.jsonl"))
    save_tiny_model(root / "suspect", seed=0)
    save_tiny_model(root / "clean", seed=1)
    suite = root / "suite.toml"
    suite.write_text(suite_text(names))
    return root, suite, names


def test_screen_scans_the_corpus_once_loads_each_model_once_and_writes_one_table(tiny, monkeypatch):
    import contaudit.index.build as build
    import contaudit.scoring.engine as engine

    root, suite, names = tiny
    loads, scans = [], []
    real_load, real_scan = engine.load_model, build._scan_here
    monkeypatch.setattr(engine, "load_model", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(build, "_scan_here", lambda *a, **k: scans.append(1) or real_scan(*a, **k))
    run = root / "run"
    code, output = cli("screen", suite, "--out", run)
    assert code in (0, 1, 3), output
    assert len(scans) == 1  # one pass over the corpus for three benchmarks
    assert len(loads) == 2  # the suspect and the clean model, once each
    data = json.loads((run / "suite.json").read_text())
    assert data["run"]["index"]["corpus_passes"] == 1 and len(data["run"]["index"]["built"]) == 3
    assert data["run"]["model_loads"] == {"suspect": 1, "clean": 1}
    assert [row["name"] for row in data["benchmarks"]] == ["alpha", "beta", "gamma"]
    for name, test, _ in names:
        bench = run / "benchmarks" / name
        results = json.loads((bench / "results.json").read_text())
        assert results["protocol"]["sha256"] == data["suite"]["sha256"]
        assert results["protocol"]["name"] == f"tiny suite / {name}"
        assert (bench / "report.html").exists() and (run / "index" / name / "manifest.json").exists()
        n_test = len((root / test).read_text().splitlines())
        assert len((bench / "scores" / "suspect" / "test.jsonl").read_text().splitlines()) == n_test
        # each benchmark's index holds its own items (the ids repeat across benchmarks)
        texts = {json.loads(line)["text"] for line in (run / "index" / name / "items.jsonl").read_text().splitlines()}
        assert {json.loads(line)["text"] for line in (root / test).read_text().splitlines()} <= texts
    for rel in ("report.md", "report.html", "report.json"):
        assert (run / rel).exists()
    md = (run / "report.md").read_text()
    assert all(f"[{name}](benchmarks/{name}/report.html)" in md for name, _, _ in names)
    assert all(f'href="benchmarks/{name}/report.html"' in (run / "report.html").read_text() for name, _, _ in names)

    loads.clear(), scans.clear()
    again = runner.invoke(app, ["screen", str(suite), "--out", str(run), "--json"])
    assert again.exit_code == code
    assert scans == []  # every index reused
    assert json.loads((run / "suite.json").read_text())["run"]["index"]["corpus_passes"] == 0
    assert json.loads(again.stdout)["exit_code"] == code
    for name, _, _ in names:
        before = json.loads((run / "benchmarks" / name / "results.json").read_text())["verdict"]
        assert before["label"] == next(r["verdict"] for r in data["benchmarks"] if r["name"] == name)

    regated, output = cli("screen", run, "--fail-on", "SUSPECT")  # a finished screen, gated again
    assert regated in (0, 1, 3) and regated >= code, output


@pytest.mark.parametrize("edit, key, message", [
    (lambda t: t.replace('name = "beta"', 'name = "alpha"'), "benchmarks[1].name", "also the name of benchmarks[0]"),
    (lambda t: t.replace('name = "beta"', 'name = "be ta"'), "benchmarks[1].name", "letters, digits"),
    (lambda t: t.replace('name = "beta"\n', ''), "benchmarks[1].name", "missing; it is required"),
    (lambda t: t.replace("path = \"beta-test.jsonl\"", "path = \"nope.jsonl\""), "benchmarks[1].test.path",
     "no such file"),
    (lambda t: t + '\n[benchmarks.analysis]\nalpha = 2\n', "benchmarks[2].analysis.alpha", "must be a number"),
    (lambda t: t + '\n[benchmarks.split]\npath = "alpha-test.jsonl"\ncutoff = 2024-01-01\n', "benchmarks[2].split",
     "not both"),
    (lambda t: t + '\n[benchmarks.probes]\nsuffix_wordz = 3\n', "benchmarks[2].probes.suffix_wordz", "unknown key"),
    (lambda t: t.replace("[probes]", "[gate]\nfail_on = \"MAYBE\"\n[probes]"), "gate.fail_on", "must be one of"),
    (lambda t: t.replace("[probes]", "[gate]\ncorrection = \"bonferroni\"\n[probes]"), "gate.correction",
     "must be one of"),
    (lambda t: t.replace('path = "clean"', 'path = "missing-model"'), "models.clean.path", "no such file"),
    (lambda t: t.split("[[benchmarks]]")[0], "benchmarks", "missing; it is required"),
    (lambda t: "benchmarks = []\n" + t.split("[[benchmarks]]")[0], "benchmarks", "is empty"),
    (lambda t: t.replace("[analysis]", "[analysis]\nalpha = 0.9"), "analysis.alpha", "must be a number"),
])
def test_a_bad_suite_fails_before_any_work_naming_the_file_and_key(tiny, tmp_path, edit, key, message):
    root, suite, _ = tiny
    bad = root / f"bad-{abs(hash(key + message))}.toml"
    bad.write_text(edit(suite.read_text()))
    out = tmp_path / "run"
    one_line_error(*cli("screen", bad, "--out", out), str(bad), f"`{key}`", message)
    assert not out.exists()  # nothing written


def test_a_protocol_is_not_a_suite_and_a_suite_needs_out(tiny, tmp_path):
    root, suite, _ = tiny
    protocol = root / "protocol-like.toml"
    protocol.write_text('[models.suspect]\npath = "suspect"\n[sets.test]\npath = "alpha-test.jsonl"\n'
                        '[sets.shadow]\npath = "alpha-shadow.jsonl"\n')
    one_line_error(*cli("screen", protocol, "--out", tmp_path / "r"), "contaudit audit")
    one_line_error(*cli("screen", suite), "needs --out")


def test_a_bad_suite_fails_without_loading_the_heavy_libraries(tiny, tmp_path):
    import subprocess
    import sys

    root, suite, _ = tiny
    bad = root / "bad-fast.toml"
    bad.write_text(suite.read_text().replace('name = "beta"', 'name = "alpha"'))
    code = ("import sys; from contaudit.cli import main; sys.argv = ['contaudit', 'screen', sys.argv[1], '--out', "
            "sys.argv[2]]\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('LOADED', sorted(m for m in ('torch', 'scipy', 'numpy', 'transformers') if m in sys.modules), code)")
    done = subprocess.run([sys.executable, "-c", code, str(bad), str(tmp_path / "r")], capture_output=True, text=True)
    assert "LOADED [] 2" in done.stdout, done.stdout + done.stderr


# --- the gate: a test per benchmark, and Holm across them ---------------------------------


def _verdict(label, tests, ceiling="CONTAMINATED"):
    return {"label": label, "ceiling": ceiling, "tests": [
        {"name": n, "pvalue_holm": p, "direction_ok": d, "above_minimum": m} for n, p, d, m in tests]}


def _label_at(v: dict, alpha: float) -> str:
    """The label the decision rule gives at ``alpha`` (what analysis/verdict.py decides)."""
    counting = sum(t["pvalue_holm"] <= alpha and t["direction_ok"] and t["above_minimum"] for t in v["tests"])
    if counting == 2 and v["ceiling"] == "CONTAMINATED":
        return "CONTAMINATED"
    return "SUSPECT" if counting else "NO_EVIDENCE"


@pytest.mark.parametrize("tests, ceiling", [
    ([("perplexity_did", 0.004, True, True), ("memorization_did", 0.03, True, True)], "CONTAMINATED"),
    ([("perplexity_did", 0.004, True, True), ("memorization_did", 0.03, True, True)], "SUSPECT"),
    ([("perplexity_did", 0.004, False, True), ("memorization_did", 0.03, True, True)], "CONTAMINATED"),
    ([("perplexity_did", 0.2, True, True), ("memorization_did", 0.001, True, False)], "CONTAMINATED"),
    ([("perplexity_did", 0.01, True, True)], "SUSPECT"),
    ([("item_order", 0.02, True, True)], "SUSPECT"),
])
def test_the_gate_pvalue_is_the_smallest_alpha_at_which_the_verdict_reaches_fail_on(tests, ceiling):
    v = _verdict("NO_EVIDENCE", tests, ceiling)
    for fail_on in ("SUSPECT", "CONTAMINATED"):
        p = gate_pvalue(v, fail_on)
        for alpha in (0.0005, 0.001, 0.004, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5):
            reached = gate(_label_at(v, alpha), fail_on) == 1
            assert reached == (p <= alpha), (fail_on, alpha, p)
    assert gate_pvalue(_verdict("INVALID_DESIGN", tests), "SUSPECT") is None


def test_holm_across_benchmarks_controls_the_suite_and_none_takes_verdicts_as_they_stand():
    strong = _verdict("CONTAMINATED", [("perplexity_did", 0.001, True, True), ("memorization_did", 0.002, True, True)])
    weak = _verdict("CONTAMINATED", [("perplexity_did", 0.03, True, True), ("memorization_did", 0.04, True, True)])
    clean = _verdict("NO_EVIDENCE", [("perplexity_did", 0.6, True, True), ("memorization_did", 0.5, False, True)])
    verdicts = {"a": strong, "b": weak, "c": clean}
    g = suite_gate(verdicts, fail_on="CONTAMINATED", alpha=0.05)
    adjusted = holm([0.002, 0.04, 1.0]).tolist()
    assert [b.adjusted for b in g.benchmarks] == adjusted
    assert [b.fails for b in g.benchmarks] == [True, False, False]  # b reads CONTAMINATED but 0.08 > 0.05
    assert g.exit_code == 1 and "Holm" in g.rule
    none = suite_gate(verdicts, fail_on="CONTAMINATED", alpha=0.05, correction="none")
    assert [b.fails for b in none.benchmarks] == [True, True, False]
    assert suite_gate({"c": clean}, fail_on="SUSPECT", alpha=0.05).exit_code == 0
    invalid = _verdict("INVALID_DESIGN", [("perplexity_did", 0.001, True, True)])
    assert suite_gate({"c": clean, "x": invalid}, fail_on="SUSPECT", alpha=0.05).exit_code == 3
    assert suite_gate({"a": strong, "x": invalid}, fail_on="SUSPECT", alpha=0.05).exit_code == 1


def test_an_inconclusive_benchmark_neither_passes_nor_fails_by_pvalue():
    strong = _verdict("CONTAMINATED", [("perplexity_did", 0.001, True, True), ("memorization_did", 0.002, True, True)])
    clean = _verdict("NO_EVIDENCE", [("perplexity_did", 0.6, True, True), ("memorization_did", 0.5, False, True)])
    # an INCONCLUSIVE design whose tests look strong (diagnosis only): no gate p-value, p = 1 in Holm
    unsure = _verdict("INCONCLUSIVE", [("perplexity_did", 0.0001, True, True), ("memorization_did", 0.0001, True, True)],
                      "INCONCLUSIVE")
    assert gate_pvalue(unsure, "SUSPECT") is None
    g = suite_gate({"c": clean, "u": unsure}, fail_on="SUSPECT", alpha=0.05)
    assert g.exit_code == 4 and [b.fails for b in g.benchmarks] == [False, False]
    assert [b.adjusted for b in g.benchmarks] == [pytest.approx(1.0), None] and "INCONCLUSIVE" in g.rule
    assert suite_gate({"c": clean, "u": unsure}, fail_on="SUSPECT", alpha=0.05, inconclusive_fails=True).exit_code == 1
    assert suite_gate({"a": strong, "u": unsure}, fail_on="SUSPECT", alpha=0.05).exit_code == 1
    invalid = _verdict("INVALID_DESIGN", [("perplexity_did", 0.001, True, True)])
    assert suite_gate({"u": unsure, "x": invalid}, fail_on="SUSPECT", alpha=0.05).exit_code == 3


def test_the_holm_gate_keeps_the_familywise_error_of_a_clean_suite_at_alpha():
    """K benchmarks of a clean model (uniform p-values): how often does any fail the gate?"""
    import numpy as np

    rng = np.random.default_rng(7)
    k, runs, alpha = 10, 4000, 0.05
    failed = {"holm": 0, "none": 0}
    for _ in range(runs):
        verdicts = {f"b{i}": _verdict("NO_EVIDENCE", [("perplexity_did", float(p), True, True)], "SUSPECT")
                    for i, p in enumerate(rng.uniform(size=k))}
        for v in verdicts.values():
            v["label"] = _label_at(v, alpha)
        for correction in failed:
            failed[correction] += suite_gate(verdicts, fail_on="SUSPECT", alpha=alpha,
                                             correction=correction).exit_code == 1
    holm_rate, none_rate = failed["holm"] / runs, failed["none"] / runs
    assert stats.binomtest(failed["holm"], runs, alpha, alternative="greater").pvalue > 0.01, holm_rate
    assert abs(none_rate - (1 - (1 - alpha) ** k)) < 0.03, none_rate  # 40 % without a correction
