"""Writing a run's reports: ``report.md``, ``report.html``, ``report.json`` and ``plots/*.png``.

Each file is rendered from ``results.json`` by its own module (:mod:`~contaudit.report.markdown`,
:mod:`~contaudit.report.html`, :mod:`~contaudit.report.summary`, :mod:`~contaudit.report.plots`)
and written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contaudit.analysis.results import load_results, results_path
from contaudit.analysis.verdict import LABELS
from contaudit.errors import InputError
from contaudit.manifest import atomic_path, write_json_atomic, write_text_atomic
from contaudit.report.html import render_html
from contaudit.report.markdown import render_markdown
from contaudit.report.plots import render_all
from contaudit.report.summary import render_json


@dataclass
class ReportFiles:
    """The files :func:`write_report` wrote, the verdict and the protocol's SHA-256."""

    markdown: Path
    html: Path
    json: Path
    plots: list[Path]
    verdict: str
    protocol_sha256: str


def _check_verdict(results: dict, path: Path) -> None:
    """The verdict label the report is rendered around must be one the analysis writes."""
    verdict = results.get("verdict")
    if not isinstance(verdict, dict):
        raise InputError("key 'verdict' must be an object with a 'label'; rerun `contaudit analyze`", path=path)
    if verdict.get("label") not in LABELS:
        raise InputError(f"key 'verdict.label' is {verdict.get('label')!r}; expected one of {', '.join(LABELS)}",
                         path=path)


def write_report(run: str | Path) -> ReportFiles:
    """Render the reports of a run directory (which must hold ``results.json``)."""
    run = Path(run)
    results = load_results(run)
    _check_verdict(results, results_path(run))
    run = run if run.is_dir() else run.parent
    images = render_all(results)
    plot_paths = []
    for name, png in images.items():
        path = run / "plots" / f"{name}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        plot_paths.append(path)
    md = run / "report.md"
    write_text_atomic(md, render_markdown(results, plots={n: f"plots/{n}.png" for n in images}))
    page = run / "report.html"
    write_text_atomic(page, render_html(results, images))
    js = run / "report.json"
    write_json_atomic(js, render_json(results))
    return ReportFiles(md, page, js, plot_paths, results["verdict"]["label"], results["protocol"]["sha256"])

