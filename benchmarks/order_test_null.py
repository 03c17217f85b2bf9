"""Null rejection rate of the order test: the former sharded t-test vs the exact test.

Oren et al.'s order test compares, per shard of the test set, the log-likelihood of the
published item order with those of ``m`` shuffled orders. Until issue 22 contaudit
turned the per-shard gaps ``canonical - mean(shuffled)`` into a p-value with a
one-sample t-test over shards (reimplemented below as ``old_sharded_t_test``, for the
comparison only). It is now an exact stratified randomisation test
(:func:`contaudit.analysis.did.item_order_test`): in each shard the published order
could have been any of the ``m + 1`` orders.

Under the null the published order is one more draw of the same distribution as the
shuffled ones. The simulated order log-likelihoods are skewed as real ones are: an
order is sometimes much less likely, never much more (``-1000 - scale_s * Exp(1)``, a
long left tail), with a scale per shard (``scale_s ~ LogNormal(1, 0.5)``: shards differ
in length). Both tests run on the same simulated datasets; the table gives the share
of runs with ``p <= 0.05`` (one-sided, 'greater') and its exact (Clopper-Pearson) 95 %
interval.

``--power`` adds the simulation behind the ``[item_order]`` defaults: an ordered leak
worth ``delta`` nats per pair of items adjacent in the published order, 82 items
(the demo's test set), power of the exact test per number of shards and permutations.

Run::

    .venv/bin/python benchmarks/order_test_null.py                  # 4,000 runs per size
    .venv/bin/python benchmarks/order_test_null.py --big-runs 1000  # fewer at 50 x 250
    .venv/bin/python benchmarks/order_test_null.py --power          # also the defaults' simulation
    .venv/bin/python benchmarks/order_test_null.py --runs 0 --big-runs 0 --power  # only that
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy import stats

from contaudit.analysis.did import item_order_test

ALPHA = 0.05


def old_sharded_t_test(canonical: np.ndarray, shuffled: np.ndarray) -> float:
    """THE FORMER TEST, for comparison only: one-sample t-test over shards of canonical - mean(shuffled)."""
    gaps = canonical - shuffled.mean(axis=1)
    return float(stats.ttest_1samp(gaps, 0.0, alternative="greater").pvalue)


def simulate_null(rng: np.random.Generator, shards: int, perms: int) -> tuple[np.ndarray, np.ndarray]:
    """One null dataset: ``(canonical (shards,), shuffled (shards, perms))``, skewed, heteroscedastic."""
    scale = rng.lognormal(1.0, 0.5, size=(shards, 1))
    orders = -1000.0 - scale * rng.exponential(size=(shards, perms + 1))  # (shards, perms + 1)
    return orders[:, 0], orders[:, 1:]


def _chunk(args) -> tuple[np.ndarray, np.ndarray, float]:
    """p-values of both tests on runs ``start .. stop`` (each run its own seed), and seconds in the new test."""
    shards, perms, start, stop, seed, n_resamples = args
    old, new, seconds = [], [], 0.0
    for run in range(start, stop):
        rng = np.random.default_rng([seed, shards, perms, run])
        canonical, shuffled = simulate_null(rng, shards, perms)
        old.append(old_sharded_t_test(canonical, shuffled))
        t0 = time.perf_counter()
        new.append(item_order_test(canonical, shuffled, n_resamples=n_resamples, rng=rng).pvalue)
        seconds += time.perf_counter() - t0
    return np.array(old), np.array(new), seconds


def rejection(pvalues: np.ndarray) -> str:
    k, n = int(np.sum(pvalues <= ALPHA)), pvalues.size
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k / n:.4f} [{ci.low:.4f}, {ci.high:.4f}]"


def null_rates(shards: int, perms: int, runs: int, *, seed: int, workers: int, n_resamples: int) -> None:
    edges = np.linspace(0, runs, 8 * workers + 1).astype(int)
    jobs = [(shards, perms, a, b, seed, n_resamples) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_chunk, jobs))
    old = np.concatenate([p[0] for p in parts])
    new = np.concatenate([p[1] for p in parts])
    per_call = sum(p[2] for p in parts) / runs
    print(f"| {shards} x {perms} | {runs:,} | old: sharded t-test | {rejection(old)} | |")
    print(f"| {shards} x {perms} | {runs:,} | new: exact stratified randomisation | {rejection(new)} | "
          f"{per_call * 1000:.0f} ms per test |", flush=True)


def power_by_design(*, runs: int = 600, delta: float = 0.4, n_items: int = 82) -> None:
    """Power of the exact test per (shards, permutations) for an ordered leak of ``delta`` nats per adjacent pair.

    The log-likelihood of an order is the sum over its adjacent pairs ``(a, b)`` of a
    pair score ``W[a, b]`` (normal minus exponential: skewed) plus ``delta`` when ``b``
    follows ``a`` in the published order. Every design sees the same ``W`` per run.
    """
    from contaudit.scoring.item_order import shard_bounds

    designs = [(n, m) for n in (5, 10, 15, 20, 41) for m in (10, 25, 50)]
    for d in (0.0, delta):
        hits = {c: 0 for c in designs}
        rng = np.random.default_rng(1)
        for r in range(runs):
            pair = rng.normal(0, 1, (n_items, n_items)) - rng.exponential(1, (n_items, n_items))
            pair = pair + d * np.eye(n_items, k=1)
            for n, m in designs:
                canonical, shuffled = [], []
                for a, b in shard_bounds(n_items, n):
                    idx = np.arange(a, b)
                    canonical.append(pair[idx[:-1], idx[1:]].sum())
                    orders = np.argsort(rng.random((m, b - a)), axis=1) + a  # (m, shard size)
                    shuffled.append(pair[orders[:, :-1], orders[:, 1:]].sum(axis=1))
                hits[n, m] += item_order_test(canonical, shuffled, n_resamples=2000, rng=r).pvalue <= ALPHA
        print(f"\nLeak of {d} nats per adjacent pair, {n_items} items, {runs} runs: share rejected at {ALPHA}")
        print("| shards | " + " | ".join(f"{m} permutations" for m in (10, 25, 50)) + " |")
        print("| ---: | ---: | ---: | ---: |")
        for n in (5, 10, 15, 20, 41):
            print(f"| {n} | " + " | ".join(f"{hits[n, m] / runs:.3f}" for m in (10, 25, 50)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4000, help="null runs at 10 shards x 10 permutations")
    parser.add_argument("--big-runs", type=int, default=4000, help="null runs at 50 shards x 250 permutations")
    parser.add_argument("--n-resamples", type=int, default=100_000, help="resamples of the new test (its default)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--power", action="store_true", help="also the power simulation behind the defaults")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    if args.runs > 0 or args.big_runs > 0:
        print(f"Null rejection rate at alpha = {ALPHA} (one-sided), skewed order log-likelihoods; "
              f"new test with n_resamples = {args.n_resamples:,}; exact 95 % intervals\n")
        print("| shards x permutations | runs | test | rejects at 0.05 [95 % CI] | time |")
        print("| --- | ---: | --- | --- | ---: |")
        started = time.perf_counter()
        for (shards, perms), runs in (((10, 10), args.runs), ((50, 250), args.big_runs)):
            if runs > 0:
                null_rates(shards, perms, runs, seed=args.seed, workers=workers, n_resamples=args.n_resamples)
        print(f"\n{time.perf_counter() - started:.0f} s on {workers} processes")
    if args.power:
        power_by_design()


if __name__ == "__main__":
    main()
