"""Single-threaded CPU workers: same scores as one thread, errors surface, threads restored."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from contaudit.scoring.completion import greedy_continue
from contaudit.scoring.likelihood import NextTokenScorer, Row, score_rows
from contaudit.scoring.parallel import run_batches, stateless_forward
from tiny_models import build_tiny_model, build_tiny_tokenizer, tiny_corpus

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model("llama", vocab_size=len(tokenizer), n_positions=256)
    lines = tiny_corpus(40, seed=4)
    ids = [[1] + t for t in tokenizer([" ".join(lines[i:i + 1 + i % 6]) for i in range(30)],
                                      add_special_tokens=False)["input_ids"]]
    return model, ids


def test_workers_give_the_scores_of_one_thread(setup):
    model, ids = setup
    scorer = NextTokenScorer(model, block_elems=1 << 14, chunk_elems=1 << 10)
    rows = [Row(i, x, 1) for i, x in enumerate(ids)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {r.key: s for g, st, _ in score_rows(scorer, rows, batch_tokens=200, device=CPU) for r, s in zip(g, st)}
    finally:
        torch.set_num_threads(before)
    parallel = {r.key: s for g, st, _ in score_rows(scorer, rows, batch_tokens=200, device=CPU, workers=3)
                for r, s in zip(g, st)}
    assert parallel.keys() == single.keys() == set(range(len(ids)))
    for key in single:
        np.testing.assert_array_equal(parallel[key], single[key])  # each batch ran on one thread either way
    assert torch.get_num_threads() == before


def test_workers_give_the_completions_of_one_thread(setup):
    model, ids = setup
    n_new = [3 + i % 5 for i in range(len(ids))]
    single = dict(item for b, c, _ in greedy_continue(model, ids, n_new, batch_tokens=300, device=CPU)
                  for item in zip(b, c))
    parallel = dict(item for b, c, _ in greedy_continue(model, ids, n_new, batch_tokens=300, device=CPU, workers=2)
                    for item in zip(b, c))
    assert parallel == single


def test_worker_error_is_raised_in_the_caller():
    def fail_on_three(task):
        if task == 3:
            raise ValueError("task 3 is bad")
        return task

    with pytest.raises(ValueError, match="task 3 is bad"):
        list(run_batches(range(8), fail_on_three, workers=2))


def test_closing_early_stops_the_workers_and_restores_threads():
    before = torch.get_num_threads()
    started = []

    def slow(task):
        started.append(task)
        time.sleep(0.01)
        return task * 2

    results = run_batches(range(100), slow, workers=2)
    assert next(results)[1] in (0, 2)
    results.close()
    assert len(started) < 10
    assert not [t for t in threading.enumerate() if t.name.startswith("contaudit-score")]
    assert torch.get_num_threads() == before
    assert sorted(r for _, r in run_batches(range(5), slow, workers=1)) == [0, 2, 4, 6, 8]


def test_models_with_state_in_forward_run_in_one_worker():
    model = build_tiny_model("gpt2", vocab_size=64)
    assert stateless_forward(model)
    model.model_rope = torch.nn.Module()
    model.model_rope.rope_type = "dynamic"  # rotary frequencies rewritten by sequence length
    assert not stateless_forward(model)
