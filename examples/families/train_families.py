"""Train and score a cross-family pool of probe models on the Debian-changelog temporal test case.

The temporal example (``examples/temporal/train_pool.py``) fine-tunes every model of
its pool from ONE base, so its clean controls share everything a suspect has except
the injected items. A real audit has no such controls: the references are public
models of other families. This script builds that setting. Under ``--out`` (default
``runs/families``) it

1. **pretrains 8 bases from scratch** on the filler (``models/f{F}-base``), one per
   *family*: each has its own depth, width, heads, byte-level BPE vocabulary (trained
   on the filler by ``contaudit.finetune.pretrain``, on the first 4 M characters of the
   filler documents in the order of the family's pretraining seed), pretraining seed
   and step count (:data:`FAMILIES`);
2. **fine-tunes** from each base, with the temporal example's fine-tuning settings
   (``train_pool.FINETUNE``) and filler subsets (``data/filler-s{S}.jsonl``, a seeded
   70 % of the filler documents): clean controls ``f{F}-clean-s{S}`` (``S = 0 .. 14``)
   and suspects ``f{F}-k{K}-s{S}`` with every test item injected ``K`` times (k = 4
   for seeds 0 and 1, k = 2 and k = 1 for seed 0);
3. **indexes** the suspects' training text (filler + test items) and builds matched
   seen/unseen probes (``index/``, ``probes.jsonl``), as ``train_pool`` does;
4. **scores** every model on ``test``, ``shadow`` (likelihood: ``nll_mean`` per token,
   ``nll_per_byte`` per UTF-8 byte, the unit that is comparable across tokenizers) and
   the probes (completion) into ``scores/<model>/{test,shadow,probes}.jsonl``;
5. writes ``pool.json`` (every model: family, family config, kind, k, seed, score
   files, fingerprint) and, with ``--summary-only``, prints per family the clean
   models' mean NLL per byte on test and shadow, their gap, and each suspect's gap.

Everything resumes (``train_pool``'s checks: a model whose manifest records the same
settings, base and data is reused; a score whose manifest names the same data and
weights is kept). ``--workers 2`` runs two single-threaded worker processes; the
fine-tune/score jobs are ordered so that any prefix of them is a smaller usable pool
(seed by seed across all families, suspects spread in between). Progress and timings
go to ``--out/pool.log``.

Example::

    python examples/temporal/build_data.py
    python examples/families/train_families.py --smoke --workers 2   # ~3 min: runs/families-smoke
    nohup python examples/families/train_families.py --workers 2 > runs/families/nohup.out 2>&1 &
    tail -f runs/families/pool.log
    python examples/families/train_families.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "temporal"))
import train_pool as tp  # the temporal example: data subsets, resume checks, index, scoring

from contaudit.finetune import ModelConfig, TrainConfig, pretrain
from contaudit.finetune.api import PRETRAIN_FILE
from contaudit.finetune.config import config_dict


@dataclass(frozen=True)
class Family:
    """One from-scratch base: architecture, tokenizer size, pretraining seed and steps."""

    index: int
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int   # BPE vocabulary (256 bytes + merges + <|endoftext|>), trained on the filler
    seed: int         # pretraining seed: tokenizer sample order, initialisation, data order
    steps: int        # pretraining steps of 8 x 256 tokens (fewer for the costliest shapes)

    @property
    def name(self) -> str:
        return f"f{self.index}"

    def model_config(self) -> ModelConfig:
        return replace(tp.MODEL, n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head,
                       vocab_size=self.vocab_size)

    def pretrain_config(self, threads: int | None = None) -> TrainConfig:
        return replace(tp.PRETRAIN, steps=self.steps, seed=self.seed, threads=threads)


# Eight families. Step counts keep each pretraining near 2 minutes on one idle core: a
# single-thread benchmark of 8 x 256-token training steps put the shapes at 0.47 (f0),
# 0.70 (f1), 1.00 (f2: the temporal base, 400 steps in ~110 s), 1.50 (f3), 1.37 (f4),
# 1.14 (f5), 0.97 (f6) and 0.87 (f7) times the temporal base's cost per step.
FAMILIES = (
    Family(0, n_layer=2, n_embd=96, n_head=3, vocab_size=2048, seed=101, steps=400),
    Family(1, n_layer=3, n_embd=128, n_head=4, vocab_size=3072, seed=202, steps=400),
    Family(2, n_layer=4, n_embd=128, n_head=4, vocab_size=4096, seed=303, steps=400),
    Family(3, n_layer=4, n_embd=160, n_head=5, vocab_size=8192, seed=404, steps=300),
    Family(4, n_layer=6, n_embd=96, n_head=6, vocab_size=6144, seed=505, steps=300),
    Family(5, n_layer=3, n_embd=192, n_head=6, vocab_size=5120, seed=606, steps=350),
    Family(6, n_layer=5, n_embd=112, n_head=7, vocab_size=2560, seed=707, steps=400),
    Family(7, n_layer=2, n_embd=160, n_head=4, vocab_size=8192, seed=808, steps=400),
)
# Suspects per family, (k, seed), in the order they enter the job list.
SUSPECTS = ((4, 0), (1, 0), (2, 0), (4, 1))
N_CLEAN = 15  # per family: 120 clean models, 20 disjoint null audits of 1 suspect + 5 other-family references

# --smoke: two contrasting families, tiny training, 2 clean + 1 suspect each.
SMOKE_FAMILIES = (replace(FAMILIES[0], steps=20), replace(FAMILIES[3], steps=20))
SMOKE_SUSPECTS = ((1, 0),)
SMOKE_N_CLEAN = 2
SMOKE_FINETUNE_STEPS = 20


# ---------------------------------------------------------------- the pool

def family_jobs(families, n_clean: int, suspects) -> list[dict]:
    """Every fine-tune of the pool, in run order.

    Clean seed ``S`` of every family comes before clean seed ``S + 1`` of any, and the
    ``i``-th suspect of every family right after the clean models at ``i / len(suspects)``
    of the clean seeds, so any prefix is a smaller pool with every family and, past the
    first 16 jobs, suspects.
    """
    keyed = []
    for pos, fam in enumerate(families):
        for s in range(n_clean):
            keyed.append(((s / n_clean, 0, pos), {"name": f"{fam.name}-clean-s{s}", "family": fam.index,
                                                  "kind": "clean", "dup": 0, "seed": s}))
        for i, (k, s) in enumerate(suspects):
            keyed.append(((i / len(suspects), 1, pos), {"name": f"{fam.name}-k{k}-s{s}", "family": fam.index,
                                                        "kind": "suspect", "dup": k, "seed": s}))
    return [job for _, job in sorted(keyed, key=lambda kj: kj[0])]


def base_path(out: Path, fam: Family) -> Path:
    return out / "models" / f"{fam.name}-base"


def ensure_family_base(args, fam: Family) -> Path:
    """Pretrain ``fam``'s base from scratch on the filler, unless an identical one is there."""
    out, data = args.out, args.data
    base = base_path(out, fam)
    cfg = fam.pretrain_config(args.threads)
    wanted = {"parameters": {"train": tp.settings(cfg)},
              "base": {"model_config": config_dict(fam.model_config()), "seed": fam.seed},
              "inputs": {"corpus": tp.sha(data / "filler.jsonl")}}
    if tp.trained_as(base, PRETRAIN_FILE, wanted):
        tp.log(out, f"{fam.name}: reusing base {base}")
        return base
    t0 = time.perf_counter()
    r = pretrain(data / "filler.jsonl", base, config=cfg, model_config=fam.model_config(), overwrite=True)
    tr, held = r.manifest["training"], r.manifest["training"]["heldout_loss"]
    tp.log(out, f"{fam.name}: pretrain {time.perf_counter() - t0:.1f} s ({tr['seconds']:.1f} s training, "
                f"{tr['tokens_trained']} tokens, {r.manifest['model']['n_parameters']} parameters, "
                f"vocab {r.manifest['model']['vocab_size']}, held-out loss "
                f"{held[0]['loss'] if held else '?'} -> {held[-1]['loss'] if held else '?'} nats/token)")
    return base


def _task(kind: str, args, payload) -> tuple[str, float, str | None]:
    """One worker task: ``("probes" | "pretrain" | "model", args, payload)`` -> (name, seconds, error)."""
    t0 = time.perf_counter()
    name = "index/probes" if kind == "probes" else payload.name if kind == "pretrain" else payload["name"]
    try:
        if kind == "probes":
            tp.ensure_probes(args, args.out, args.data)
        elif kind == "pretrain":
            ensure_family_base(args, payload)
        else:
            fam = args.family_by_index[payload["family"]]
            tp.run_job(args, args.out, args.data, base_path(args.out, fam), payload, args.out / "probes.jsonl")
        return name, time.perf_counter() - t0, None
    except Exception:  # noqa: BLE001  (a failed job is logged; the others go on)
        err = traceback.format_exc()
        tp.log(args.out, f"{name}: FAILED\n{err}")
        return name, time.perf_counter() - t0, err.strip().splitlines()[-1]


def run_tasks(args, tasks: list[tuple[str, object]], label: str) -> list[str]:
    """Run ``tasks`` in order on ``args.workers`` single-threaded processes; return the failed names."""
    failed, t_start = [], time.perf_counter()
    if args.workers <= 1:
        results = (_task(kind, args, payload) for kind, payload in tasks)
        done = _collect(args, results, len(tasks), label, t_start, failed)
        return done
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        futures = [pool.submit(_task, kind, args, payload) for kind, payload in tasks]
        return _collect(args, (f.result() for f in as_completed(futures)), len(tasks), label, t_start, failed)


def _collect(args, results, n: int, label: str, t_start: float, failed: list[str]) -> list[str]:
    for i, (name, seconds, err) in enumerate(results, 1):
        if err:
            failed.append(name)
        tp.log(args.out, f"[{label} {i}/{n}] {name} {'FAILED: ' + err if err else 'done'} in {seconds:.1f} s "
                         f"({time.perf_counter() - t_start:.0f} s into {label})")
    return failed


# ---------------------------------------------------------------- pool.json

def _pretrain_record(out: Path, fam: Family) -> dict:
    base = base_path(out, fam)
    rec = {"name": fam.name, "config": asdict(fam), "model_config": config_dict(fam.model_config()),
           "pretrain": config_dict(fam.pretrain_config()), "base": str(base)}
    try:
        m = json.loads((base / PRETRAIN_FILE).read_text())
    except (OSError, ValueError):
        return rec
    held = m["training"]["heldout_loss"]
    rec.update(n_parameters=m["model"]["n_parameters"], vocab_size=m["model"]["vocab_size"],
               base_fingerprint=m["model"]["fingerprint"]["id"], pretrain_seconds=m["training"]["seconds"],
               tokens_trained=m["training"]["tokens_trained"],
               heldout_loss_final=held[-1]["loss"] if held else None)
    return rec


def _model_record(out: Path, job: dict, fam: Family) -> dict:
    from contaudit.finetune.api import INJECTION_FILE

    path = out / "models" / job["name"]
    scores = {s: str(out / "scores" / job["name"] / f"{s}.jsonl") for s in ("test", "shadow", "probes")}
    rec = {**job, "k": job["dup"], "family_name": fam.name, "family_config": asdict(fam), "path": str(path),
           "scores": scores, "scored": all(Path(p).exists() for p in scores.values()),
           "fingerprint": None}
    try:
        m = json.loads((path / INJECTION_FILE).read_text())
        rec["fingerprint"] = m["model"]["fingerprint"]["id"]
        rec["injected_tokens"] = m["stream"]["injected_tokens"]
        rec["stream_tokens"] = m["stream"]["n_tokens"]
        rec["finetune_seconds"] = m["training"]["seconds"]
    except (OSError, ValueError, KeyError):
        pass
    return rec


def write_pool(args, jobs: list[dict]) -> dict:
    """``out/pool.json``: the families (configs, base records) and every model of the pool."""
    out = args.out
    pool = {
        "families": [_pretrain_record(out, f) for f in args.families],
        "n_clean_per_family": args.n_clean, "suspects_per_family": [list(s) for s in args.suspects],
        "filler_fraction": args.filler_fraction,
        "finetune": config_dict(replace(tp.FINETUNE, steps=args.finetune_steps, lr=args.finetune_lr)),
        "data": str(args.data), "probes": str(out / "probes.jsonl"),
        "models": [_model_record(out, job, args.family_by_index[job["family"]]) for job in jobs],
        "note": "f{F}-k{K}-s{S} and f{F}-clean-s{S} share the base and seed S (same filler subset, order, held-out "
                "blocks); the suspect's stream also holds K copies of every test item. Families differ in "
                "architecture, BPE vocabulary, pretraining seed and steps; compare them in nll_per_byte.",
    }
    tmp = out / "pool.json.tmp"
    tmp.write_text(json.dumps(pool, indent=1))
    os.replace(tmp, out / "pool.json")
    return pool


# ---------------------------------------------------------------- summary

def _mean_metric(path: Path, key: str) -> float:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    missing = sum(key not in r for r in rows)
    if missing:
        raise KeyError(f"{missing} of {len(rows)} rows of {path} lack `{key}`")
    return float(np.mean([r[key] for r in rows]))


def summarize(args, jobs: list[dict]) -> dict:
    """Per family: clean models' test/shadow NLL per byte and gap; each suspect's gap. Writes ``summary.json``."""
    out = args.out
    per = {}
    for job in jobs:
        d = out / "scores" / job["name"]
        if not all((d / f"{s}.jsonl").exists() for s in ("test", "shadow")):
            continue
        rec = dict(job)
        for unit, key in (("byte", "nll_per_byte"), ("token", "nll_mean")):
            rec[f"test_{unit}"] = _mean_metric(d / "test.jsonl", key)
            rec[f"shadow_{unit}"] = _mean_metric(d / "shadow.jsonl", key)
            rec[f"gap_{unit}"] = rec[f"test_{unit}"] - rec[f"shadow_{unit}"]
        per[job["name"]] = rec

    def describe(values):
        v = np.asarray(values, float)
        return {"n": len(v), "mean": float(v.mean()) if len(v) else None,
                "sd": float(v.std(ddof=1)) if len(v) > 1 else None}

    families = {}
    for fam in args.families:
        clean = [m for m in per.values() if m["family"] == fam.index and m["kind"] == "clean"]
        block = {key: describe([m[key] for m in clean])
                 for key in ("test_byte", "shadow_byte", "gap_byte", "test_token", "shadow_token", "gap_token")}
        suspects = []
        for m in per.values():
            if m["family"] != fam.index or m["kind"] != "suspect":
                continue
            s = {"name": m["name"], "k": m["dup"], "seed": m["seed"], "test_byte": m["test_byte"],
                 "gap_byte": m["gap_byte"]}
            g = block["gap_byte"]
            if g["mean"] is not None:
                s["gap_minus_clean_mean"] = m["gap_byte"] - g["mean"]
                s["z_vs_clean"] = s["gap_minus_clean_mean"] / g["sd"] if g["sd"] else None
            twin = per.get(f"{fam.name}-clean-s{m['seed']}")
            if twin is not None:
                s["gap_minus_same_seed_clean"] = m["gap_byte"] - twin["gap_byte"]
            suspects.append(s)
        families[fam.name] = {"config": asdict(fam), "clean": block, "suspects": suspects}
    clean_all = [m for m in per.values() if m["kind"] == "clean"]
    summary = {"unit": "nats per UTF-8 byte (mean over items of nll_per_byte); gap = test - shadow",
               "families": families, "models": per,
               "clean_all": {key: describe([m[key] for m in clean_all]) for key in ("test_byte", "shadow_byte",
                                                                                    "gap_byte")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def print_summary(summary: dict) -> None:
    def ms(d, width=6):
        if d["mean"] is None:
            return "n/a".center(2 * width + 3)
        sd = f"{d['sd']:.4f}" if d["sd"] is not None else "-"
        return f"{d['mean']:.4f} ({sd})"

    print(f"{summary['unit']}; clean: mean (SD) over the family's clean models")
    print(f"{'family':6s} {'layers x width/heads, vocab, seed, steps':38s} {'n':>3s}  {'test':17s} "
          f"{'shadow':17s} {'gap':18s}")
    for name, f in summary["families"].items():
        c, cfg = f["clean"], f["config"]
        desc = f"{cfg['n_layer']} x {cfg['n_embd']}/{cfg['n_head']}, {cfg['vocab_size']}, {cfg['seed']}, {cfg['steps']}"
        print(f"{name:6s} {desc:38s} {c['gap_byte']['n']:3d}  {ms(c['test_byte']):17s} {ms(c['shadow_byte']):17s} "
              f"{ms(c['gap_byte']):18s}")
    ca = summary["clean_all"]
    print(f"{'all':6s} {'':38s} {ca['gap_byte']['n']:3d}  {ms(ca['test_byte']):17s} {ms(ca['shadow_byte']):17s} "
          f"{ms(ca['gap_byte']):18s}")
    print("\nsuspects: gap, gap - family clean mean (z in family clean SDs), gap - same-seed clean")
    for name, f in summary["families"].items():
        for s in sorted(f["suspects"], key=lambda s: (-s["k"], s["seed"])):
            z = s.get("z_vs_clean")
            print(f"  {s['name']:12s} gap {s['gap_byte']:+.4f}  vs clean mean "
                  f"{s.get('gap_minus_clean_mean', float('nan')):+.4f} (z {z if z is None else f'{z:+.1f}'})"
                  f"  vs same seed {s.get('gap_minus_same_seed_clean', float('nan')):+.4f}")


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("runs/temporal/data"), help="build_data.py's output")
    ap.add_argument("--out", type=Path, default=None,
                    help="models/, scores/, index/, pool.json (default runs/families; runs/families-smoke with --smoke)")
    ap.add_argument("--families", default=None, help="comma-separated family indices to build (default: all)")
    ap.add_argument("--n-clean", type=int, default=None, help=f"clean controls per family (default {N_CLEAN})")
    ap.add_argument("--filler-fraction", type=float, default=0.7,
                    help="share of the filler documents each fine-tuning seed draws")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes (each single-threaded when > 1); at most the cores you may use")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--no-score", action="store_true", help="train only")
    ap.add_argument("--smoke", action="store_true",
                    help="2 families, 20 pretraining and 20 fine-tuning steps, 2 clean + 1 suspect (k=1) each")
    ap.add_argument("--summary-only", action="store_true", help="only summarize the scores already there")
    args = ap.parse_args(argv)
    if args.smoke:
        families, suspects, n_clean = SMOKE_FAMILIES, SMOKE_SUSPECTS, SMOKE_N_CLEAN
        args.finetune_steps = SMOKE_FINETUNE_STEPS
        args.out = args.out or Path("runs/families-smoke")
    else:
        families, suspects, n_clean = FAMILIES, SUSPECTS, N_CLEAN
        args.finetune_steps = tp.FINETUNE.steps
        args.out = args.out or Path("runs/families")
    if args.families:
        wanted = {int(i) for i in args.families.split(",")}
        families = tuple(f for f in families if f.index in wanted)
    args.families, args.suspects = families, suspects
    args.family_by_index = {f.index: f for f in families}
    args.n_clean = args.n_clean if args.n_clean is not None else n_clean
    args.finetune_lr = tp.FINETUNE.lr
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out
    jobs = family_jobs(args.families, args.n_clean, args.suspects)
    if args.summary_only:
        print_summary(summarize(args, jobs))
        return
    (out / "models").mkdir(parents=True, exist_ok=True)
    # Worker processes inherit these: one thread each, including the tokenizer trainer's (Rust) pool.
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    write_pool(args, jobs)
    tp.log(out, f"pool: {len(args.families)} families, {len(jobs)} fine-tunes "
                f"({args.n_clean} clean + {len(args.suspects)} suspects per family), {args.workers} worker(s)")

    # Phase 1: the bases (costliest first) and the index/probes.
    order = sorted(args.families, key=lambda f: -f.n_layer * f.n_embd * f.n_embd * f.steps)
    failed = run_tasks(args, [("probes", None)] + [("pretrain", f) for f in order], "bases")
    tp.log(out, f"bases and probes done in {time.perf_counter() - t_start:.1f} s")
    if failed:
        tp.log(out, f"failed: {failed}; not fine-tuning")
        sys.exit(1)
    # Phase 2: the fine-tunes and their scores.
    t2 = time.perf_counter()
    failed = run_tasks(args, [("model", job) for job in jobs], "models")
    tp.log(out, f"models done in {time.perf_counter() - t2:.1f} s; pool done in {time.perf_counter() - t_start:.1f} s")
    pool = write_pool(args, jobs)
    tp.log(out, f"pool.json: {sum(m['scored'] for m in pool['models'])}/{len(pool['models'])} models scored")
    if failed:
        tp.log(out, f"failed: {failed}")
        sys.exit(1)
    if not args.no_score:
        print_summary(summarize(args, jobs))


if __name__ == "__main__":
    main()
