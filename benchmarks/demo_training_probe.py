"""Measure the demo's training settings: does a 2-core CPU budget give a detectable suspect?

Runs the demo's training side by side with a minimal scorer and prints, for the
suspect (HumanEval test half injected ``dup`` times) against the clean control
(``dup = 0``, same seed), and for a second clean control (another seed) against the
first (the null run):

* the perplexity difference-in-differences of mean NLL per token (test minus shadow
  of suspect minus clean) with its one-sided permutation p-value;
* verbatim greedy completion of each item's last 32 words from up to 128 words before
  them (the probe split of ``contaudit.probes``; prompt and reference tokens built as
  ``contaudit.scoring`` builds them), exact match and matching-token fraction, on test
  (seen) and shadow (unseen) items, with the memorization DiD and p-value;
* wall and CPU time and tokens/s of every stage.

Usage (defaults: ``contaudit.finetune.DemoTrainingConfig``)::

    python benchmarks/demo_training_probe.py --work /tmp/demo-probe
    python benchmarks/demo_training_probe.py --work /tmp/demo-probe --reuse-base --dup 16 --ft-steps 150

The scorer here is deliberately small (one item per forward pass, left-padded greedy
generation checked against unbatched generation); the audit's own scoring engine
lives in ``contaudit.scoring``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from contaudit.analysis.did import memorization_did, perplexity_did
from contaudit.corpora import write_humaneval_split, write_stdlib_corpus
from contaudit.finetune import DemoTrainingConfig, finetune, pretrain
from contaudit.io import load_items
from contaudit.probes import ProbeConfig, split_probe


class Clock:
    """Wall and process CPU seconds of a block (children excluded)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def load_model(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)


@torch.inference_mode()
def mean_nll(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Mean NLL (nats/token) of each text's tokens, sliding window of the context length."""
    ctx = model.config.n_positions
    stride = ctx // 2
    out = []
    for text in texts:
        ids = torch.tensor(tokenizer(text).input_ids)  # eos + item tokens
        total, count, scored = 0.0, 0, 1  # token 0 (eos) is context only
        while scored < len(ids):
            start = max(0, scored - (ctx - stride))  # >= ctx - stride tokens of context
            window = ids[start: start + ctx]
            logp = torch.log_softmax(model(input_ids=window[None]).logits[0].float(), -1)  # (T, V)
            targets = torch.arange(scored, start + len(window))
            total -= float(logp[targets - 1 - start, ids[targets]].sum())
            count += len(targets)
            scored = start + len(window)
        out.append(total / count)
    return np.asarray(out)


@torch.inference_mode()
def greedy(model, prompts: list[list[int]], n_new: list[int], pad: int, batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations: left-padded batches with explicit position ids and a KV cache."""
    order = np.argsort([len(p) for p in prompts])
    outputs: dict[int, list[int]] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size].tolist()
        new = max(n_new[i] for i in idx)
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        # rows with fewer new tokens than the batch run past their own budget; their extra
        # tokens are dropped, and their positions are clamped to stay inside the context
        ctx = model.config.n_positions
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generated, past, cur = [], None, ids
        for _ in range(new):
            res = model(input_ids=cur, attention_mask=mask, position_ids=positions, past_key_values=past,
                        use_cache=True)
            past = res.past_key_values
            cur = res.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            generated.append(cur)
            mask = torch.cat([mask, torch.ones_like(cur)], dim=1)
            positions = (positions[:, -1:] + 1).clamp(max=ctx - 1)
        gen = torch.cat(generated, dim=1)  # (B, new)
        for r, i in enumerate(idx):
            outputs[i] = gen[r, : n_new[i]].tolist()
    return [outputs[i] for i in range(len(prompts))]


def probe_tokens(tokenizer, probes: list[tuple[str, str]], ctx: int) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt and reference token ids of each (prefix, suffix) probe, as the scoring engine builds them.

    Whitespace at the end of the prefix moves to the suffix (a prompt ending in a lone
    space token is one the model never saw); the prompt is eos + the prefix's last
    tokens that fit the context with the suffix.
    """
    prompts, refs = [], []
    for prefix, suffix in probes:
        stripped = prefix.rstrip()
        ref = tokenizer(prefix[len(stripped):] + suffix, add_special_tokens=False).input_ids
        ids = tokenizer(stripped, add_special_tokens=False).input_ids
        prompts.append([tokenizer.eos_token_id] + ids[-(ctx - 1 - len(ref)):])
        refs.append(ref)
    return prompts, refs


def completion_scores(model, tokenizer, probes: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Exact match (0/1) and matching-token fraction of each probe's suffix tokens."""
    prompts, refs = probe_tokens(tokenizer, probes, model.config.n_positions)
    gens = greedy(model, prompts, [len(r) for r in refs], tokenizer.eos_token_id)
    exact = [float(g == r) for g, r in zip(gens, refs)]
    frac = [sum(a == b for a, b in zip(g, r)) / len(r) for g, r in zip(gens, refs)]
    return np.asarray(exact), np.asarray(frac)


def check_batched_generation(model, tokenizer, probes, n: int = 4) -> None:
    """Left-padded batched generation must equal one-at-a-time generation."""
    prompts, _ = probe_tokens(tokenizer, probes[:n], model.config.n_positions)
    batched = greedy(model, prompts, [16] * n, tokenizer.eos_token_id, batch_size=n)
    single = [greedy(model, [p], [16], tokenizer.eos_token_id, batch_size=1)[0] for p in prompts]
    if batched != single:
        raise SystemExit(f"batched generation differs from unbatched:\n{batched}\n{single}")


def score_model(path: Path, test, shadow, probes_test, probes_shadow) -> dict:
    model, tokenizer = load_model(path)
    with Clock() as c:
        nll_test = mean_nll(model, tokenizer, [it.text for it in test])
        nll_shadow = mean_nll(model, tokenizer, [it.text for it in shadow])
    with Clock() as g:
        ex_t, fr_t = completion_scores(model, tokenizer, probes_test)
        ex_s, fr_s = completion_scores(model, tokenizer, probes_shadow)
    return {"nll_test": nll_test, "nll_shadow": nll_shadow, "exact_test": ex_t, "frac_test": fr_t,
            "exact_shadow": ex_s, "frac_shadow": fr_s, "nll_wall": c.wall, "gen_wall": g.wall,
            "model": model, "tokenizer": tokenizer}


def compare(sus: dict, clean: dict, rng: int) -> dict:
    ppl = perplexity_did(sus["nll_test"], clean["nll_test"], sus["nll_shadow"], clean["nll_shadow"],
                         n_resamples=10_000, n_bootstrap=0, rng=rng)
    out = {"nll_did": ppl.statistic, "nll_p": ppl.pvalue, "nll_g": ppl.effect_size}
    for key in ("exact", "frac"):
        mem = memorization_did(sus[f"{key}_test"], clean[f"{key}_test"], sus[f"{key}_shadow"], clean[f"{key}_shadow"],
                               n_resamples=10_000, n_bootstrap=0, rng=rng)
        out[f"{key}_did"], out[f"{key}_p"] = mem.statistic, mem.pvalue
    return out


def main(argv=None) -> int:
    demo = DemoTrainingConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/contaudit-demo-probe"))
    ap.add_argument("--reuse-base", action="store_true", help="reuse WORK/base when it exists")
    ap.add_argument("--no-null", action="store_true", help="skip the second clean control")
    ap.add_argument("--reuse-models", action="store_true", help="score the fine-tuned models already in WORK")
    ap.add_argument("--n-layer", type=int, default=demo.model.n_layer)
    ap.add_argument("--n-embd", type=int, default=demo.model.n_embd)
    ap.add_argument("--n-head", type=int, default=demo.model.n_head)
    ap.add_argument("--vocab-size", type=int, default=demo.model.vocab_size)
    ap.add_argument("--seq-len", type=int, default=demo.pretrain.seq_len)
    ap.add_argument("--batch-size", type=int, default=demo.pretrain.batch_size)
    ap.add_argument("--pretrain-steps", type=int, default=demo.pretrain.steps)
    ap.add_argument("--pretrain-lr", type=float, default=demo.pretrain.lr)
    ap.add_argument("--ft-steps", type=int, default=demo.finetune.steps)
    ap.add_argument("--ft-lr", type=float, default=demo.finetune.lr)
    ap.add_argument("--ft-batch-size", type=int, default=demo.finetune.batch_size)
    ap.add_argument("--dup", type=int, default=demo.dup)
    ap.add_argument("--seed", type=int, default=demo.finetune.seed)
    ap.add_argument("--null-seed", type=int, default=demo.null_seed)
    ap.add_argument("--align-copies", action=argparse.BooleanOptionalAction, default=demo.finetune.align_copies)
    ap.add_argument("--train-only", action="store_true", help="fine-tune and stop (no scoring)")
    ap.add_argument("--suspect-only", action="store_true", help="fine-tune the suspect only and stop")
    ap.add_argument("--ft-min-lr-ratio", type=float, default=demo.finetune.min_lr_ratio)
    ap.add_argument("--threads", type=int, default=demo.threads)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    model_cfg = replace(demo.model, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
                        vocab_size=args.vocab_size, n_positions=args.seq_len)
    pre_cfg = replace(demo.pretrain, steps=args.pretrain_steps, lr=args.pretrain_lr, seq_len=args.seq_len,
                      batch_size=args.batch_size, threads=args.threads)
    ft_cfg = replace(demo.finetune, steps=args.ft_steps, lr=args.ft_lr, seq_len=args.seq_len,
                     batch_size=args.ft_batch_size, threads=args.threads, seed=args.seed,
                     align_copies=args.align_copies, min_lr_ratio=args.ft_min_lr_ratio)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, dict] = {}
    print(f"load average at start: {os.getloadavg()}", flush=True)

    with Clock() as c:
        corpus = work / "corpus.jsonl"
        if not corpus.exists():
            write_stdlib_corpus(corpus)
        split = write_humaneval_split(work / "humaneval", seed=demo.split_seed)
    timings["data"] = {"wall": c.wall, "cpu": c.cpu}

    base = work / "base"
    if not (args.reuse_base and (base / "pretrain.json").exists()):
        with Clock() as c:
            r = pretrain(corpus, base, config=pre_cfg, model_config=model_cfg, overwrite=True)
        timings["pretrain"] = {"wall": c.wall, "cpu": c.cpu, "train_s": r.train.seconds,
                               "tokens": r.train.tokens_trained, "tok_per_s": r.train.tokens_per_s,
                               "heldout": [h["loss"] for h in r.train.heldout]}
        print(f"pretrain: {c.wall:.1f}s wall, {c.cpu:.1f}s cpu, {r.train.tokens_per_s:.0f} tok/s, "
              f"held-out loss {r.train.heldout[0]['loss']:.3f} -> {r.train.heldout[-1]['loss']:.3f}", flush=True)
    runs = {"suspect": (args.dup, args.seed)} if args.suspect_only else {"suspect": (args.dup, args.seed),
                                                                         "clean": (0, args.seed)}
    if not (args.no_null or args.suspect_only):
        runs["clean2"] = (0, args.null_seed)
    for name, (dup, seed) in runs.items():
        if args.reuse_models and (work / name / "injection.json").exists():
            continue
        with Clock() as c:
            r = finetune(corpus, work / name, base=base, inject=split["test"], dup=dup,
                         config=replace(ft_cfg, seed=seed), overwrite=True)
        injected = r.manifest["stream"]["injected_tokens"] / r.manifest["stream"]["n_tokens"]
        timings[name] = {"wall": c.wall, "cpu": c.cpu, "train_s": r.train.seconds,
                         "tok_per_s": r.train.tokens_per_s, "injected_share": injected,
                         "heldout": [h["loss"] for h in r.train.heldout]}
        print(f"finetune {name} (dup={dup}, seed={seed}): {c.wall:.1f}s wall, {c.cpu:.1f}s cpu, "
              f"{r.train.tokens_per_s:.0f} tok/s, injected share {injected:.1%}, held-out loss "
              f"{r.train.heldout[0]['loss']:.3f} -> {r.train.heldout[-1]['loss']:.3f}", flush=True)

    if args.train_only or args.suspect_only:
        return 0
    test = load_items(split["test"])
    shadow = load_items(split["shadow"])
    cfg = ProbeConfig()
    probes_test = [p for it in test if (p := split_probe(it.text, cfg))]
    probes_shadow = [p for it in shadow if (p := split_probe(it.text, cfg))]
    print(f"probes: {len(probes_test)} test, {len(probes_shadow)} shadow (of {len(test)} / {len(shadow)})")
    scores = {}
    for name in runs:
        with Clock() as c:
            scores[name] = score_model(work / name, test, shadow, probes_test, probes_shadow)
        if name == "suspect":
            check_batched_generation(scores[name]["model"], scores[name]["tokenizer"], probes_test)
        timings[f"score_{name}"] = {"wall": c.wall, "cpu": c.cpu}
        s = scores[name]
        print(f"{name:8s} NLL test {s['nll_test'].mean():.3f} shadow {s['nll_shadow'].mean():.3f} | exact test "
              f"{s['exact_test'].mean():.3f} shadow {s['exact_shadow'].mean():.3f} | token frac test "
              f"{s['frac_test'].mean():.3f} shadow {s['frac_shadow'].mean():.3f} | scored in {c.wall:.1f}s",
              flush=True)

    results = {"suspect_vs_clean": compare(scores["suspect"], scores["clean"], rng=0)}
    if "clean2" in scores:
        results["clean2_vs_clean"] = compare(scores["clean2"], scores["clean"], rng=0)
    for name, r in results.items():
        print(f"{name}: NLL DiD {r['nll_did']:+.4f} (p={r['nll_p']:.4g}, g={r['nll_g']:+.2f}) | exact-match DiD "
              f"{r['exact_did']:+.3f} (p={r['exact_p']:.4g}) | token-fraction DiD {r['frac_did']:+.3f} "
              f"(p={r['frac_p']:.4g})")
    total = sum(t["wall"] for t in timings.values())
    print(f"total wall {total:.1f}s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"load average at end: {os.getloadavg()}")
    summary = {"args": vars(args) | {"work": str(args.work)}, "timings": timings, "results": results,
               "means": {n: {k: float(v.mean()) for k, v in s.items() if isinstance(v, np.ndarray)}
                         for n, s in scores.items()}}
    (work / "probe_results.json").write_text(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
