"""Evaluate the demo's models with lm-evaluation-harness and estimate the score inflation from its samples.

On a finished ``contaudit demo`` folder (``--run``, default ``runs/demo``) this

1. writes the two local-file tasks of ``tasks/`` with that demo's test and shadow files
   (``OUT/tasks``; the datasets cache in ``OUT/hf_datasets_cache``): ``contaudit_humaneval``
   (greedy generation, each program executed in its own process: ``pass@1``) and
   ``contaudit_humaneval_ll`` (log-probability of the canonical solution given the prompt);
2. runs the real ``lm_eval`` command line, offline, on the demo's suspect and clean models
   (``--log_samples --output_path OUT/samples/ROLE``, ``--device cpu`` by default);
3. writes the demo's protocol with an ``[outcomes]`` table pointing at those samples, once per
   outcome (``OUT/protocol-pass1.toml``: pass@1; ``OUT/protocol-loglikelihood.toml``: nats per
   byte), and runs ``contaudit audit`` on each (``OUT/audit-pass1``, ``OUT/audit-loglikelihood``);
4. prints each model's scores on the test and shadow halves, lm_eval's own aggregated scores,
   the inflation estimates with their intervals and p-values, and the wall times
   (``OUT/summary.json`` holds them all).

Run from the repository root: ``python examples/lm_eval/run.py --run runs/demo``.
Exit codes: 0 done, 2 the folder is not a finished demo or ``--out`` is taken, 1 a command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
GENERATION, LOGLIKELIHOOD = "contaudit_humaneval", "contaudit_humaneval_ll"
METRICS = {GENERATION: ("pass@1",), LOGLIKELIHOOD: ("loglikelihood", "loglikelihood_per_byte", "acc")}
# One audit per outcome: name -> (task, metric) that its [outcomes] table reads.
OUTCOMES = {"pass1": (GENERATION, "pass@1"), "loglikelihood": (LOGLIKELIHOOD, "loglikelihood_per_byte")}
ROLES = ("suspect", "clean")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# What `contaudit demo --out RUN` leaves when it has finished (the audit's results last).
DEMO_FILES = ("data/test.jsonl", "data/shadow.jsonl", "models/suspect/config.json", "models/clean/config.json",
              "protocol.toml", "audit/results.json")


class Refusal(Exception):
    """Bad input: one line for the user, exit code 2."""


def check_demo(run: Path) -> None:
    """Refuse a folder that is not a finished ``contaudit demo`` run."""
    if not run.is_dir():
        raise Refusal(f"{run}: no such folder; run `contaudit demo --out {run}` first")
    missing = [name for name in DEMO_FILES if not (run / name).is_file()]
    if missing:
        raise Refusal(f"{run} is not a finished contaudit demo (no {missing[0]}); run `contaudit demo --out {run}` "
                      f"to finish it")


def write_tasks(run: Path, out: Path) -> Path:
    """The task files of ``tasks/`` with this demo's test and shadow files and a datasets cache in ``out``;
    returns the folder to give lm_eval as ``--include_path``."""
    tasks = out / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    for yaml in sorted(TASKS_DIR.glob("*.yaml")):
        text = yaml.read_text(encoding="utf-8")
        for name in ("test", "shadow"):
            text = text.replace(f'"runs/demo/data/{name}.jsonl"', json.dumps(str((run / "data" / f"{name}.jsonl")
                                                                              .resolve())))
        text = text.replace('"runs/demo/lm_eval/hf_datasets_cache"', json.dumps(str((out / "hf_datasets_cache")
                                                                                 .resolve())))
        if '"runs/demo' in text:
            raise RuntimeError(f"{yaml}: a path to runs/demo this script does not rewrite")
        (tasks / yaml.name).write_text(text, encoding="utf-8")
    shutil.copy2(TASKS_DIR / "utils.py", tasks / "utils.py")
    return tasks


def lm_eval_command(model: Path, tasks: Path, output: Path, *, device: str = "cpu", batch_size: int = 16) -> list[str]:
    """The ``lm_eval`` command line that evaluates ``model`` on both tasks and logs every sample."""
    return [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model.resolve()}",
            "--device", device, "--batch_size", str(batch_size), "--tasks", f"{GENERATION},{LOGLIKELIHOOD}",
            "--include_path", str(tasks), "--output_path", str(output), "--log_samples",
            "--confirm_run_unsafe_code", "--seed", "0"]


def run_logged(command: list[str], log: Path, what: str, env: dict | None = None) -> float:
    """Run a command, offline, with its output in ``log``; its wall time in seconds. A failure raises with the
    log's tail."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(command, check=False, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **OFFLINE, **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}; {log}):\n" + "\n".join(tail))
    return seconds


def aggregated(samples_dir: Path) -> dict:
    """lm_eval's own scores (``results_*.json``: ``{task: {"metric,filter": value}}``) of one run."""
    written, = samples_dir.glob("*/results_*.json")
    return json.loads(written.read_text(encoding="utf-8"))["results"]


def write_outcome_protocol(run: Path, path: Path, samples: dict[str, Path], task: str, metric: str) -> Path:
    """The demo's protocol (``RUN/protocol.toml``: same models, sets, index and settings) with an ``[outcomes]``
    table that reads ``metric`` of ``task`` from each model's lm_eval output folder."""
    import tomli_w
    import tomllib

    protocol = tomllib.loads((run / "protocol.toml").read_text(encoding="utf-8"))
    protocol["name"] = f"{protocol.get('name', 'demo')}, lm_eval {task} {metric}"
    protocol["description"] = (f"the demo's audit with the score inflation of lm-evaluation-harness's {task} "
                               f"({metric}), read from its --log_samples output")
    protocol["outcomes"] = {**{role: str(p.resolve()) for role, p in samples.items()}, "format": "lm_eval",
                            "task": task, "metric": metric}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by examples/lm_eval/run.py from the demo's protocol.\n" + tomli_w.dumps(protocol),
                    encoding="utf-8")
    return path


def half_means(samples_dir: Path, items_by_half: dict[str, list], task: str, metric: str) -> dict:
    """Mean outcome on each half as contaudit reads the samples, and how many items matched."""
    from contaudit.outcomes import read_outcomes

    items = [it for half in items_by_half.values() for it in half]
    read = read_outcomes(samples_dir, items, format="lm_eval", task=task, metric=metric)
    out = {half: sum(read.scores[it.id] for it in its) / len(its) for half, its in items_by_half.items()}
    return {**out, "n_matched": read.n_matched, "missing": read.missing, "unmatched": read.unmatched}


def contaudit_command() -> list[str]:
    beside = Path(sys.executable).with_name("contaudit")
    return [str(beside)] if beside.exists() else [shutil.which("contaudit") or "contaudit"]


def evaluate(run: Path, out: Path, *, device: str = "cpu", batch_size: int = 16, threads: int | None = 1,
             say=print) -> dict:
    """Every step of the module docstring; returns what ``summary.json`` holds."""
    from contaudit.io import load_items

    tasks = write_tasks(run, out)
    seconds, samples = {}, {}
    for role in ROLES:
        samples[role] = out / "samples" / role
        say(f"lm_eval: {role} ({run / 'models' / role}) ...")
        seconds[f"lm_eval {role}"] = run_logged(
            lm_eval_command(run / "models" / role, tasks, samples[role], device=device, batch_size=batch_size),
            out / f"lm_eval-{role}.log", f"lm_eval on the {role}",
            env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None)
        say(f"  {seconds[f'lm_eval {role}']:.1f} s; samples in {samples[role]}")

    halves = {half: load_items(run / "data" / f"{half}.jsonl") for half in ("test", "shadow")}
    scores = {role: {task: {metric: {**half_means(samples[role], halves, task, metric),
                                     "lm_eval": aggregated(samples[role])[task][f"{metric},none"]}
                            for metric in metrics} for task, metrics in METRICS.items()} for role in ROLES}

    inflation = {}
    for name, (task, metric) in OUTCOMES.items():
        protocol = write_outcome_protocol(run, out / f"protocol-{name}.toml", samples, task, metric)
        say(f"contaudit audit {protocol} --out {out / f'audit-{name}'} ...")
        seconds[f"audit {name}"] = run_logged(contaudit_command() + ["audit", str(protocol), "--out",
                                                                     str(out / f"audit-{name}")],
                                              out / f"audit-{name}.log", f"contaudit audit ({name})")
        results = json.loads((out / f"audit-{name}" / "results.json").read_text(encoding="utf-8"))
        inflation[name] = {"task": task, "verdict": results["verdict"]["label"],
                           **{k: results["inflation"][k] for k in ("metric", "estimate", "confidence_interval",
                                                                    "ci_method", "pvalue", "clean_score")}}
    return {"run": str(run), "out": str(out), "scores": scores, "inflation": inflation,
            "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def render(summary: dict) -> list[str]:
    """The summary as lines to print."""
    lines = ["", ("per-item outcomes read from lm_eval's samples (contaudit.outcomes), mean per half; "
                  "lm_eval's own score over both halves in brackets")]
    for task, metrics in METRICS.items():
        for metric in metrics:
            row = "; ".join(f"{role} test {s['test']:.4f}, shadow {s['shadow']:.4f} [{s['lm_eval']:.4f}]"
                            for role in ROLES for s in [summary["scores"][role][task][metric]])
            lines.append(f"  {task} {metric}: {row}")
    lines.append("score inflation (S_test - S_shadow) - (C_test - C_shadow), one-sided permutation p:")
    for inf in summary["inflation"].values():
        low, high = inf["confidence_interval"]
        ci = f"[{low:+.4f}, {high:+.4f}]" if low is not None else f"(no interval: {inf['ci_method']})"
        lines.append(f"  {inf['task']} {inf['metric']}: {inf['estimate']:+.4f} {ci}, p = {inf['pvalue']:.4g}; "
                     f"suspect without the leak {inf['clean_score']['estimate']:.4f}; verdict {inf['verdict']}")
    lines.append("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished `contaudit demo` folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default RUN/lm_eval; must be new)")
    parser.add_argument("--device", default="cpu", help="lm_eval's --device (default cpu)")
    parser.add_argument("--batch-size", type=int, default=16, help="lm_eval's --batch_size (default 16)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of lm_eval's torch (default 1: the fastest for models this small, and it "
                             "shares the machine; 0: torch's default)")
    args = parser.parse_args(argv)
    out = args.out or args.run / "lm_eval"
    try:
        check_demo(args.run)
        if out.exists() and any(out.iterdir()):
            raise Refusal(f"{out}: exists and is not empty; give another --out or remove it")
    except Refusal as refusal:
        print(f"run.py: {refusal}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = evaluate(args.run, out, device=args.device, batch_size=args.batch_size, threads=args.threads or None)
    except RuntimeError as failure:
        print(f"run.py: {failure}", file=sys.stderr)
        return 1
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print("\n".join(render(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
