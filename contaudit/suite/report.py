"""The suite report: one row per benchmark and the gate, rendered from ``RUN/suite.json``.

``RUN/report.md``, a self-contained ``RUN/report.html`` (linking each benchmark's own
``report.html``) and ``RUN/report.json`` (the suite results without the run details),
all rendered from ``RUN/suite.json`` alone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import contaudit.report.tables as T
from contaudit.statistics import format_p
from contaudit.analysis.verdict import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_INVALID, EXIT_PASS, EXIT_STATUS
from contaudit.manifest import write_json_atomic, write_text_atomic
from contaudit.report.html import CSS, LABEL_COLORS, cell_html
from contaudit.report.markdown import table as md_table
from contaudit.report.markdown import plain, wrap
from contaudit.suite.results import load_suite_results

# The gate's columns come first: they are the point of the table, and must show on a laptop screen.
HEADERS = ["Benchmark", "Verdict", "Gate", "Gate p (adjusted)", "Perplexity DiD [CI] (Holm p)",
           "Memorization DiD [CI] (Holm p)", "Test items seen in corpus",
           "Most found items (occurrences, first location)"]
# The gate's banner: the exit code's name (EXIT_STATUS) and, for the undecided codes, why.
_WHY = {EXIT_INVALID: "a benchmark's design cannot support a verdict",
        EXIT_INCONCLUSIVE: "a benchmark's design cannot hold its error rate"}
GATE_TEXT = {code: f"{name} ({_WHY[code]})" if code in _WHY else name for code, name in EXIT_STATUS.items()}
GATE_COLORS = {EXIT_PASS: "#027a48", EXIT_FAIL: LABEL_COLORS["CONTAMINATED"],
               EXIT_INVALID: LABEL_COLORS["INVALID_DESIGN"], EXIT_INCONCLUSIVE: LABEL_COLORS["INCONCLUSIVE"]}


@dataclass
class SuiteReportFiles:
    """The files :func:`write_suite_report` wrote, and the gate's exit code."""

    markdown: Path
    html: Path
    json: Path
    exit_code: int


def _did(cell: dict | None) -> str:
    if cell is None:
        return "not run"
    return (f"{T.fmt(cell['estimate'], sign=True)} {T.fmt_ci(cell['confidence_interval'])} "
            f"({format_p(cell['pvalue_holm'])})")


def _seen(corpus: dict) -> str:
    if not corpus.get("available"):
        return "no index"
    share = corpus.get("share_seen")
    paraphrased = corpus.get("n_paraphrased")
    return (f"{corpus['n_seen']}/{corpus['n_test']}" + (f" ({share:.0%})" if share is not None else "")
            + (f" + {paraphrased} paraphrased" if paraphrased else ""))


def corpus_root(results: dict) -> str | None:
    """The folder every corpus location in the table lies under (the table shows paths relative to it)."""
    return T.common_folder([item["location"][0] for row in results["benchmarks"] for item in row["top_items"]
                            if item.get("location")])


def _items(row: dict, root: str | None) -> list[str]:
    out = []
    for item in row["top_items"]:
        where = T.location_text(item["location"], root) if item.get("location") else ""
        text = f"{item['id']} ({item['occurrences']}x{', ' + where if where else ''})"
        out.append(T.Hover(text, text.replace(where, where.full)) if isinstance(where, T.Hover) else text)
    return out or ["—"]


def suite_table(results: dict) -> T.Table:
    """The suite table: one row per benchmark (cells formatted once for both renderers)."""
    gates = {b["name"]: b for b in results["gate"]["benchmarks"]}
    root = corpus_root(results)
    rows, marks = [], []
    for row in results["benchmarks"]:
        g = gates[row["name"]]
        first = _did(row["perplexity_did"])
        second = _did(row["memorization_did"]) if row["item_order"] is None else f"order test: {_did(row['item_order'])}"
        p = "—" if g["gate_pvalue"] is None else f"{format_p(g['gate_pvalue'])} ({format_p(g['gate_pvalue_adjusted'])})"
        gate = "FAIL" if g["fails"] else "pass" if g["gate_pvalue"] is not None else g["verdict"].lower()
        rows.append([row["name"], row["verdict"], gate, p, first, second, _seen(row["corpus"]), _items(row, root)])
        marks.append("fail" if g["fails"] else "")
    note = results["gate"]["rule"] + (f" Corpus locations are relative to {root}." if root else "")
    return T.Table("Benchmarks", HEADERS, rows, align="llrlllll", marks=marks, note=note)


def render_suite_markdown(results: dict) -> str:
    """``report.md`` of a suite run: the gate, the table, each benchmark's verdict and the run."""
    gate = results["gate"]
    suite = results["suite"]
    out = [f"# Contamination screen: {plain(suite['name'])}", ""]
    out += [wrap(f"**Gate: {GATE_TEXT[gate['exit_code']]}** (exit code {gate['exit_code']}) at "
                 f"{gate['fail_on']}, correction {gate['correction']}, alpha {gate['alpha']:g}."), ""]
    if suite.get("description"):
        out += [wrap(plain(suite["description"])), ""]
    out += [md_table(suite_table(results)), ""]
    out += ["## Each benchmark's verdict", ""]
    out += [wrap(f"[{row['name']}]({row['report']}): {row['verdict']} — {row['reason']}{_inflation_text(row)}", "- ")
            for row in results["benchmarks"]]
    out += ["", "## The run", ""] + [f"- {line}" for line in _run_lines(results)]
    out += ["", "---", wrap("Written by `contaudit screen` from suite.json; each benchmark's full report is "
                            "linked above.")]
    return "\n".join(out).rstrip() + "\n"


def _inflation_text(row: dict) -> str:
    """`` Score inflation (pass@1): +0.120 [...] ...`` for a benchmark with outcomes, else empty."""
    inf = row.get("inflation")
    if not inf:
        return ""
    return (f" Score inflation ({inf['metric']}): {T.fixed(inf['estimate'], sign=True)} "
            f"{T.fmt_ci(inf['confidence_interval'])}, one-sided {format_p(inf['pvalue'], named=True)}; suspect's "
            f"test score {T.fixed(inf['suspect_test_score'])}, without the leak {T.fixed(inf['clean_score'])}.")


def _run_lines(results: dict) -> list[str]:
    run = results["run"]
    index = run.get("index") or {}
    lines = [f"Suite file: {results['suite']['source']} (SHA-256 {results['suite']['sha256']})"]
    if index.get("corpus_passes"):
        lines.append(f"Corpus: {index['corpus_bytes'] / 1e6:.1f} MB scanned once for {len(index['built'])} "
                     f"benchmarks in {index['seconds']:.1f} s" + (f"; {len(index['reused'])} indexes reused"
                                                                   if index.get("reused") else ""))
    elif "reused" in index:
        lines.append("Corpus: not scanned (every benchmark's index was reused)")
    elif "prebuilt" in index:
        lines.append("Corpus: prebuilt indexes")
    loads = run.get("model_loads") or {}
    if loads:
        lines.append("Models loaded: " + ", ".join(f"{role} {n}x" for role, n in loads.items()))
    seconds = run.get("seconds") or {}
    if seconds:
        lines.append("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    return lines


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def render_suite_html(results: dict) -> str:
    """``report.html`` of a suite run: the same as :func:`render_suite_markdown`, one self-contained page."""
    gate = results["gate"]
    suite = results["suite"]
    t = suite_table(results)
    reports = {row["name"]: row["report"] for row in results["benchmarks"]}
    head = "".join(f"<th>{_e(h)}</th>" for h in t.headers)
    body = []
    for row, mark in zip(t.rows, t.marks):
        name, label, gate_cell, *rest = row
        cls = {"FAIL": "FAIL", "pass": "pass"}.get(gate_cell, "na")
        cells = [f'<td><a href="{_e(reports[name])}">{_e(name)}</a></td>',
                 f'<td><span class="badge" style="background:{LABEL_COLORS[label]};color:#fff">{_e(label)}</span></td>',
                 f'<td><span class="badge {cls}">{_e(gate_cell)}</span></td>']
        for c in rest:
            cells.append('<td class="lines">' + "<br>".join(cell_html(x) for x in c) + "</td>" if isinstance(c, list)
                         else f"<td>{cell_html(c)}</td>")
        body.append(f'<tr class="row-{mark}">' + "".join(cells) + "</tr>")
    color = GATE_COLORS[gate["exit_code"]]
    verdicts = "".join(f'<li><a href="{_e(row["report"])}">{_e(row["name"])}</a>: {_e(row["verdict"])} — '
                       f'{_e(row["reason"])}{_e(_inflation_text(row))}</li>' for row in results["benchmarks"])
    run = "".join(f"<li>{_e(line)}</li>" for line in _run_lines(results))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>contaudit screen: {_e(GATE_TEXT[gate['exit_code']])} — {_e(suite['name'])}</title>"
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>Contamination screen: {_e(suite['name'])}</h1>",
        f'<p class="sub">contaudit {_e(results["contaudit_version"])} · {_e(results["created"])}</p>',
        f'<section class="verdict" style="background:{color}"><span class="label">'
        f'{_e(GATE_TEXT[gate["exit_code"]])}</span><span class="what">exit code {gate["exit_code"]} at '
        f'{_e(gate["fail_on"])}, correction {_e(gate["correction"])}, alpha {gate["alpha"]:g}</span>'
        f'<ul><li>{_e(gate["rule"])}</li></ul></section>',
        f'<h3>{_e(t.title)}</h3><div class="card scroll" style="padding:0"><table><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div>',
        f"<h2>Each benchmark's verdict</h2><ul>{verdicts}</ul>",
        f"<h2>The run</h2><ul>{run}</ul>",
        "<footer>Written by <code>contaudit screen</code> from suite.json.</footer></main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_suite_report(run: str | Path) -> SuiteReportFiles:
    """Render ``report.md``, ``report.html`` and ``report.json`` of a suite's run directory."""
    run = Path(run)
    results = load_suite_results(run)
    md, page, js = run / "report.md", run / "report.html", run / "report.json"
    write_text_atomic(md, render_suite_markdown(results))
    write_text_atomic(page, render_suite_html(results))
    write_json_atomic(js, {k: v for k, v in results.items() if k != "run"})
    return SuiteReportFiles(md, page, js, results["gate"]["exit_code"])
