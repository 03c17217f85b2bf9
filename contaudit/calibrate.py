"""``contaudit calibrate``: measure the audit's power and false-positive rate.

In the demo setting (stdlib corpus, HumanEval test/shadow split, a base model pretrained
on the corpus), probe models are fine-tuned with every test item injected ``k`` times,
for each ``k`` in a grid and each seed, and each is audited against one fixed clean
reference (``k = 0``, its own seed). At ``k = 0`` the "suspect" is itself clean, so the
share of CONTAMINATED verdicts there is the false-positive rate. All audits share one
index and probe set: the corpus with the test items present, i.e. the probes any
contaminated model would be tested on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from contaudit.errors import InputError
from contaudit.manifest import write_json_atomic, write_text_atomic

REFERENCE_SEED = 1000  # seed of the clean reference; probe-model seeds must differ from it


@dataclass
class CalibrationResult:
    """Detection rates per k, the false-positive rate, and where the files are."""

    out: Path
    runs: list[dict]  # one per (k, seed): verdict, p-values, effects
    detection: dict[int, float]  # share of CONTAMINATED verdicts per k
    false_positive_rate: float | None
    smallest_detected_k: int | None  # smallest k > 0 with detection >= power target
    plot: Path


def summarize(runs: list[dict], *, power: float = 0.8) -> tuple[dict[int, float], float | None, int | None]:
    """Detection rate per k, the false-positive rate at k = 0, and the smallest k with power >= ``power``."""
    detection = {}
    for k in sorted({r["k"] for r in runs}):
        verdicts = [r["verdict"] for r in runs if r["k"] == k]
        detection[k] = sum(v == "CONTAMINATED" for v in verdicts) / len(verdicts)
    fpr = detection.get(0)
    detected = [k for k, rate in detection.items() if k > 0 and rate >= power]
    return detection, fpr, (min(detected) if detected else None)


def plot_power_curve(detection: dict[int, float], n_seeds: int, path: Path) -> Path:
    """Detection rate against k (log2 axis), with the false-positive rate at k = 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(detection)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    pos = [k if k > 0 else 0.5 for k in ks]
    ax.plot(pos, [detection[k] for k in ks], marker="o", color="#1f5fa8")
    ax.axhline(0.8, color="#999", linestyle="--", linewidth=1)
    ax.text(pos[-1], 0.81, "power 0.8", ha="right", va="bottom", fontsize=8, color="#666")
    ax.set_xscale("log", base=2)
    ax.set_xticks(pos, [str(k) for k in ks])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("copies of each test item injected (k)")
    ax.set_ylabel("share CONTAMINATED")
    ax.set_title(f"Audit power by contamination level ({n_seeds} seeds per k)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _run_record(k: int, seed: int, results: dict) -> dict:
    record = {"k": k, "seed": seed, "verdict": results["verdict"]["label"]}
    mem = results.get("memorization_did") or {}
    primary = mem.get(mem.get("primary_metric") or "", {}) if mem else {}
    for name, test in (("perplexity", results.get("perplexity_did") or {}), ("memorization", primary or {})):
        record[f"{name}_did"] = test.get("estimate")
        record[f"{name}_p"] = test.get("pvalue")
    return record


def calibrate(out: str | Path = "runs/calibration", *, dups: tuple[int, ...] = (0, 1, 2, 4, 8, 16), seeds: int = 5,
              config=None, analysis_protocol: str | Path | None = None,
              log: Callable[[str], None] = print) -> CalibrationResult:
    """Fine-tune probe models over ``dups`` x ``seeds``, audit each, and summarize.

    ``analysis_protocol`` (optional) supplies the ``[analysis]`` and ``[probes]`` tables
    of the audits; models and sets are the demo's. Finished audits are reused.
    """
    from contaudit.audit import run_audit
    from contaudit.demo import prepare, write_protocol, write_suspect_corpus
    from contaudit.finetune import DemoTrainingConfig, finetune

    if not dups or any(k < 0 for k in dups):
        raise InputError(f"`dups` must be non-negative integers, got {dups}")
    if seeds < 1:
        raise InputError(f"`seeds` must be at least 1, got {seeds}")
    config = config or DemoTrainingConfig()
    out = Path(out)
    data = prepare(out, config, log=log)
    models = out / "models"
    extra = _protocol_tables(analysis_protocol)
    # One index for every audit: the corpus with the test items in it once.
    corpus_with_items = write_suspect_corpus(data["corpus"], data["test"], 1, out / "data" / "corpus-with-test.jsonl")

    def model(k: int, seed: int) -> Path:
        path = models / f"k{k}-seed{seed}"
        if not (path / "injection.json").exists():
            t0 = time.perf_counter()
            finetune(data["corpus"], path, base=data["base"], inject=data["test"], dup=k, overwrite=True,
                     config=replace(config.finetune, seed=seed, threads=config.threads))
            log(f"  trained {path.name} in {time.perf_counter() - t0:.0f} s")
        return path

    reference = model(0, REFERENCE_SEED)
    runs = []
    for k in dups:
        for seed in range(seeds):
            run_dir = out / "audits" / f"k{k}-seed{seed}"
            results_path = run_dir / "results.json"
            if not results_path.exists():
                suspect = model(k, seed)
                protocol = write_protocol(run_dir.with_suffix(".toml"), name=f"calibration k={k} seed={seed}",
                                          description="probe model vs clean reference", suspect=suspect,
                                          clean=reference, test=data["test"], shadow=data["shadow"],
                                          index=out / "index", corpus=corpus_with_items, seed=20240601 + seed,
                                          extra=extra)
                run_audit(protocol, run_dir)
            record = _run_record(k, seed, json.loads(results_path.read_text()))
            runs.append(record)
            log(f"k={k} seed={seed}: {record['verdict']} (perplexity p={_fmt(record['perplexity_p'])}, "
                f"memorization p={_fmt(record['memorization_p'])})")

    detection, fpr, smallest = summarize(runs)
    plot = plot_power_curve(detection, seeds, out / "power_curve.png")
    write_json_atomic(out / "calibration.json", {"dups": list(dups), "seeds": seeds, "runs": runs,
                                                 "detection": {str(k): v for k, v in detection.items()},
                                                 "false_positive_rate": fpr, "smallest_detected_k": smallest})
    write_text_atomic(out / "calibration.md", render_markdown(detection, fpr, smallest, seeds))
    return CalibrationResult(out, runs, detection, fpr, smallest, plot)


def render_markdown(detection: dict[int, float], fpr: float | None, smallest: int | None, seeds: int) -> str:
    """The calibration table as Markdown (with the plot beside it)."""
    lines = ["# Calibration", "", f"{seeds} seeds per k; verdict CONTAMINATED counts as detected.", "",
             "| k (copies) | detection rate |", "| ---: | ---: |"]
    lines += [f"| {k} | {rate:.2f} |" for k, rate in detection.items()]
    lines += ["", f"False-positive rate at k = 0: {fpr:.2f}" if fpr is not None else "No k = 0 runs.",
              f"Smallest k detected with power >= 0.8: {smallest}" if smallest is not None else
              "No k reached power 0.8.", "", "![power curve](power_curve.png)", ""]
    return "\n".join(lines)


def _fmt(p) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _protocol_tables(path: str | Path | None) -> str:
    """The [probes] and [analysis] tables of a protocol file, as TOML text."""
    if path is None:
        return ""
    import tomllib

    from contaudit.protocol import load_protocol

    load_protocol(path, check_paths=False)  # validate before any training
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for table in ("probes", "analysis"):
        if table in raw:
            out.append(f"[{table}]")
            out += [f"{k} = {json.dumps(v)}" for k, v in raw[table].items()]
    return "\n".join(out) + "\n"
