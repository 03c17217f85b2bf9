"""Audit the cross-family pool: suspects judged against clean models of other families (issue 28).

Reads ``RUN/pool.json`` and the scores ``train_families.py`` wrote, and runs
``contaudit.analysis.analyze`` on them as ``contaudit audit`` would, with
``references = "families"`` (per-byte units follow from the differing tokenizers):

* **independent null audits** (``--nulls``, default 20): the suspect is a clean model of
  one family, its references clean models of ``--references`` (5) *other* families; no
  model is in two null audits (greedy: each audit takes the families with the most unused
  clean models);
* **suspect audits**: every ``f{F}-k{K}-s{S}`` against one clean model of each of
  ``--references`` other families (never its own family), and again against one of every
  other family (7 references);
* **seed siblings**: each k = 4 suspect against 5 clean models of its own family with
  ``references = "siblings"`` (the design of ``examples/temporal``, on these models);
* **one clean model**: each null suspect against one clean sibling of its family, as the
  date split it is (INCONCLUSIVE since issue 22);
* **a real 5-benchmark suite**: the test and shadow items cut into 5 disjoint benchmarks;
  every null audit's suspect and references screened on all 5 (perplexity test; the gate
  at fail_on SUSPECT with Holm across the 5), so each null audit is one suite of clean
  benchmarks with shifted shadows.

Writes ``RUN/audits.json``, ``RUN/audits.md`` (rates with Clopper-Pearson intervals) and
``RUN/family_plane.png`` (the plane of one null and one k = 4 audit).
Run: ``python examples/families/audit_families.py --run runs/families``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from contaudit.analysis import analyze
from contaudit.analysis.inputs import ReferenceScores
from contaudit.suite import suite_gate
from contaudit.calibrate import clopper_pearson
from contaudit.manifest import write_jsonl_atomic
from contaudit.protocol import AnalysisSettings

FAMILIES = AnalysisSettings(references="families", n_bootstrap=0)
SIBLINGS = AnalysisSettings(references="siblings", n_bootstrap=0)
ONE_CLEAN = AnalysisSettings(n_permutations=2000, n_bootstrap=0)


def scored_models(run: Path) -> dict[str, dict]:
    pool = json.loads((run / "pool.json").read_text())
    return {m["name"]: m for m in pool["models"] if all(Path(p).exists() for p in m["scores"].values())}


def audit(models: dict, run: Path, suspect: str, clean: list[str], settings: AnalysisSettings,
          origin: str = "date_split", probes: bool = True) -> dict:
    s, c = models[suspect]["scores"], models[clean[0]]["scores"]
    refs = [ReferenceScores(models[r]["scores"]["test"], models[r]["scores"]["shadow"],
                            models[r]["scores"]["probes"] if probes else None) for r in clean[1:]]
    extra = dict(suspect_probes=s["probes"], clean_probes=c["probes"], probes=run / "probes.jsonl") if probes else {}
    results = analyze(s["test"], c["test"], s["shadow"], c["shadow"], references=refs, shadow_origin=origin,
                      protocol=settings, **extra)
    return summarize(results, suspect, clean, settings)


def summarize(results: dict, suspect: str, clean: list[str], settings: AnalysisSettings) -> dict:
    mem = (results["memorization_did"] or {}).get(settings.primary_metric) or {}
    ppl = results["perplexity_did"] or {}
    return {"suspect": suspect, "clean": clean, "verdict": results["verdict"]["label"],
            "tests": {t["name"]: t["counts"] for t in results["verdict"]["tests"]},
            "unit": (results.get("units") or {}).get("perplexity"),
            "perplexity_did": ppl.get("estimate"), "perplexity_p": ppl.get("pvalue"),
            "perplexity_sd_off": ppl.get("effect_in_reference_sd"),
            "perplexity_robust_to": ppl.get("robust_to_offset_sd"),
            "memorization_did": mem.get("estimate"), "memorization_p": mem.get("pvalue"),
            "memorization_sd_off": mem.get("effect_in_reference_sd"), "verdict_obj": results["verdict"],
            "warnings": results["warnings"]}


def null_groups(models: dict, n_nulls: int, n_refs: int) -> list[tuple[str, list[str]]]:
    """Independent null audits: (suspect, references of other families), no model twice."""
    free: dict[int, list[str]] = {}
    for name, m in sorted(models.items(), key=lambda kv: (kv[1]["family"], kv[1]["seed"])):
        if m["kind"] == "clean":
            free.setdefault(m["family"], []).append(name)
    groups = []
    for _ in range(n_nulls):
        order = sorted(free, key=lambda f: (-len(free[f]), f))
        if len(order) < n_refs + 1 or len(free[order[n_refs]]) == 0:
            break
        suspect_family, ref_families = order[0], order[1:n_refs + 1]
        groups.append((free[suspect_family].pop(0), [free[f].pop(0) for f in ref_families]))
    return groups


def other_family_refs(models: dict, suspect: str, n_refs: int, rng) -> list[str]:
    fam = models[suspect]["family"]
    families = sorted({m["family"] for m in models.values() if m["family"] != fam})
    chosen = rng.choice(families, size=min(n_refs, len(families)), replace=False)
    out = []
    for f in chosen:
        clean = sorted(n for n, m in models.items() if m["family"] == f and m["kind"] == "clean")
        out.append(clean[int(rng.integers(len(clean)))])
    return out


def subset(path: str, ids: set[str], out: Path) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    write_jsonl_atomic(out, [r for r in rows if str(r["id"]) in ids])
    manifest = Path(path).with_name(Path(path).name.replace(".jsonl", ".manifest.json"))
    if manifest.exists():
        shutil.copy(manifest, out.with_name(out.name.replace(".jsonl", ".manifest.json")))
    return str(out)


def suite_of_clean_benchmarks(models: dict, groups, k: int, tmp: Path) -> list[dict]:
    """Each null audit's models screened on k disjoint benchmarks cut from the test and shadow sets."""
    first = models[groups[0][0]]["scores"]
    ids = {s: sorted(json.loads(line)["id"] for line in Path(first[s]).read_text().splitlines() if line.strip())
           for s in ("test", "shadow")}
    rng = np.random.default_rng(20261207)
    parts = {s: np.array_split(rng.permutation(v), k) for s, v in ids.items()}
    out = []
    for suspect, refs in groups:
        verdicts = {}
        for b in range(k):
            keep = set(parts["test"][b]) | set(parts["shadow"][b])
            files = {}
            for name in [suspect, *refs]:
                d = tmp / f"bench{b}" / name
                d.mkdir(parents=True, exist_ok=True)
                files[name] = {s: subset(models[name]["scores"][s], keep, d / f"{s}.jsonl") for s in ("test", "shadow")}
            results = analyze(files[suspect]["test"], files[refs[0]]["test"], files[suspect]["shadow"],
                              files[refs[0]]["shadow"], references=[ReferenceScores(**files[r]) for r in refs[1:]],
                              shadow_origin="date_split", protocol=AnalysisSettings(references="families",
                                                                                    n_bootstrap=0, min_items=10))
            verdicts[f"bench{b}"] = results["verdict"]
        gate = suite_gate(verdicts, fail_on="SUSPECT", alpha=0.05)
        out.append({"suspect": suspect, "labels": {n: v["label"] for n, v in verdicts.items()},
                    "exit_code": gate.exit_code, "failed": [b.name for b in gate.benchmarks if b.fails]})
    return out


def rate(rows: list[dict], labels: tuple[str, ...]) -> str:
    hits = sum(r["verdict"] in labels for r in rows)
    low, high = clopper_pearson(hits, len(rows))
    return f"{hits}/{len(rows)} [{low:.2f}, {high:.2f}]" if rows else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/families"))
    parser.add_argument("--nulls", type=int, default=20)
    parser.add_argument("--references", type=int, default=5)
    parser.add_argument("--suite-size", type=int, default=5)
    args = parser.parse_args()
    models = scored_models(args.run)
    t0 = time.perf_counter()
    rows: list[dict] = []
    groups = null_groups(models, args.nulls, args.references)
    for suspect, refs in groups:
        rows.append({"kind": "null", "k": 0, "mode": f"families, R = {args.references}",
                     **audit(models, args.run, suspect, refs, FAMILIES)})
        sibling = next(n for n, m in sorted(models.items()) if m["family"] == models[suspect]["family"]
                       and m["kind"] == "clean" and n != suspect)
        rows.append({"kind": "null", "k": 0, "mode": "one clean model (sibling)",
                     **audit(models, args.run, suspect, [sibling], ONE_CLEAN)})
        print(f"null {suspect} vs {refs}: {rows[-2]['verdict']} (one clean: {rows[-1]['verdict']})", flush=True)
    rng = np.random.default_rng(28)
    suspects = sorted(n for n, m in models.items() if m["kind"] == "suspect")
    n_families = len({m["family"] for m in models.values()})
    for name in suspects:
        k = models[name]["k"]
        first = len(rows)
        for n_refs in (args.references, n_families - 1):
            refs = other_family_refs(models, name, n_refs, rng)
            rows.append({"kind": "suspect", "k": k, "mode": f"families, R = {len(refs)}",
                         **audit(models, args.run, name, refs, FAMILIES)})
        if k == 4:
            fam = models[name]["family"]
            seed = models[name]["seed"]
            siblings = sorted((n for n, m in models.items() if m["family"] == fam and m["kind"] == "clean"
                               and m["seed"] != seed), key=lambda n: models[n]["seed"])[:5]
            rows.append({"kind": "suspect", "k": k, "mode": "siblings, R = 5",
                         **audit(models, args.run, name, siblings, SIBLINGS)})
        print(f"suspect {name}: " + ", ".join(f"{r['mode']}: {r['verdict']}" for r in rows[first:]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        suites = suite_of_clean_benchmarks(models, groups, args.suite_size, Path(tmp))
    seconds = round(time.perf_counter() - t0, 1)
    for r in rows:
        r.pop("verdict_obj", None)
    (args.run / "audits.json").write_text(json.dumps({"rows": rows, "suites": suites, "seconds": seconds}, indent=1))

    lines = ["| audits | design | k | n | CONTAMINATED | SUSPECT or higher | INCONCLUSIVE | perplexity counts | "
             "memorization counts |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for k in sorted({r["k"] for r in rows if r["mode"] == mode}):
            sel = [r for r in rows if r["mode"] == mode and r["k"] == k]
            lines.append(f"| {'null' if k == 0 else 'suspect'} | {mode} | {k} | {len(sel)} | "
                         f"{rate(sel, ('CONTAMINATED',))} | {rate(sel, ('SUSPECT', 'CONTAMINATED'))} | "
                         f"{rate(sel, ('INCONCLUSIVE',))} | "
                         f"{sum(bool(r['tests'].get('perplexity_did')) for r in sel)}/{len(sel)} | "
                         f"{sum(bool(r['tests'].get('memorization_did')) for r in sel)}/{len(sel)} |")
    failed = sum(s["exit_code"] == 1 for s in suites)
    low, high = clopper_pearson(failed, len(suites))
    suite_line = (f"Suites of {args.suite_size} clean benchmarks (the null audits' models, the sets cut into "
                  f"{args.suite_size} disjoint benchmarks, perplexity test, gate at fail_on SUSPECT with Holm): "
                  f"{failed}/{len(suites)} fail the gate [{low:.2f}, {high:.2f}].")
    table = "\n".join(lines)
    (args.run / "audits.md").write_text(f"# Cross-family pool audits\n\n{table}\n\n{suite_line}\n\n"
                                        f"Brackets: 95 % Clopper-Pearson. {seconds} s.\n")
    print(table)
    print(suite_line)
    k4 = next((r for r in rows if r["kind"] == "suspect" and r["k"] == 4
               and r["mode"] == f"families, R = {args.references}"), None)
    null = next((r for r in rows if r["kind"] == "null" and r["mode"].startswith("families")), None)
    if null is not None and k4 is not None:
        plane(models, args.run, null, k4)


def plane(models: dict, run: Path, null_row: dict, suspect_row: dict) -> None:
    """The shadow/test plane (per byte, perplexity test) of one null audit and one k = 4 audit; titles give
    the audits' verdicts (both tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, (row, title) in zip(axes, ((null_row, "null: a clean model of another family"),
                                       (suspect_row, "suspect with every test item injected 4 times"))):
        suspect, refs = row["suspect"], row["clean"]
        res = analyze(models[suspect]["scores"]["test"], models[refs[0]]["scores"]["test"],
                      models[suspect]["scores"]["shadow"], models[refs[0]]["scores"]["shadow"],
                      references=[ReferenceScores(models[r]["scores"]["test"], models[r]["scores"]["shadow"])
                                  for r in refs[1:]], shadow_origin="date_split", protocol=FAMILIES)
        did = res["perplexity_did"]
        pts = np.array(did["reference_points"], dtype=float)
        xs, ys = did["suspect_point"]
        rel = did["relation"]
        grid = np.linspace(min(pts[:, 0].min(), xs) - 0.01, max(pts[:, 0].max(), xs) + 0.01, 50)
        line = rel["intercept"] + rel["slope"] * grid
        half = (did["confidence_interval"][1] - did["confidence_interval"][0]) / 2
        ax.fill_between(grid, line - half, line + half, color="#1570ef", alpha=0.15, label="95 % prediction band")
        ax.plot(grid, line, color="#1570ef", label=f"references' relation (R² {rel['r_squared']:.2f})")
        for (x, y), r in zip(pts, refs):
            ax.scatter([x], [y], color="#1570ef", s=28)
            ax.annotate(models[r]["family_name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.scatter([xs], [ys], marker="D", s=80, color="#b42318", zorder=3,
                   label=f"suspect {models[suspect]['family_name']}: {did['effect_in_reference_sd']:+.1f} SD, "
                         f"p = {did['pvalue']:.2g}")
        ax.set_xlabel("mean NLL on the shadow set (2022+ entries), nats/byte")
        ax.set_ylabel("mean NLL on the test set (2005-2014), nats/byte")
        ax.set_title(f"{title}: {row['verdict']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run / "family_plane.png")
    print(f"plot: {run / 'family_plane.png'}")


if __name__ == "__main__":
    main()
