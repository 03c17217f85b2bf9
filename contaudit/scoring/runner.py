"""Running planned batches on one model in this process: :class:`LocalRunner`.

The engine (:mod:`contaudit.scoring.engine`) plans the batches and drives a runner;
each model replica (:mod:`contaudit.scoring.replicas`) holds a :class:`LocalRunner`
too, so a batch runs with the same code wherever it runs. On CPU the runner uses
single-threaded workers when that is safe (:func:`cpu_workers`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from contaudit.models import LoadedModel
from contaudit.scoring.completion import greedy_continue
from contaudit.scoring.likelihood import NextTokenScorer, Row, score_rows
from contaudit.scoring.parallel import stateless_forward

# Logits computed at once (rows x vocabulary) and the float32 working set of the statistics.
LOGIT_BLOCK_ELEMS = {"cpu": 1 << 24, "cuda": 1 << 27}
STATS_CHUNK_ELEMS = {"cpu": 1 << 19, "cuda": 1 << 27}
# Below this many parameters the default is one thread (measured: a 30k-parameter GPT-2
# ran 0.35x as fast with two workers as with one thread; SmolLM2-135M as fast or faster).
TINY_MODEL_PARAMS = 10_000_000


def cpu_workers(threads: int | None, model: torch.nn.Module, device: torch.device,
                available: int) -> tuple[int, int]:
    """``(workers, intra-op threads)``: one single-threaded worker per thread when safe.

    ``threads`` is the setting (None: ``available``, torch's thread count or a
    replica's share of it). By default a tiny model runs on one thread: its ops are
    too short for workers to run them side by side (they queue on Python's interpreter
    lock) or for intra-op threads to pay off.
    """
    if device.type != "cpu":
        return 1, available
    if threads is None and sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMS:
        return 1, 1
    threads = threads or available
    if threads > 1 and stateless_forward(model):
        return threads, 1
    return 1, threads


class _HiddenOn:
    """A model body whose hidden states come back on ``device`` (a model split across devices
    ends its body on the last one; the scorer selects positions where its inputs are)."""

    def __init__(self, body, device: torch.device):
        self.body, self.device = body, device

    def __call__(self, **kwargs):
        return (self.body(**kwargs)[0].to(self.device),)


def make_scorer(loaded: LoadedModel) -> NextTokenScorer:
    """The likelihood scorer of ``loaded`` with the block sizes of its device."""
    kind = loaded.device.type
    scorer = NextTokenScorer(loaded.model, block_elems=LOGIT_BLOCK_ELEMS.get(kind, 1 << 24),
                             chunk_elems=STATS_CHUNK_ELEMS.get(kind, 1 << 19))
    if loaded.devices and scorer.body is not None:
        scorer.body = _HiddenOn(scorer.body, loaded.device)
    return scorer


class LocalRunner:
    """Runs batches on one model in this process (on CPU on ``workers`` worker threads).

    The interface :func:`score` drives, also implemented by the replica pools of
    :mod:`contaudit.scoring.replicas`; each method yields batches as they finish.
    """

    def __init__(self, loaded: LoadedModel, *, threads: int | None, available: int | None = None):
        self.loaded = loaded
        self.scorer = make_scorer(loaded)
        available = available or torch.get_num_threads()
        self.workers, self.intra_op = cpu_workers(threads, loaded.model, loaded.device, available)
        device = "+".join(loaded.devices) if loaded.devices else str(loaded.device)
        self.facts = {"head_on_scored_positions_only": self.scorer.split, "cpu_workers": self.workers,
                      "threads_per_worker": self.intra_op, "replicas": 1, "devices_used": [device]}
        placement = getattr(loaded.model, "contaudit_placement", None)
        if placement is not None:
            self.facts["placement"] = {name: loaded.devices[d] + ("" if loaded.devices[d] != "cpu" else f"#{d}")
                                       for name, d in placement.items()}

    def likelihood(self, rows: list[Row], *, batch_tokens: int, pad_id: int,
                   workers: int | None = None) -> Iterator[tuple[list[Row], list[np.ndarray], int]]:
        """``(rows, stats, n_scored)`` per batch, as :func:`~contaudit.scoring.likelihood.score_rows`."""
        return score_rows(self.scorer, rows, batch_tokens=batch_tokens, device=self.loaded.device, pad_id=pad_id,
                          workers=self.workers if workers is None else workers)

    def complete(self, prompts: list[list[int]], n_new: list[int], *, batch_tokens: int, pad_id: int,
                 max_positions: int | None, workers: int | None = None
                 ) -> Iterator[tuple[list[int], list[list[int]], int]]:
        """``(indices, continuations, n)`` per batch, as :func:`~contaudit.scoring.completion.greedy_continue`."""
        return greedy_continue(self.loaded.model, prompts, n_new, batch_tokens=batch_tokens, device=self.loaded.device,
                               pad_id=pad_id, workers=self.workers if workers is None else workers,
                               max_positions=max_positions)

    @contextlib.contextmanager
    def running(self):
        """Torch's intra-op threads set for this runner while scoring, restored after."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.intra_op)
        try:
            yield self
        finally:
            torch.set_num_threads(before)
