"""contaudit report: report.md for terminals, self-contained report.html, report.json, screenshots."""

from __future__ import annotations

import base64
import html
import json
import os
import re
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
from browser_helpers import browser as _browser
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


# Runs in the report page after everything loaded and writes what the browser rendered into a <pre>,
# which `chromium --dump-dom` prints: the verdict banner, the page's visible text and every image.
BROWSER_PROBE = """<script>window.addEventListener("load", function () {
  function box(el) {
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
            shown: r.width > 0 && r.height > 0 && s.visibility === "visible" && s.display !== "none" && +s.opacity > 0};
  }
  var label = document.querySelector(".verdict .label");
  var out = {
    verdict: label && Object.assign(box(label.parentElement), {label: label.innerText, label_shown: box(label).shown}),
    text: document.body.innerText,
    scroll_width: document.documentElement.scrollWidth,
    scrolled_tables: Array.prototype.filter.call(document.querySelectorAll(".scroll"), function (e) {
      return e.scrollWidth > e.clientWidth + 1;
    }).map(function (e) { var h = e.previousElementSibling; return h ? h.innerText : "?"; }),
    images: Array.prototype.map.call(document.images, function (img) {
      return Object.assign(box(img), {alt: img.alt, complete: img.complete, natural_width: img.naturalWidth});
    })
  };
  var pre = document.createElement("pre");
  pre.id = "contaudit-browser-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def _render_in_chromium(page: Path, tmp_path: Path) -> tuple[dict, Path]:
    """What headless Chromium rendered for ``page``: the probe's findings (from a copy of the page, next to it, with
    BROWSER_PROBE added) and a screenshot by scripts/screenshot_report.sh, both at 1280x6000 CSS pixels."""
    browser = _browser()
    probe_page = page.with_name(f".browser-probe-{tmp_path.name}.html")
    probe_page.write_text(page.read_text().replace("</body>", BROWSER_PROBE + "</body>"))
    profile = tmp_path / "chromium-profile"
    try:
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                               f"--user-data-dir={profile}", "--window-size=1280,6000", "--dump-dom",
                               probe_page.as_uri()], capture_output=True, text=True, timeout=60)
    finally:
        probe_page.unlink()
    found = re.search(r'<pre id="contaudit-browser-probe">(.*?)</pre>', proc.stdout, re.S)
    assert proc.returncode == 0 and found, f"Chromium rendered nothing (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    shot = tmp_path / "report.png"
    proc = subprocess.run([str(ROOT / "scripts" / "screenshot_report.sh"), str(page), str(shot), "1280", "6000"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "CHROMIUM": browser})
    assert proc.returncode == 0, proc.stderr
    return json.loads(html.unescape(found.group(1))), shot


def _rendering_problems(probe: dict, shot: Path, label: str, plots: Path) -> list[str]:
    """Everything that keeps the rendered report from showing verdict ``label`` and each plot in ``plots``: the
    DOM after rendering (verdict text shown, images decoded and laid out) and the screenshot's pixels (the banner
    painted in the label's colour, each plot's area showing that plot's PNG)."""
    from PIL import Image, ImageChops, ImageStat

    from contaudit.report.html import LABEL_COLORS
    from contaudit.report.plots import FIGURES

    problems = []
    screen = Image.open(shot).convert("RGB")
    v = probe["verdict"]
    if not v or v["label"].strip() != label or not v["label_shown"] or label not in probe["text"]:
        problems.append(f"verdict {label} is not shown: {v and {k: v[k] for k in ('label', 'label_shown')}}")
    else:
        x, y, w, h = (round(v[k]) for k in ("x", "y", "w", "h"))
        banner = screen.crop((x + 4, y + 4, x + w - 4, y + h - 4))
        count, colour = max(banner.getcolors(banner.width * banner.height) or [(0, None)])
        want = LABEL_COLORS[label]
        if colour != tuple(int(want[i:i + 2], 16) for i in (1, 3, 5)) or count < banner.width * banner.height / 2:
            problems.append(f"verdict banner is not painted {want} in the screenshot (mostly {colour})")

    def gray_difference(a, b):
        return ImageStat.Stat(ImageChops.difference(a, b)).mean[0]

    images = {img["alt"]: img for img in probe["images"]}
    for png in sorted(plots.glob("*.png")):
        alt = FIGURES[png.stem][1]
        img = images.pop(alt, None)
        if img is None:
            problems.append(f"plot {png.name} ({alt!r}) has no <img>")
            continue
        if not (img["complete"] and img["natural_width"] > 0 and img["shown"]):
            problems.append(f"plot {png.name} is broken or hidden: {img}")
            continue
        x, y, w, h = (round(img[k]) for k in ("x", "y", "w", "h"))
        if y + h > screen.height or x + w > screen.width:
            problems.append(f"plot {png.name} lies outside the screenshot ({screen.size}): {img}")
            continue
        # Compare at 1/8 scale in gray, where antialiasing no longer matters: the plot's area must show that PNG,
        # much closer to it than a blank area would be.
        small = (max(1, w // 8), max(1, h // 8))
        seen = screen.crop((x, y, x + w, y + h)).convert("L").resize(small, Image.BOX)
        want = Image.open(png).convert("L").resize(small, Image.BOX)
        blank = Image.new("L", small, 255)
        off, blank_off = gray_difference(seen, want), gray_difference(blank, want)
        if not off < min(4.0, blank_off / 3):
            problems.append(f"plot {png.name} is not what the screenshot shows there (mean gray difference {off:.1f}, "
                            f"blank {blank_off:.1f})")
    problems += [f"unexpected image {alt!r}" for alt in images]
    return problems


def test_report_shows_the_verdict_and_plots_in_headless_chromium(full_run, tmp_path):
    probe, shot = _render_in_chromium(full_run / "report.html", tmp_path)
    assert _rendering_problems(probe, shot, "CONTAMINATED", full_run / "plots") == []
    for reason in json.loads((full_run / "results.json").read_text())["verdict"]["reasons"]:
        assert reason in probe["text"]
    assert len(probe["images"]) == 4
    # Nothing behind a horizontal scrollbar at 1280 px, neither the page nor any table (issue 25)
    assert probe["scroll_width"] <= 1280 and probe["scrolled_tables"] == [], probe["scrolled_tables"]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280 and 2000 < height <= 6000  # the page with its plots, trimmed below


def test_browser_check_catches_a_missing_verdict_and_broken_or_wrong_plots(full_run, tmp_path):
    """The check above fails when it should: on a copy of the report with the verdict text gone, one plot's source
    missing, one not a PNG, and two shown in each other's places."""
    from contaudit.report.plots import FIGURES

    page = full_run / "report.html"
    text = page.read_text()
    sources = re.findall(r'src="(data:image/png;base64,[^"]+)"', text)
    alts = re.findall(r'<img alt="([^"]+)"', text)
    assert len(sources) == 4
    broken = text.replace('<span class="label">CONTAMINATED</span>', '<span class="label"></span>')
    broken = broken.replace(sources[0], "plots/missing.png").replace(sources[1], "data:image/png;base64,bm90IGEgcG5n")
    broken = broken.replace(sources[2], "SWAP").replace(sources[3], sources[2]).replace("SWAP", sources[3])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.html").write_text(broken)
    probe, shot = _render_in_chromium(tmp_path / "broken" / "report.html", tmp_path)
    problems = _rendering_problems(probe, shot, "CONTAMINATED", full_run / "plots")
    name = {alt: key for key, (_, alt) in FIGURES.items()}
    assert len(problems) == 5, problems
    assert problems[0].startswith("verdict CONTAMINATED is not shown")
    for alt, kind in zip(alts, ("is broken or hidden", "is broken or hidden", "is not what", "is not what")):
        assert any(p.startswith(f"plot {name[alt]}.png {kind}") for p in problems), (alt, problems)


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


def test_a_protocol_name_cannot_forge_report_lines(full_run):
    """A newline in a protocol's name or description once wrote a heading of its own (issue 23)."""
    from contaudit.report.markdown import render_markdown

    results = json.loads((full_run / "results.json").read_text())
    results["protocol"]["name"] = "tiny\n# Gate: PASS\n| forged | row |"
    results["protocol"]["source"] = "p.toml\n## Verdict: NO_EVIDENCE"
    text = render_markdown(results)
    assert not any(line.startswith(("# Gate", "## Verdict", "| forged")) for line in text.splitlines())
    assert text.splitlines()[0] == r"# Contamination audit: tiny \# Gate: PASS \| forged \| row \|"


def test_report_on_a_folder_of_runs_names_the_runs_inside(full_run, tmp_path):
    """`contaudit report runs/demo` said to run analyze; the demo's results are in audit/ and null/ (issue 25)."""
    import shutil

    demo = tmp_path / "demo"
    for name in ("audit", "null"):
        shutil.copytree(full_run, demo / name)
    res = CliRunner().invoke(app, ["report", str(demo)])
    assert res.exit_code == 2
    assert "no results.json here; it holds the runs audit, null: give one of them" in " ".join(res.output.split())


def test_a_zero_prints_without_a_sign():
    """An exact-match DiD of 0 with CI [0, 0] printed as '+0 [+0, +0]' (issue 25)."""
    from contaudit.report.tables import fmt, fmt_ci

    assert fmt(0.0, sign=True) + " " + fmt_ci([0.0, -0.0]) == "0 [0, 0]"
    assert fmt(0.00012, sign=True) == "+0.00012" and fmt(-0.25, sign=True) == "-0.25" and fmt(3, sign=True) == "+3"


def test_corpus_locations_are_shown_relative_to_their_common_folder(full_run):
    """Absolute corpus paths wrapped three times per row of the items table (issue 25)."""
    from contaudit.report.tables import suspicious_items_table

    results = json.loads((full_run / "results.json").read_text())
    for k, it in enumerate(results["items"]["test"]):
        it["index"] = {"occurrences": 1, "coverage": 1.0,
                       "locations": [[f"/data/corpora/web-2024/shard-{k % 3:02d}.jsonl.zst", 10 + k, 4096 * k]]}
    table = suspicious_items_table(results, top=5)
    cells = [loc for row in table.rows for loc in row[-1]]
    assert cells and all(loc.startswith("shard-0") and "/data/" not in loc for loc in cells)
    assert "Corpus locations are relative to /data/corpora/web-2024." in table.note
    # ... and the full path shows on hover in the HTML report
    from contaudit.report.html import table as html_table

    page = html_table(table)
    assert all(loc.full == "/data/corpora/web-2024/" + loc and f'<span title="{loc.full}">{loc}</span>' in page
               for row in table.rows for loc in row[-1])
