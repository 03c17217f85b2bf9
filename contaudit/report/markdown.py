"""``report.md``: the report as Markdown that also reads well in a terminal.

Tables are padded to aligned columns (GitHub renders them; ``cat`` shows them
straight), lines stay short, and plots are linked (``plots/*.png``) at the end.
"""

from __future__ import annotations

import textwrap
import unicodedata

import contaudit.report.tables as T

WRAP = 100


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _cell(s: str | list[str]) -> str:
    if isinstance(s, list):  # several lines: the first, and how many more (report.html lists them all)
        s = s[0] + (f" (+{len(s) - 1} more)" if len(s) > 1 else "") if s else ""
    return s.replace("|", "\\|").replace("\n", " ")


def table(t: T.Table) -> str:
    """An aligned Markdown table with its title and note."""
    rows = [[_cell(c) for c in row] for row in t.rows]
    headers = [_cell(h) for h in t.headers]
    widths = [max([_width(h)] + [_width(r[k]) for r in rows]) for k, h in enumerate(headers)]

    def line(cells):
        out = []
        for c, w, a in zip(cells, widths, t.align):
            pad = " " * (w - _width(c))
            out.append(pad + c if a == "r" else c + pad)
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, t.align)) + "|"
    parts = [f"### {t.title}", "", line(headers), rule] + [line(r) for r in rows]
    if not rows:
        parts.append("(none)")
    if t.note:
        parts += ["", wrap(t.note)]
    return "\n".join(parts)


def bullets(t: T.Table) -> str:
    """A table whose last column is prose, as a wrapped list: ``- [state] name: detail``."""
    parts = [f"### {t.title}", ""]
    for name, state, detail in t.rows:
        parts.append(wrap(f"{name}: {detail}", f"- [{state}] "))
    return "\n".join(parts)


def plain(text) -> str:
    """User text (a protocol's or suite's name, description) as inline Markdown: one line, and no
    character that could start a heading or end a table cell (a newline could forge ``# Gate: PASS``)."""
    return " ".join(str(text).split()).replace("#", "\\#").replace("|", "\\|")


def wrap(text: str, prefix: str = "") -> str:
    """``text`` wrapped at ``WRAP`` columns, the first line after ``prefix`` and the rest indented under it."""
    return textwrap.fill(text, WRAP, initial_indent=prefix, subsequent_indent=" " * len(prefix))


def render_markdown(results: dict, *, plots: dict[str, str] | None = None) -> str:
    """The report as Markdown; ``plots`` maps figure names to relative image paths to link."""
    from contaudit.report.plots import FIGURES

    v = results["verdict"]
    out = [f"# Contamination audit: {plain(results['protocol'].get('name') or 'audit')}", ""]
    out += [wrap(f"**Verdict: {v['label']}** — {T.label_text(results)}"), ""]
    out += [wrap(r, "- ") for r in v["reasons"]]
    mde = T.mde_text(results)
    if mde and v["label"] != "NO_EVIDENCE":
        out += ["", wrap(mde)]
    if results.get("warnings"):
        out += ["", "**Warnings**", ""] + [wrap(w, "- ") for w in results["warnings"]]
    out += ["", "| | |", "|---|---|"] + [f"| {k} | `{val}` |" if "SHA" in k else f"| {k} | {plain(val)} |"
                                           for k, val in T.protocol_lines(results)]
    out += ["", "## Results", ""]
    if v["tests"]:
        out += [table(T.primary_table(results)), ""]
    out += [bullets(T.checks_table(results)), ""]
    out += [table(T.supporting_table(results)), ""]
    inflation = T.inflation_table(results)
    if inflation is not None:
        out += [table(inflation), ""]
    out += [table(T.data_table(results)), ""]
    out += ["## Items", "", table(T.suspicious_items_table(results)), ""]
    paraphrased = T.paraphrased_table(results)
    if paraphrased is not None:
        out += [table(paraphrased), ""]
    probes = T.probe_table(results)
    if probes is not None:
        out += [table(probes), ""]
    if plots:
        out += ["## Plots", ""]
        for name, rel in plots.items():
            out += [f"![{FIGURES[name][1]}]({rel})", ""]
    out += ["---", wrap("Written by `contaudit report` from results.json; report.html has the same content "
                        "with the plots embedded.")]
    return "\n".join(out).rstrip() + "\n"
