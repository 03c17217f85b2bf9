"""``contaudit report``: ``report.md``, a self-contained ``report.html`` and ``report.json``.

Everything is rendered from ``RUN_DIR/results.json`` alone (``contaudit analyze``
copies the per-item data and corpus locations it needs into it), so a report can be
regenerated anywhere. Plots are also written as ``RUN_DIR/plots/*.png`` for the
Markdown to link.

Example::

    from contaudit.report import write_report
    files = write_report("runs/audit")
    print(files.html, files.protocol_sha256)
"""

from contaudit.report.html import render_html
from contaudit.report.markdown import render_markdown
from contaudit.report.summary import render_json
from contaudit.report.write import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report", "render_html", "render_markdown", "render_json"]
