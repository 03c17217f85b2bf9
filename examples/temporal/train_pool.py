"""Train and score a pool of probe models on the Debian-changelog temporal test case.

Reads the files written by ``build_data.py`` (``test.jsonl``: old changelog entries,
``shadow.jsonl``: recent ones, ``filler.jsonl``: everything else) and, under ``--out``
(default ``runs/temporal``):

1. **pretrains** a small GPT-2 from scratch on the filler (``models/base``);
2. **fine-tunes a pool** from it: clean controls ``clean-s{S}`` (no test item injected)
   for seeds ``S = 0 .. n_clean - 1``, and suspects ``k{K}-s{S}`` (every test item
   injected ``K`` times) for ``K`` in ``--dups`` and ``S = 0 .. n_suspect - 1``. A
   suspect and the clean control with the same seed share the seed, hence the same
   initial data order, filler subset and held-out blocks (a matched pair); the pool
   manifest records it. Each seed fine-tunes on its own random ``--filler-fraction``
   of the filler documents (``data/filler-s{S}.jsonl``), so controls differ in data
   as well as in data order;
3. **indexes** the suspects' training text (the filler plus the test items) for the
   test and shadow items together and builds matched seen/unseen **probes**
   (``index/``, ``probes.jsonl``): seen probes come from the test set, unseen ones
   from the shadow set;
4. **scores** every model on ``test``, ``shadow`` (likelihood) and the probes
   (``--completion``) into ``scores/<model>/{test,shadow,probes}.jsonl`` (+ manifests);
5. **summarizes** (``summary.json``, printed): per model the gap
   ``G = mean NLL(test) - mean NLL(shadow)``, its spread over the clean pool, the
   suspects' gaps, Hedges' g of the clean models' NLL on test vs shadow, and the
   memorization gap on the probes (mean ``suffix_logprob`` seen - unseen).

Everything resumes: a model whose ``injection.json`` / ``pretrain.json`` records the
same settings, base and data is reused, and a score file whose manifest names the same
data and weights is kept. ``--workers 2`` runs two single-threaded worker processes
over the fine-tune/score jobs (on a 2-core machine, two one-thread processes beat one
two-thread process for these small models, by far when anything else is running);
progress and timings go to ``--out/pool.log``.

Example::

    python examples/temporal/build_data.py
    nohup python examples/temporal/train_pool.py --workers 2 > runs/temporal/nohup.out 2>&1 &
    tail -f runs/temporal/pool.log
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from contaudit.finetune import ModelConfig, TrainConfig, finetune, pretrain
from contaudit.finetune.api import INJECTION_FILE, PRETRAIN_FILE
from contaudit.finetune.config import config_dict
from contaudit.manifest import describe_path
from contaudit.models import fingerprint

# Chosen by measurement on a 2-core CPU (see examples/temporal/README.md): pretraining
# under 2 min, one fine-tune about 20 s on an otherwise idle core, and a single
# injected copy still clearly visible (0.14 nats/token lower test NLL than the
# same-seed clean model, against a seed-to-seed SD of 0.009 in the test-shadow gap).
MODEL = ModelConfig(n_layer=4, n_head=4, n_embd=128, n_positions=256, vocab_size=4096)
PRETRAIN = TrainConfig(steps=400, lr=2e-3, batch_size=8, seq_len=256, warmup_steps=20, min_lr_ratio=0.1,
                       eval_every=100, seed=0)
FINETUNE = TrainConfig(steps=100, lr=1e-3, batch_size=8, seq_len=256, warmup_steps=5, min_lr_ratio=0.1,
                       eval_every=60, heldout_blocks=8, seed=0)


def log(out: Path, msg: str) -> None:
    """Print and append ``msg`` (time-stamped) to ``out/pool.log``."""
    line = f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {msg}"
    print(line, flush=True)
    with open(out / "pool.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------- resume checks

EXECUTION_ONLY = ("threads",)  # training settings that do not define the model (not compared on resume)


def settings(cfg) -> dict:
    """``config_dict(cfg)`` without the execution-only fields."""
    return {k: v for k, v in config_dict(cfg).items() if k not in EXECUTION_ONLY}


def trained_as(path: Path, manifest_name: str, wanted: dict) -> bool:
    """True when ``path/manifest_name`` records every value in ``wanted``.

    ``wanted`` maps a manifest section to ``{key: value}``; the ``inputs`` section maps
    a role to the SHA-256 of that input file; a ``train`` value is compared without
    the execution-only fields (:data:`EXECUTION_ONLY`).
    """
    try:
        recorded = json.loads((path / manifest_name).read_text())
        recorded["inputs"] = {i.get("role"): i.get("sha256") for i in recorded.get("inputs") or []}
        train = recorded.get("parameters", {}).get("train")
        if isinstance(train, dict):
            recorded["parameters"]["train"] = {k: v for k, v in train.items() if k not in EXECUTION_ONLY}
    except (OSError, ValueError, AttributeError, TypeError):
        return False
    return all((recorded.get(sec) or {}).get(k) == v for sec, vals in wanted.items() for k, v in vals.items())


def scored_as(out: Path, data: Path, model: Path) -> bool:
    """True when ``out``'s score manifest names ``data`` (same SHA-256) and ``model``'s current weights."""
    manifest = out.with_name(out.name.removesuffix(".jsonl") + ".manifest.json")
    try:
        m = json.loads(manifest.read_text())
        want = {f["name"]: f["sha256"] for f in fingerprint(model)["weights"]}
        got = {w["name"]: w["sha256"] for w in m["model"]["weights"]}
        return out.exists() and got == want and m["inputs"][0]["sha256"] == describe_path(data)["sha256"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


def sha(path: Path) -> str:
    return describe_path(path)["sha256"]


# ---------------------------------------------------------------- data

def filler_subset(data: Path, seed: int, fraction: float) -> Path:
    """``data/filler-s{seed}.jsonl``: a seeded ``fraction`` of the filler documents, in file order."""
    out = data / f"filler-s{seed}.jsonl"
    lines = (data / "filler.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    keep = np.sort(np.random.default_rng([seed, 20240601]).permutation(len(lines))[: round(fraction * len(lines))])
    text = "".join(lines[i] for i in keep)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    return out


def items_file(data: Path) -> Path:
    """``data/items.jsonl``: test and shadow items together (``id``, ``text``), the index's benchmark."""
    out = data / "items.jsonl"
    rows = []
    for name in ("test", "shadow"):
        for line in (data / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            rows.append(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n")
    text = "".join(rows)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    return out


# ---------------------------------------------------------------- the pool

def pool_jobs(n_clean: int, n_suspect: int, dups: list[int]) -> list[dict]:
    """Every fine-tune of the pool, ordered so that any prefix of the list holds the same
    share of the clean pool and of each suspect group (a partial run is a smaller pool),
    and each suspect comes right after the clean model of its seed (a matched pair)."""
    jobs = [({"name": f"clean-s{s}", "seed": s, "dup": 0}, s / n_clean, 0) for s in range(n_clean)]
    jobs += [({"name": f"k{k}-s{s}", "seed": s, "dup": k}, s / n_suspect, 1 + i)
             for s in range(n_suspect) for i, k in enumerate(dups)]
    return [job for job, _, _ in sorted(jobs, key=lambda j: (j[1], j[2]))]


def ensure_base(args, out: Path, data: Path) -> Path:
    base = out / "models" / "base"
    cfg = replace(PRETRAIN, steps=args.pretrain_steps, threads=args.threads)
    wanted = {"parameters": {"train": settings(cfg)}, "base": {"model_config": config_dict(args.model)},
              "inputs": {"corpus": sha(data / "filler.jsonl")}}
    if trained_as(base, PRETRAIN_FILE, wanted):
        log(out, f"pretrain: reusing {base}")
        return base
    t0 = time.perf_counter()
    r = pretrain(data / "filler.jsonl", base, config=cfg, model_config=args.model, overwrite=True)
    tr = r.manifest["training"]
    log(out, f"pretrain: {time.perf_counter() - t0:.1f} s ({tr['seconds']:.1f} s training, "
             f"{tr['tokens_trained']} tokens, {r.manifest['model']['n_parameters']} parameters, "
             f"held-out loss {tr['heldout_loss'][0]['loss'] if tr['heldout_loss'] else '?'} -> "
             f"{tr['heldout_loss'][-1]['loss'] if tr['heldout_loss'] else '?'})")
    return base


def ensure_probes(args, out: Path, data: Path) -> Path:
    """Index the suspects' training text (filler + test items) for test+shadow items; build probes."""
    from contaudit.index import build as index_build
    from contaudit.probes import ProbeConfig, build_probes

    items = items_file(data)
    index = out / "index"
    probes = out / "probes.jsonl"
    inputs = [data / "filler.jsonl", data / "test.jsonl", items]
    stamp = out / "index.inputs.json"
    key = {str(p): sha(p) for p in inputs}
    if probes.exists() and stamp.exists() and json.loads(stamp.read_text()) == key:
        log(out, f"index/probes: reusing {index} and {probes}")
        return probes
    t0 = time.perf_counter()
    summary = index_build.build_index([data / "filler.jsonl", data / "test.jsonl"], items, index,
                                      config=index_build.IndexConfig())
    t1 = time.perf_counter()
    ps = build_probes(index, probes, ProbeConfig())
    stamp.write_text(json.dumps(key, indent=1))
    statuses = {}
    for it in summary.index.items:
        statuses[(it["id"].split("/")[0], it["status"])] = statuses.get((it["id"].split("/")[0], it["status"]), 0) + 1
    log(out, f"index: {t1 - t0:.1f} s, item status {sorted(statuses.items())}; probes: {time.perf_counter() - t1:.1f} s, "
             f"{ps.counts}, problems {ps.problems}")
    return probes


def run_job(args, out: Path, data: Path, base: Path, job: dict, probes: Path) -> None:
    """Fine-tune one model (unless done) and score it on test, shadow and probes (unless done)."""
    from contaudit.scoring import score

    path = out / "models" / job["name"]
    corpus = filler_subset(data, job["seed"], args.filler_fraction)
    cfg = replace(FINETUNE, steps=args.finetune_steps, lr=args.finetune_lr, seed=job["seed"], threads=args.threads)
    wanted = {"parameters": {"dup": job["dup"], "train": settings(cfg)},
              "base": {"fingerprint": fingerprint(base)},
              "inputs": {"corpus": sha(corpus), "benchmark": sha(data / "test.jsonl")}}
    if trained_as(path, INJECTION_FILE, wanted):
        log(out, f"{job['name']}: reusing model")
    else:
        t0 = time.perf_counter()
        r = finetune(corpus, path, base=base, inject=data / "test.jsonl", dup=job["dup"], config=cfg, overwrite=True)
        st = r.manifest["stream"]
        log(out, f"{job['name']}: fine-tune {time.perf_counter() - t0:.1f} s "
                 f"({r.manifest['training']['seconds']:.1f} s training; {st['injected_tokens']} injected of "
                 f"{st['n_tokens']} tokens)")
    if args.no_score:
        return
    sets = [("test", data / "test.jsonl", False), ("shadow", data / "shadow.jsonl", False), ("probes", probes, True)]
    t0 = time.perf_counter()
    done = []
    for name, file, completion in sets:
        target = out / "scores" / job["name"] / f"{name}.jsonl"
        if scored_as(target, file, path):
            continue
        score(path, file, target, completion=completion, threads=args.threads, device="cpu")
        done.append(name)
    if done:
        log(out, f"{job['name']}: scored {','.join(done)} in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------- summary

def hedges_g(a, b) -> float:
    """Hedges' g of ``a`` minus ``b`` (pooled SD, small-sample corrected)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n1, n2 = len(a), len(b)
    sp = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    return float((a.mean() - b.mean()) / sp * (1 - 3 / (4 * (n1 + n2) - 9)))


def _rows(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def summarize(out: Path, jobs: list[dict]) -> dict:
    """Per-model gaps and their spread; writes ``out/summary.json``."""
    from scipy import stats as sst

    per = {}
    probe_set = {r["id"]: r["probe_set"] for r in map(json.loads, (out / "probes.jsonl").read_text().splitlines())}
    for job in jobs:
        d = out / "scores" / job["name"]
        if not all((d / f"{s}.jsonl").exists() for s in ("test", "shadow", "probes")):
            continue
        test, shadow, probes = (_rows(d / f"{s}.jsonl") for s in ("test", "shadow", "probes"))
        nt = [r["nll_mean"] for r in test.values()]
        ns = [r["nll_mean"] for r in shadow.values()]
        seen = [r["suffix_logprob"] for i, r in probes.items() if probe_set.get(i) == "seen"]
        unseen = [r["suffix_logprob"] for i, r in probes.items() if probe_set.get(i) == "unseen"]
        welch = sst.ttest_ind(nt, ns, equal_var=False)
        per[job["name"]] = {**job, "nll_test": float(np.mean(nt)), "nll_shadow": float(np.mean(ns)),
                            "G": float(np.mean(nt) - np.mean(ns)), "hedges_g": hedges_g(nt, ns),
                            "welch_p": float(welch.pvalue),
                            "suffix_logprob_seen": float(np.mean(seen)) if seen else None,
                            "suffix_logprob_unseen": float(np.mean(unseen)) if unseen else None,
                            "M": float(np.mean(seen) - np.mean(unseen)) if seen and unseen else None,
                            "exact_match_seen": float(np.mean([r["exact_match"] for i, r in probes.items()
                                                               if probe_set.get(i) == "seen"])) if seen else None,
                            "_test": test}
    # Paired differences against the same-seed clean model: d_i = NLL_model(i) - NLL_clean(i) on test items.
    for m in per.values():
        clean = per.get(f"clean-s{m['seed']}")
        if clean is not None and m["dup"] > 0:
            ids = sorted(set(m["_test"]) & set(clean["_test"]))
            m["test_nll_drop_vs_same_seed_clean"] = float(np.mean([clean["_test"][i]["nll_mean"] - m["_test"][i]["nll_mean"]
                                                                    for i in ids]))
            m["did_vs_same_seed_clean"] = m["G"] - clean["G"]
    for m in per.values():
        m.pop("_test")

    def describe(values):
        v = np.asarray([x for x in values if x is not None], float)
        if not len(v):
            return None
        return {"n": len(v), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
                "min": float(v.min()), "max": float(v.max())}

    clean = [m for m in per.values() if m["dup"] == 0]
    summary = {"models": per, "clean": {key: describe([m[key] for m in clean])
                                        for key in ("G", "hedges_g", "M", "nll_test", "nll_shadow")},
               "clean_welch_p_below_0.05": sum(m["welch_p"] < 0.05 for m in clean),
               "suspects": {}}
    # seed-to-seed differences between clean models on the test NLL (what a k=1 drop must beat)
    cn = [m["nll_test"] for m in clean]
    if len(cn) > 1:
        summary["clean"]["nll_test_pairwise_abs_diff"] = describe(
            [abs(a - b) for i, a in enumerate(cn) for b in cn[i + 1:]])
    for k in sorted({m["dup"] for m in per.values() if m["dup"] > 0}):
        ms = [m for m in per.values() if m["dup"] == k]
        summary["suspects"][f"k={k}"] = {key: describe([m.get(key) for m in ms])
                                         for key in ("G", "did_vs_same_seed_clean", "test_nll_drop_vs_same_seed_clean",
                                                     "M", "hedges_g", "exact_match_seen")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def print_summary(summary: dict) -> None:
    def fmt(d):
        if not d:
            return "n/a"
        sd = f"{d['sd']:.4f}" if d.get("sd") is not None else "-"
        return f"n={d['n']} mean={d['mean']:+.4f} sd={sd} min={d['min']:+.4f} max={d['max']:+.4f}"

    print("clean pool:")
    for key, d in summary["clean"].items():
        print(f"  {key:28s} {fmt(d)}")
    print(f"  clean models with Welch p < 0.05 (test vs shadow NLL): {summary['clean_welch_p_below_0.05']}")
    for k, block in summary["suspects"].items():
        print(f"suspects {k}:")
        for key, d in block.items():
            print(f"  {key:34s} {fmt(d)}")


# ---------------------------------------------------------------- main

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("runs/temporal/data"), help="build_data.py's output")
    ap.add_argument("--out", type=Path, default=Path("runs/temporal"), help="models/, scores/, index/, summary")
    ap.add_argument("--n-clean", type=int, default=24, help="clean controls, seeds 0..N-1")
    ap.add_argument("--n-suspect", type=int, default=10, help="suspects per k, seeds 0..M-1")
    ap.add_argument("--dups", default="1,2,4", help="copies of each test item in the suspects (comma-separated)")
    ap.add_argument("--filler-fraction", type=float, default=0.7,
                    help="share of the filler documents each fine-tuning seed draws")
    ap.add_argument("--n-embd", type=int, default=MODEL.n_embd, help="width of the from-scratch GPT-2")
    ap.add_argument("--n-layer", type=int, default=MODEL.n_layer, help="blocks of the from-scratch GPT-2")
    ap.add_argument("--pretrain-steps", type=int, default=PRETRAIN.steps, help="pretraining steps (8 x 256 tokens)")
    ap.add_argument("--finetune-steps", type=int, default=FINETUNE.steps, help="fine-tuning steps (8 x 256 tokens)")
    ap.add_argument("--finetune-lr", type=float, default=FINETUNE.lr, help="fine-tuning peak learning rate")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes for fine-tuning and scoring (each single-threaded when > 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per process (default 1: on a 2-core machine shared with one other busy "
                         "process, a 2-thread fine-tune took 114 s against 22 s with 1 thread)")
    ap.add_argument("--no-score", action="store_true", help="train only")
    ap.add_argument("--summary-only", action="store_true", help="only summarize the scores already there")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # "i/W": internal, one worker's share
    args = ap.parse_args(argv)
    dups = [int(k) for k in args.dups.split(",") if k.strip()]
    args.model = replace(MODEL, n_embd=args.n_embd, n_layer=args.n_layer)
    jobs = pool_jobs(args.n_clean, args.n_suspect, dups)
    out, data = args.out, args.data
    out.mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)

    if args.summary_only:
        print_summary(summarize(out, jobs))
        return

    if args.shard:  # a worker: its share of the jobs, base and probes already there
        i, w = map(int, args.shard.split("/"))
        args.threads = args.threads or 1
        base, probes = out / "models" / "base", out / "probes.jsonl"
        for j, job in enumerate(jobs):
            if j % w == i:
                run_job(args, out, data, base, job, probes)
        return

    t_start = time.perf_counter()
    args.threads = args.threads or 1
    (out / "pool.json").write_text(json.dumps({
        "jobs": jobs, "dups": dups, "n_clean": args.n_clean, "n_suspect": args.n_suspect,
        "filler_fraction": args.filler_fraction, "model": config_dict(args.model),
        "pretrain": config_dict(replace(PRETRAIN, steps=args.pretrain_steps)),
        "finetune": config_dict(replace(FINETUNE, steps=args.finetune_steps, lr=args.finetune_lr)),
        "note": "suspect k{K}-s{S} and clean-s{S} share seed S: same filler subset, order, held-out blocks and "
                "initial data; the suspect's stream also holds K copies of every test item",
    }, indent=1))
    log(out, f"pool: {len(jobs)} fine-tunes ({args.n_clean} clean, {args.n_suspect} x k={dups}), "
             f"{args.workers} worker(s)")
    base = ensure_base(args, out, data)
    probes = ensure_probes(args, out, data)
    if args.workers > 1:
        cmd = [sys.executable, os.path.abspath(__file__), "--data", str(data), "--out", str(out),
               "--n-clean", str(args.n_clean), "--n-suspect", str(args.n_suspect), "--dups", args.dups,
               "--filler-fraction", str(args.filler_fraction), "--pretrain-steps", str(args.pretrain_steps),
               "--finetune-steps", str(args.finetune_steps), "--finetune-lr", str(args.finetune_lr),
               "--n-embd", str(args.n_embd), "--n-layer", str(args.n_layer),
               "--threads", str(max(1, args.threads // args.workers))] + (["--no-score"] if args.no_score else [])
        procs = [subprocess.Popen(cmd + ["--shard", f"{i}/{args.workers}"]) for i in range(args.workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            log(out, f"worker exit codes {codes}")
            sys.exit(1)
    else:
        for job in jobs:
            run_job(args, out, data, base, job, probes)
    log(out, f"pool done in {time.perf_counter() - t_start:.1f} s")
    if not args.no_score:
        summary = summarize(out, jobs)
        print_summary(summary)


if __name__ == "__main__":
    main()
