"""``contaudit index --ray``: the same shard scan as Ray tasks, on one machine or a cluster.

Each Ray task reads one corpus unit (a record file, a saved dataset, or a text
directory) with the same code as a one-machine build: :func:`iter_shards` over that
unit cuts the same shards and batches, and a :class:`~contaudit.index.scan.Searcher` scans each batch. A
unit read by several tasks (when there are fewer units than workers) is split by
batch: every task reads the whole unit and scans every ``parts``-th batch, so one
large file or directory still keeps all workers busy.

Tasks stream one result per batch back to the driver (this process), which merges a
shard's batches in order, saves the shard under ``OUT.partial/`` (only the driver
writes), and merges shards in corpus order exactly as a one-machine build does. So the
index is byte for byte the one a one-machine build writes, shards already saved are
reused (and the partial results of either kind of run resume the other), and progress
advances as results arrive. Workers only read the corpus: its paths must be readable
at the same path on every node.

``ray`` is an optional extra (``pip install 'contaudit[ray]'``) imported only here.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from contaudit.config import IndexConfig
from contaudit.errors import ContauditError
from contaudit.index.scan import Accumulator, Searcher, iter_shards
from contaudit.io import MAX_SKIP_EXAMPLES, CorpusUnit, ReadStats
from contaudit.ray_support import RayConnection

MAX_PARTS = 8  # at most this many tasks read the same unit (each reads all of it)


def _scan_unit(u: int, unit: CorpusUnit, config: IndexConfig, searcher: Searcher, part: int, parts: int,
               done: frozenset[int]) -> Iterator[tuple]:
    """A Ray task: scan batches ``part``, ``part + parts``, ... of unit ``u``; yield each result.

    Yields ``("batch", shard, i, n_batches, result)`` for each batch it scans,
    ``("resumed", shard, chars)`` for shards in ``done`` (part 0 only), and finally
    ``("end", n_shards, read_stats)`` (the stats from part 0 only).
    """
    stats = ReadStats()
    n_shards = seen_batches = 0
    for shard_id, batches in iter_shards([unit], config, stats):
        shard = int(shard_id.rsplit("-", 1)[1])
        n_shards += 1
        if shard in done:
            if part == 0:
                yield "resumed", shard, sum(len(d.text) for b in batches for d in b)
        else:
            for i, batch in enumerate(batches):
                if (seen_batches + i) % parts == part:
                    yield "batch", shard, i, len(batches), searcher.scan_batch(batch)
        seen_batches += len(batches)
    yield "end", n_shards, stats.as_dict() if part == 0 else None


def _gpu_share(ray, searcher: Searcher, workers: int) -> float:
    """The GPU share each task asks for: with an encoder as the semantic model, the cluster's GPUs split among
    the ``workers`` tasks that run at once (Ray hides the GPUs from a task that asks for none); else 0."""
    semantic = searcher.semantic
    if semantic is None or semantic.model.encoder is None:
        return 0
    gpus = ray.cluster_resources().get("GPU", 0)
    return min(1.0, gpus / max(1, workers)) if gpus else 0


def scan_with_ray(units: list[CorpusUnit], config: IndexConfig, searcher: Searcher, partial: Path, total: Accumulator,
                  progress: Callable[[int], None] | None = None) -> tuple[ReadStats, int, int]:
    """Scan ``units`` as Ray tasks, save each shard in ``partial``, merge all into ``total`` in corpus order.

    Uses the Ray instance this process is already connected to, else the cluster at
    ``RAY_ADDRESS``, else a local instance with ``config.workers`` CPUs; it disconnects
    (and stops a local instance) only if it connected. At most ``config.workers``
    tasks run at once. Returns the corpus read stats, the number of shards and the
    number reused from ``partial``.
    """
    connection = RayConnection()
    ray = connection.start_local(config.workers)
    task = ray.remote(num_cpus=1, num_gpus=_gpu_share(ray, searcher, config.workers))(_scan_unit)
    parts = max(1, min(MAX_PARTS, math.ceil(config.workers / max(1, len(units)))))
    done = _saved_shards(partial)
    searcher_ref = ray.put(searcher)
    pending = [(u, part) for u in range(len(units)) for part in range(parts)]  # submitted in corpus order
    running: dict = {}  # generator -> unit
    batches: dict[tuple[int, int], dict[int, tuple]] = {}  # (unit, shard) -> batch index -> result
    ready: dict[tuple[int, int], tuple | None] = {}  # finished shards not merged yet (None: saved before)
    finished: set[tuple[int, int]] = set()  # (a retried task may send a shard's messages again)
    n_shards: dict[int, int] = {}
    unit_stats: dict[int, dict] = {}
    cursor = [0, 0]  # the next (unit, shard) to merge into total
    shards_total = shards_resumed = 0
    try:
        while pending or running:
            while pending and len(running) < config.workers:
                u, part = pending.pop(0)
                running[task.remote(u, units[u], config, searcher_ref, part, parts, done.get(u, frozenset()))] = u
            gen = ray.wait(list(running), num_returns=1)[0][0]
            try:
                message = _get(ray, next(gen))
            except StopIteration:
                del running[gen]
                continue
            u, kind = running[gen], message[0]
            if kind in ("batch", "resumed") and (u, message[1]) in finished:
                continue
            if kind == "batch":
                _, shard, i, n, result = message
                key = (u, shard)
                batches.setdefault(key, {})[i] = result
                if len(batches[key]) == n:  # every batch of the shard is in: merge them in order, save
                    acc = Accumulator(np.zeros_like(total.counts), config.max_locations, semantic_k=total.semantic_k)
                    for j in range(n):
                        acc.add(*batches[key][j])
                    del batches[key]
                    acc.save(partial / f"shard-{u}-{shard}.json", ReadStats())
                    ready[key] = acc.result()
                    finished.add(key)
                    shards_total += 1
                if progress:
                    progress(result[4])
            elif kind == "resumed":
                _, shard, chars = message
                ready[(u, shard)] = None
                finished.add((u, shard))
                shards_total += 1
                shards_resumed += 1
                if progress:
                    progress(chars)
            else:  # "end"
                if message[2] is not None:
                    n_shards[u], unit_stats[u] = message[1], message[2]
            _merge_ready(cursor, ready, n_shards, total, partial)
    finally:
        for gen in running:  # after an error or an interruption: stop the tasks still running
            with contextlib.suppress(Exception):
                ray.cancel(gen, force=True)
        connection.close()
    if cursor[0] != len(units):
        raise RuntimeError(f"Ray tasks ended before unit {cursor[0]} shard {cursor[1]} was scanned")
    stats = ReadStats()
    for u in range(len(units)):
        s = unit_stats[u]
        stats.read += s["read"]
        stats.skipped += s["skipped"]
        stats.examples.extend(s["skip_examples"][: MAX_SKIP_EXAMPLES - len(stats.examples)])
    return stats, shards_total, shards_resumed


def _merge_ready(cursor: list[int], ready: dict, n_shards: dict[int, int], total: Accumulator, partial: Path) -> None:
    """Merge into ``total`` every finished shard that is next in corpus order."""
    while True:
        u, shard = cursor
        if (u, shard) in ready:
            result = ready.pop((u, shard))
            if result is None:
                total.add_saved(partial / f"shard-{u}-{shard}.json")
            else:
                total.add(*result)
            cursor[1] += 1
        elif n_shards.get(u) == shard:  # the unit is complete
            cursor[0], cursor[1] = u + 1, 0
        else:
            return


def _saved_shards(partial: Path) -> dict[int, frozenset[int]]:
    """Unit -> shards already saved in ``partial`` (by this or a one-machine run of the same plan)."""
    saved: dict[int, set[int]] = {}
    for p in partial.iterdir():
        if m := re.fullmatch(r"shard-(\d+)-(\d+)\.json", p.name):
            saved.setdefault(int(m[1]), set()).add(int(m[2]))
    return {u: frozenset(s) for u, s in saved.items()}


def _get(ray, ref):
    """``ray.get``, re-raising a contaudit error from a task as itself (one line for the CLI)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(getattr(e, "cause", None), ContauditError):
            raise e.cause from None
        raise
