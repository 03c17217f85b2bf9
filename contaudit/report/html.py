"""``report.html``: one self-contained file (inline CSS, plots as base64 PNG, no scripts)."""

from __future__ import annotations

import base64
import html

import contaudit.report.tables as T

LABEL_COLORS = {"CONTAMINATED": "#b42318", "SUSPECT": "#b54708", "NO_EVIDENCE": "#175cd3",
                "INVALID_DESIGN": "#475467", "INCONCLUSIVE": "#6941c6"}

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#101828;font:14px/1.5 -apple-system,"Segoe UI",Roboto,"DejaVu Sans",
 "Liberation Sans",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 28px 48px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid #e4e7ec}
h3{font-size:14px;margin:18px 0 6px;color:#344054}
.sub{color:#667085;margin:0 0 18px;font-size:13px}
.verdict{border-radius:10px;padding:18px 22px;color:#fff;margin:0 0 16px}
.verdict .label{font-size:26px;font-weight:800;letter-spacing:.5px}
.verdict .what{font-size:15px;opacity:.95;margin-left:10px}
.verdict ul{margin:10px 0 0;padding-left:20px}
.verdict li{margin:3px 0}
.card{background:#fff;border:1px solid #e4e7ec;border-radius:10px;padding:14px 18px;margin:0 0 14px}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:13px}
.kv dt{color:#667085}.kv dd{margin:0;word-break:break-all}
code,.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th{background:#f2f4f7;color:#344054;text-align:left;font-weight:600;padding:6px 9px;border-bottom:1px solid #e4e7ec}
td{padding:5px 9px;border-bottom:1px solid #f2f4f7;vertical-align:top}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
tr.row-hit td{background:#fef3f2}
tr.row-fail td{background:#fef3f2}
td{white-space:nowrap}
td.wrap,td:last-child{white-space:normal}
td.lines{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:11.5px;color:#344054}
.badge{display:inline-block;border-radius:9px;padding:0 8px;font-size:12px;font-weight:600}
.pass{background:#ecfdf3;color:#027a48}.FAIL{background:#fef3f2;color:#b42318}.na{background:#f2f4f7;color:#667085}
.note{color:#667085;font-size:12px;margin:6px 0 0}
.warn{background:#fffaeb;border:1px solid #fedf89;border-radius:8px;padding:8px 14px;margin:0 0 14px}
figure{margin:0 0 14px;background:#fff;border:1px solid #e4e7ec;border-radius:10px;padding:10px}
figure img{width:100%;height:auto;display:block}
figcaption{color:#667085;font-size:12px;margin-top:4px}
.scroll{overflow-x:auto}
.mde{margin:8px 0 0;font-size:13px;color:#344054}
footer{color:#98a2b3;font-size:12px;margin-top:30px}
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def cell_html(value) -> str:
    """A table cell's text, escaped; a :class:`~contaudit.report.tables.Hover` shows its full text on hover."""
    if isinstance(value, T.Hover):
        return f'<span title="{_e(value.full)}">{_e(value)}</span>'
    return _e(value)


def table(t: T.Table) -> str:
    head = "".join(f'<th class="{"r" if a == "r" else ""}">{_e(h)}</th>' for h, a in zip(t.headers, t.align))
    body = []
    for row, mark in zip(t.rows, t.marks):
        cells = []
        for c, a, h in zip(row, t.align, t.headers):
            if h == "Result":
                cls = {"pass": "pass", "FAIL": "FAIL"}.get(c, "na")
                cells.append(f'<td><span class="badge {cls}">{_e(c)}</span></td>')
            elif isinstance(c, list):
                cells.append('<td class="lines">' + "<br>".join(cell_html(x) for x in c) + "</td>")
            else:
                cells.append(f'<td class="{ {"r": "r", "w": "wrap"}.get(a, "")}">{cell_html(c)}</td>')
        body.append(f'<tr class="row-{mark}">' + "".join(cells) + "</tr>")
    if not t.rows:
        body.append(f'<tr><td colspan="{len(t.headers)}" class="note">none</td></tr>')
    note = f'<p class="note">{_e(t.note)}</p>' if t.note else ""
    return (f'<h3>{_e(t.title)}</h3><div class="card scroll" style="padding:0"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{note}')


def render_html(results: dict, images: dict[str, bytes]) -> str:
    """The report as one HTML document with ``images`` (PNG bytes by figure name) embedded."""
    from contaudit.report.plots import FIGURES

    v = results["verdict"]
    color = LABEL_COLORS[v["label"]]
    name = results["protocol"].get("name") or "audit"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in v["reasons"])
    mde = T.mde_text(results)
    mde_html = f'<p class="mde">{_e(mde)}</p>' if mde and v["label"] != "NO_EVIDENCE" else ""
    warnings = "".join(f"<li>{_e(w)}</li>" for w in results.get("warnings") or [])
    kv = "".join(f"<dt>{_e(k)}</dt><dd>{'<code>' + _e(val) + '</code>' if 'SHA' in k else _e(val)}</dd>"
                 for k, val in T.protocol_lines(results))
    figs = []
    for key, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        figs.append(f'<figure><img alt="{_e(FIGURES[key][1])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_e(FIGURES[key][1])}</figcaption></figure>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>contaudit: {_e(v['label'])} — {_e(name)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Contamination audit: {_e(name)}</h1>",
        f'<p class="sub">contaudit {_e(results["contaudit_version"])} · results schema {_e(results["schema_version"])}'
        f" · {_e(results['created'])}</p>",
        f'<section class="verdict" style="background:{color}"><span class="label">{_e(v["label"])}</span>'
        f'<span class="what">{_e(T.label_text(results))}</span><ul>{reasons}</ul></section>',
        f'<div class="card"><dl class="kv">{kv}</dl>{mde_html}</div>',
    ]
    if warnings:
        parts.append(f'<div class="warn"><strong>Warnings</strong><ul>{warnings}</ul></div>')
    parts.append("<h2>Results</h2>")
    if v["tests"]:
        parts.append(table(T.primary_table(results)))
    if "estimates" in images:
        parts.append(figs[list(images).index("estimates")])
    inflation = T.inflation_table(results)
    parts += [table(T.checks_table(results)), table(T.supporting_table(results))]
    parts += [table(inflation)] if inflation is not None else []
    parts.append(table(T.data_table(results)))
    parts.append("<h2>Plots</h2>")
    parts += [f for key, f in zip(images, figs) if key != "estimates"]
    parts.append("<h2>Items</h2>")
    parts.append(table(T.suspicious_items_table(results)))
    paraphrased = T.paraphrased_table(results)
    parts += [table(paraphrased)] if paraphrased is not None else []
    probes = T.probe_table(results)
    if probes is not None:
        parts.append(table(probes))
    parts.append(f"<footer>Written by <code>contaudit report</code> from results.json. Protocol SHA-256 "
                 f"<code>{_e(results['protocol']['sha256'])}</code>.</footer></main></body></html>")
    return "\n".join(parts) + "\n"
