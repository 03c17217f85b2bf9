"""Audit the temporal pool: null audits (a clean model as "suspect") and suspects with k copies.

Reads the scores ``train_pool.py`` wrote (``RUN/scores/<model>/{test,shadow,probes}.jsonl``)
and runs ``contaudit.analysis.analyze`` on them, as ``contaudit audit`` would:

* **null audits**: the suspect is a clean model and its clean models are ``--references``
  others. With at least ``nulls x (references + 1)`` clean models in the pool, every null
  audit has its own (clean-s0 vs s1-s5, s6 vs s7-s11, ...): independent nulls. With
  fewer, the suspect is ``clean-s{i}`` and its references are drawn at random (seeded
  per audit) from the rest of the pool, so references recur across audits;
* **suspect audits**: ``k{k}-s{j}`` against clean models drawn the same way, never the
  clean model of its own seed (which saw the same filler subset);
* for comparison, each null and suspect audit again with one clean model and the item
  permutation test, once as the date split it is (INCONCLUSIVE since issue 22) and once
  as if it were a random split (what the tool did before: no cap).

Writes ``RUN/audits.json`` and ``RUN/audits.md`` (rates with Clopper-Pearson intervals)
and a plot. Run: ``python examples/temporal/audit_pool.py --run runs/temporal``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from contaudit.analysis import analyze
from contaudit.analysis.inputs import ReferenceScores
from contaudit.calibrate import clopper_pearson
from contaudit.protocol import AnalysisSettings

LABELS = ("NO_EVIDENCE", "SUSPECT", "CONTAMINATED", "INCONCLUSIVE", "INVALID_DESIGN")


def files(run: Path, name: str) -> dict[str, Path]:
    d = run / "scores" / name
    return {s: d / f"{s}.jsonl" for s in ("test", "shadow", "probes")}


def audit(run: Path, suspect: str, clean: list[str], settings: AnalysisSettings, origin: str) -> dict:
    s, c = files(run, suspect), files(run, clean[0])
    refs = [ReferenceScores(**files(run, r)) for r in clean[1:]]
    results = analyze(s["test"], c["test"], s["shadow"], c["shadow"], suspect_probes=s["probes"],
                      clean_probes=c["probes"], probes=run / "probes.jsonl", references=refs,
                      shadow_origin=origin, protocol=settings)
    mem = (results["memorization_did"] or {}).get(settings.primary_metric) or {}
    ppl = results["perplexity_did"] or {}
    return {"suspect": suspect, "clean": clean, "shadow_origin": origin, "verdict": results["verdict"]["label"],
            "tests": {t["name"]: t["counts"] for t in results["verdict"]["tests"]},
            "perplexity_did": ppl.get("estimate"), "perplexity_p": ppl.get("pvalue"),
            "memorization_did": mem.get("estimate"), "memorization_p": mem.get("pvalue"),
            "failed_checks": [c["name"] for c in results["design_checks"] if c["passed"] is False]}


def rate(rows: list[dict], labels: tuple[str, ...]) -> str:
    hits = sum(r["verdict"] in labels for r in rows)
    low, high = clopper_pearson(hits, len(rows))
    return f"{hits}/{len(rows)} [{low:.2f}, {high:.2f}]"


def counts(rows: list[dict], test: str) -> str:
    """How often a primary test counted (Holm-significant, right direction, above the minimum effect),
    whatever the design checks said."""
    return f"{sum(bool(r['tests'].get(test)) for r in rows)}/{len(rows)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/temporal"))
    parser.add_argument("--references", type=int, default=5, help="clean models per panel audit")
    parser.add_argument("--nulls", type=int, default=20, help="null audits (clean-s0 .. clean-s{n-1} as suspect)")
    parser.add_argument("--permutations", type=int, default=2000, help="permutations of the one-clean-model tests")
    args = parser.parse_args()
    run = args.run
    names = sorted(p.name for p in (run / "scores").iterdir() if (p / "probes.jsonl").exists())
    seed_of = {n: int(n.rsplit("-s", 1)[1]) for n in names}
    clean = sorted((n for n in names if n.startswith("clean-s")), key=seed_of.get)
    suspects = [n for n in names if re.fullmatch(r"k\d+-s\d+", n)]
    group = args.references + 1
    # With enough clean models every null audit gets its own: no model is in two null audits.
    independent = len(clean) >= args.nulls * group
    null_groups = ([clean[i * group:(i + 1) * group] for i in range(args.nulls)] if independent else
                   [[c] for c in clean[: args.nulls]])
    panel = AnalysisSettings(references="siblings")  # seed siblings of the suspect's recipe
    single = AnalysisSettings(n_permutations=args.permutations, n_bootstrap=0)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for kind, pool in (("null", [g[0] for g in null_groups]), ("suspect", suspects)):
        for i, name in enumerate(pool):
            if kind == "null" and independent:
                refs = null_groups[i][1:]
            else:  # references drawn from the rest of the pool (never the clean model of the same seed)
                rng = np.random.default_rng(10_000 + 97 * i + (0 if kind == "null" else 5_000))
                others = [c for c in clean if c != name and seed_of[c] != seed_of[name]]
                refs = [str(x) for x in rng.choice(others, size=args.references, replace=False)]
            k = 0 if kind == "null" else int(name[1:].split("-")[0])
            for mode, clean_models, settings, origin in (
                    ("panel", refs, panel, "date_split"),
                    ("one clean model", refs[:1], single, "date_split"),
                    ("one clean model, as if random", refs[:1], single, "random_split")):
                row = audit(run, name, clean_models, settings, origin)
                rows.append({"kind": kind, "k": k, "mode": mode, **row})
            print(f"{kind} {name}: " + ", ".join(f"{r['mode']}: {r['verdict']}" for r in rows[-3:]), flush=True)
    out = {"references": args.references, "n_clean_models": len(clean), "independent_nulls": independent,
           "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1)}
    (run / "audits.json").write_text(json.dumps(out, indent=1))

    lines = ["| audits | test | k | n | CONTAMINATED | SUSPECT or higher | INCONCLUSIVE | INVALID_DESIGN "
             "| perplexity test counts | memorization test counts |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in ("panel", "one clean model", "one clean model, as if random"):
        for k in sorted({r["k"] for r in rows}):
            sel = [r for r in rows if r["mode"] == mode and r["k"] == k]
            lines.append(f"| {'null' if k == 0 else 'suspect'} | {mode} | {k} | {len(sel)} | "
                         f"{rate(sel, ('CONTAMINATED',))} | {rate(sel, ('SUSPECT', 'CONTAMINATED'))} | "
                         f"{rate(sel, ('INCONCLUSIVE',))} | {rate(sel, ('INVALID_DESIGN',))} | "
                         f"{counts(sel, 'perplexity_did')} | "
                         f"{counts(sel, 'memorization_did')} |")
    table = "\n".join(lines)
    how = ("every null audit has its own models (independent nulls)" if independent else
           "null audits draw references from one pool (references recur across audits)")
    (run / "audits.md").write_text(f"# Temporal pool audits\n\n{table}\n\nBrackets: 95 % Clopper-Pearson; {how}.\n")
    print(table)
    plot(rows, run / "audits.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["k"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for mode, style in (("panel", "o-"), ("one clean model, as if random", "s--"), ("one clean model", "^:")):
        for labels, name in ((("CONTAMINATED",), "CONTAMINATED"), (("SUSPECT", "CONTAMINATED"), "SUSPECT+")):
            if mode == "one clean model" and name == "CONTAMINATED":
                continue  # capped at SUSPECT by design
            ys = [np.mean([r["verdict"] in labels for r in rows if r["mode"] == mode and r["k"] == k]) for k in ks]
            ax.plot([k if k else 0.5 for k in ks], ys, style, label=f"{mode}: {name}", alpha=0.85)
    ax.set_xscale("log", base=2)
    ax.set_xticks([k if k else 0.5 for k in ks], [str(k) for k in ks])
    ax.axhline(0.05, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("copies of each test item injected (k; 0 = null audits)")
    ax.set_ylabel("share of audits")
    ax.set_title("Debian changelogs: 2005-2014 test vs 2022+ shadow", fontsize=10)
    ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
