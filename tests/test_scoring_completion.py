"""Greedy batched completion against ``model.generate`` run one item at a time."""

from __future__ import annotations

import pytest
import torch

from contaudit.scoring.completion import completion_metrics, greedy_continue, levenshtein
from tiny_models import build_tiny_model, build_tiny_tokenizer, tiny_corpus

CPU = torch.device("cpu")


TOKENIZER = build_tiny_tokenizer()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    m = build_tiny_model(request.param, vocab_size=len(TOKENIZER), n_positions=256)
    m.generation_config.eos_token_id = None  # generate exactly max_new_tokens, like the engine
    m.generation_config.pad_token_id = 0
    return m


@pytest.fixture(scope="module")
def prompts():
    """Prompts of 2 to ~60 tokens (context token first) and how many tokens each wants."""
    lines = tiny_corpus(30, seed=2)
    texts = [" ".join(lines[i:i + 1 + i % 5]) for i in range(14)]
    ids = [[0] + t for t in TOKENIZER(texts, add_special_tokens=False)["input_ids"]]
    ids[3] = ids[3][:2]  # a one-token prefix
    n_new = [1 + (i * 5) % 13 for i in range(len(ids))]
    return ids, n_new


def generate_one(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False, num_beams=1)
    return out[0, len(prompt):].tolist()


def run_engine(model, ids, n_new, budget):
    got, n_batches = {}, 0
    for batch, continuations, _ in greedy_continue(model, ids, n_new, batch_tokens=budget, device=CPU, pad_id=0):
        n_batches += 1
        got.update(zip(batch, continuations))
    return got, n_batches


def test_batched_greedy_equals_generate_one_at_a_time(model, prompts):
    ids, n_new = prompts
    got, n_batches = run_engine(model, ids, n_new, budget=400)
    assert n_batches < len(ids) // 2  # left-padded batches of several prompts
    for i, prompt in enumerate(ids):
        assert len(got[i]) == n_new[i]
        assert got[i] == generate_one(model, prompt, n_new[i]), f"prompt {i}"


def test_unbatched_equals_batched(model, prompts):
    ids, n_new = prompts
    batched, _ = run_engine(model, ids, n_new, budget=10_000)
    single, n_single = run_engine(model, ids, n_new, budget=1)
    assert n_single == len(ids)
    assert batched == single


def test_completion_metrics_hand_examples():
    assert completion_metrics([1, 2, 3, 4], [1, 2, 3, 4]) == {
        "suffix_tokens": 4, "exact_match": 1, "token_match_frac": 1.0, "lcp_tokens": 4, "edit_similarity": 1.0}
    m = completion_metrics([1, 2, 9, 4], [1, 2, 3, 4])
    assert (m["exact_match"], m["token_match_frac"], m["lcp_tokens"], m["edit_similarity"]) == (0, 0.75, 2, 0.75)
    shifted = completion_metrics([0, 1, 2, 3], [1, 2, 3, 4])  # one insertion + one deletion
    assert shifted["token_match_frac"] == 0.0 and shifted["lcp_tokens"] == 0
    assert shifted["edit_similarity"] == pytest.approx(0.5)


@pytest.mark.parametrize("a,b,d", [([], [], 0), ([1], [], 1), ([1, 2, 3], [1, 3], 1), ([1, 2, 3], [3, 2, 1], 2),
                                   ([5, 5, 5, 5], [5, 5], 2)])
def test_levenshtein(a, b, d):
    assert levenshtein(a, b) == d == levenshtein(b, a)
