"""contaudit report: report.md for terminals, self-contained report.html, report.json, screenshots."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contaudit.analysis import analyze as _analyze


def analyze(*args, **kwargs):
    """Simulated audits split items at random: test and shadow are exchangeable."""
    return _analyze(*args, **{"shadow_origin": "random_split", **kwargs})
from contaudit.analysis.simulate import simulate_audit, write_audit
from contaudit.cli import app
from contaudit.protocol import AnalysisSettings
from contaudit.report import write_report
from contaudit.report.markdown import _width

ROOT = Path(__file__).resolve().parents[1]
FAST = AnalysisSettings(n_permutations=1000, n_bootstrap=1000, top_items=8)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(directory: Path, *, probes=True, index=True, settings=FAST, **simulation) -> Path:
    audit = simulate_audit(n_test=80, n_shadow=80, n_seen=50, n_unseen=50, rng=21, **simulation)
    files = {k: str(v) for k, v in write_audit(audit, directory / "data", index=index).items()}
    if not probes:
        files = {k: v for k, v in files.items() if k not in ("suspect_probes", "clean_probes", "probes")}
    analyze(**files, protocol=settings, out=directory / "run")
    return directory / "run"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run = _run(tmp_path_factory.mktemp("report"), ppl_effect=0.1, mem_effect=0.4, contaminated_fraction=0.7)
    write_report(run)
    return run


def test_report_files_are_written(full_run):
    for name in ("report.md", "report.html", "report.json"):
        assert (full_run / name).stat().st_size > 0
    plots = sorted(p.name for p in (full_run / "plots").iterdir())
    assert plots == ["completion.png", "differences.png", "dose_response.png", "estimates.png"]
    assert all((full_run / "plots" / p).read_bytes().startswith(PNG_MAGIC) for p in plots)


def test_html_is_self_contained_with_four_embedded_plots(full_run):
    page = (full_run / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    assert all(base64.b64decode(img).startswith(PNG_MAGIC) for img in images)
    # nothing is fetched: no external URLs, scripts or stylesheets
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert "<script" not in page and "<link" not in page
    results = json.loads((full_run / "results.json").read_text())
    assert results["protocol"]["sha256"] in page
    assert ">CONTAMINATED<" in page
    for text in ("Primary tests", "Design checks", "Supporting evidence", "Most suspicious test items",
                 "corpus/shard-00.jsonl:100@0"):
        assert text in page


def test_markdown_reads_well_in_a_terminal(full_run):
    md = (full_run / "report.md").read_text()
    assert md.startswith("# Contamination audit")
    assert "**Verdict: CONTAMINATED**" in md
    lines = md.splitlines()
    # prose is wrapped; only table rows may be wider
    assert all(_width(line) <= 100 for line in lines if not line.startswith("|"))
    # each table's rows line up: every row of a table has the same display width
    tables, current = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 5
    for rows in tables[1:]:  # the first is the two-column key/value block
        assert len({_width(r) for r in rows}) == 1, rows[:3]
    assert "![DiD estimates with confidence intervals](plots/estimates.png)" in md
    assert "- [pass] shadow comparability:" in md
    assert "(+2 more)" in md  # corpus locations are shortened in the terminal version


def test_report_json_summarizes_without_items(full_run):
    data = json.loads((full_run / "report.json").read_text())
    assert data["verdict"] == "CONTAMINATED" and data["line"].startswith("CONTAMINATED: perplexity DiD")
    assert "items" not in data and data["failed_checks"] == []


def test_reports_for_a_run_without_probes_or_index(tmp_path):
    run = _run(tmp_path, probes=False, index=False)
    files = write_report(run)
    assert files.verdict == "NO_EVIDENCE"
    assert sorted(p.name for p in files.plots) == ["differences.png", "estimates.png"]
    md = files.markdown.read_text()
    assert "not available: no index given" in md and "Corpus locations" not in md
    assert "not proof of a clean model" in md


def test_reports_for_an_invalid_design(tmp_path):
    run = _run(tmp_path, settings=AnalysisSettings(n_permutations=200, n_bootstrap=0, min_items=200))
    files = write_report(run)
    assert files.verdict == "INVALID_DESIGN"
    md = files.markdown.read_text()
    assert "- [FAIL] sample size test: Too few test items" in md
    assert "diagnosis only" in files.html.read_text()


def test_cli_report_prints_the_protocol_hash(full_run):
    res = CliRunner().invoke(app, ["report", str(full_run)])
    assert res.exit_code == 0, res.output
    sha = json.loads((full_run / "results.json").read_text())["protocol"]["sha256"]
    assert f"protocol SHA-256: {sha}" in res.output
    res = CliRunner().invoke(app, ["report", str(full_run / "missing")])
    assert res.exit_code == 2 and "no results.json" in res.output


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="Chromium is not installed (apt-get install -y chromium)")
def test_screenshot_script_renders_the_report_in_headless_chromium(full_run, tmp_path):
    out = tmp_path / "report.png"
    proc = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), str(full_run), str(out), "1280", "6000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280 and 2000 < height <= 6000  # the page with its plots, trimmed below
    assert len(data) > 200_000  # plots rendered, not a blank page


def test_screenshot_script_explains_a_missing_report(tmp_path):
    proc = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), str(tmp_path)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 66 and "no such report" in proc.stderr


def test_probe_table_follows_the_primary_metric(full_run):
    from contaudit.report import tables as T

    results = json.loads((full_run / "results.json").read_text())
    assert results["memorization_did"]["primary_metric"] == "suffix_logprob"
    table = T.probe_table(results)
    assert table.title == "Seen probes the suspect became most likely to reproduce"
    probes = {p["id"]: p for p in results["items"]["probes"]}
    gains = [float(row[4]) for row in table.rows]
    assert len(table.rows) == 8 and gains == sorted(gains, reverse=True)  # top_items, largest gain first
    best = max((p for p in probes.values() if p["probe_set"] == "seen"),
               key=lambda p: p["logprob_sus"] - p["logprob_clean"])
    assert table.rows[0][0] == best["id"]
    unseen = [p["logprob_sus"] - p["logprob_clean"] for p in probes.values() if p["probe_set"] == "unseen"]
    assert f"is {sum(unseen) / len(unseen):+.2f}" in table.note
    exact = {**results, "memorization_did": {**results["memorization_did"], "primary_metric": "exact_match"}}
    assert T.probe_table(exact).title == "Seen probes reproduced verbatim by the suspect only"
