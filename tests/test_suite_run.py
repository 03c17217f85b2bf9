"""`contaudit screen SUITE`: one corpus pass, each model loaded once, one table and one gate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli_helpers import cli, one_line_error, runner
from contaudit.cli import app
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

    # The gate's columns show on a laptop screen: no horizontal scrolling at 1280 CSS pixels (issue 25: they
    # sat behind a scrollbar, pushed out by absolute corpus paths).
    columns = _rendered_columns(run / "report.html", root)
    assert columns["scroll_width"] <= 1280, columns
    for header in ("Gate", "Gate p (adjusted)"):
        assert columns["headers"][header] <= 1280, columns
    from contaudit.suite.report import corpus_root  # shortened locations keep their full path on hover

    root = corpus_root(json.loads((run / "suite.json").read_text()))
    assert root and re.search(rf'<span title="[^"]*x, {re.escape(root)}/corpus\.jsonl:\d+@\d+\)">[^<]*x, corpus\.jsonl:',
                              (run / "report.html").read_text())

    # An interrupted rerun of another suite left one benchmark's results from another protocol: a re-gate
    # must not mix them with suite.json's (issue 23).
    results_path = run / "benchmarks" / "beta" / "results.json"
    other = json.loads(results_path.read_text())
    other["protocol"]["sha256"] = "f" * 64
    results_path.write_text(json.dumps(other))
    mixed, output = cli("screen", run, "--fail-on", "SUSPECT")
    one_line_error(mixed, output, "benchmarks/beta/results.json was made by protocol ffffffffffff",
                   "this run directory mixes two runs")


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



WIDTH_PROBE = """<script>window.addEventListener("load", function () {
  var headers = {};
  document.querySelectorAll("th").forEach(function (th) { headers[th.innerText] = th.getBoundingClientRect().right; });
  var pre = document.createElement("pre");
  pre.id = "width-probe";
  pre.textContent = JSON.stringify({scroll_width: document.documentElement.scrollWidth, headers: headers});
  document.body.appendChild(pre);
});</script>"""


def _rendered_columns(page: Path, tmp: Path) -> dict:
    """Where headless Chromium, 1280 CSS pixels wide, puts each table header's right edge, and the page's width."""
    import html
    import re
    import subprocess

    from browser_helpers import browser

    probe = page.with_name(".width-probe.html")
    probe.write_text(page.read_text().replace("</body>", WIDTH_PROBE + "</body>"))
    try:
        proc = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
                               "--window-size=1280,3000", "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=60)
    finally:
        probe.unlink()
    found = re.search(r'<pre id="width-probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))
