"""CPU parallelism: one single-threaded worker per core, each running whole batches.

A multi-threaded op on a CPU waits at a barrier for its slowest thread after every
operation: on small matrices the threads spend much of their time synchronizing, and
on a shared machine, where another process holds a core, every op runs at the speed
of the descheduled thread. Independent workers, each running its own batch with one
intra-op thread, have neither cost (measured in ``docs/scoring.md``: faster than
torch's multi-threaded ops both on an idle and on a busy 2-core machine). Each batch
is computed by one thread exactly as it would be alone, so scores do not depend on
the number of workers.

Workers share the model's weights, so they are used only for models whose forward
pass keeps no state between calls: transformers' own architectures, without remote
code, without rotary embeddings that rescale themselves with the sequence length and
without accelerate's device hooks (a model split across devices).

Parallelism across processes, GPUs and machines (model replicas) is in
:mod:`contaudit.scoring.replicas`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
_STATEFUL_ROPE = ("dynamic", "longrope")  # rotary modules that rewrite inv_freq by sequence length
_POLL_SECONDS = 0.2


def stateless_forward(model: torch.nn.Module) -> bool:
    """True when concurrent forward passes of ``model`` cannot interfere with each other."""
    if not type(model).__module__.startswith("transformers.models."):
        return False  # remote code: no guarantee
    for module in model.modules():
        if hasattr(module, "_hf_hook"):
            return False  # accelerate's hooks (a model split across devices) note the input device per call
        rope = str(getattr(module, "rope_type", "") or "")
        if any(kind in rope for kind in _STATEFUL_ROPE):
            return False
    return True


def run_batches(tasks: Iterable[T], fn: Callable[[T], R], *, workers: int) -> Iterator[tuple[T, R]]:
    """Yield ``(task, fn(task))`` for every task, computed on ``workers`` threads.

    With ``workers <= 1`` the tasks run in order in the calling thread, with torch's
    thread setting untouched. Otherwise torch's intra-op threads are set to 1 while
    the workers run (restored afterwards), results come in the order they finish, and
    the first exception in a worker is raised here. Closing the iterator early stops
    the workers after their current task.
    """
    if workers <= 1:
        for task in tasks:
            yield task, fn(task)
        return
    source = iter(tasks)
    take = threading.Lock()
    stop = threading.Event()
    results: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            torch.set_num_threads(1)  # this thread's OpenMP setting too, not only the caller's
            with torch.inference_mode():
                while not stop.is_set():
                    with take:
                        task = next(source, _END)
                    if task is _END:
                        break
                    results.put((task, fn(task), None))
        except BaseException as e:  # handed to the caller, who re-raises it
            results.put((None, None, e))
        finally:
            results.put(_END)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    threads = [threading.Thread(target=work, daemon=True, name=f"contaudit-score-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            try:
                item = results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is _END:
                running -= 1
                continue
            task, result, error = item
            if error is not None:
                raise error
            yield task, result
    finally:
        stop.set()
        for t in threads:
            t.join()
        torch.set_num_threads(before)


_END = object()
