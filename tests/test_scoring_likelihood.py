"""Likelihood metrics on tiny random-init GPT-2 and Llama models built in code."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from contaudit.scoring.likelihood import (NextTokenScorer, Row, byte_metrics, likelihood_metrics, min_k,
                                          next_token_stats, plan_windows, score_rows)
from tiny_models import build_tiny_model, build_tiny_tokenizer, tiny_corpus

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request, tokenizer):
    return build_tiny_model(request.param, vocab_size=len(tokenizer), n_positions=256)


@pytest.fixture(scope="module")
def sequences(tokenizer):
    """Token ids of varied lengths (3 to ~120), each starting with a context token."""
    lines = tiny_corpus(40, seed=1)
    texts = [" ".join(lines[i:i + 1 + i % 8]) for i in range(24)]
    return [[0] + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def scorer_for(model, **kw):
    return NextTokenScorer(model, block_elems=kw.get("block_elems", 1 << 14), chunk_elems=kw.get("chunk_elems", 1 << 10))


def stats_by_row(model, rows, budget, **kw):
    scorer = scorer_for(model, **kw)
    out, n_batches = {}, 0
    for group, stats, _ in score_rows(scorer, rows, batch_tokens=budget, device=CPU):
        n_batches += 1
        for row, s in zip(group, stats):
            out[row.key] = s
    return out, n_batches


def reference_stats(model, ids: list[int], first_target: int = 1) -> np.ndarray:
    """(log p(target), E[log p], Var[log p]) from the model's own logits, in float64, unbatched."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()  # (T, V)
    logp = torch.log_softmax(logits, -1)[:-1]  # position t predicts ids[t + 1]
    probs = logp.exp()
    target = logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    mu = (probs * logp).sum(-1)
    var = (probs * logp ** 2).sum(-1) - mu ** 2
    return torch.stack([target, mu, var], -1)[first_target - 1:].numpy()


def test_batched_scores_equal_one_at_a_time(model, sequences):
    rows = [Row(i, ids, 1) for i, ids in enumerate(sequences)]
    batched, n_batches = stats_by_row(model, rows, budget=512)
    single, n_single = stats_by_row(model, rows, budget=1)
    assert n_batches < len(rows) // 3  # batches really held several padded rows
    assert n_single == len(rows)
    for i, ids in enumerate(sequences):
        assert batched[i].shape == (len(ids) - 1, 3)
        assert np.abs(batched[i] - single[i]).max() < 1e-4
        assert np.abs(batched[i] - reference_stats(model, ids)).max() < 1e-4


def test_item_metrics_batched_equal_unbatched(model, sequences, tokenizer):
    rows = [Row(i, ids, 1) for i, ids in enumerate(sequences)]
    batched, _ = stats_by_row(model, rows, budget=2048)
    single, _ = stats_by_row(model, rows, budget=1)
    for i in range(len(sequences)):
        text = tokenizer.decode(sequences[i][1:])
        a, b = likelihood_metrics(batched[i], text), likelihood_metrics(single[i], text)
        assert a.keys() == b.keys()
        for name in a:
            assert abs(a[name] - b[name]) <= 1e-4 * max(1.0, abs(b[name])), name


def test_head_fallback_equals_split_head(model, sequences):
    rows = [Row(i, ids, 1) for i, ids in enumerate(sequences)]
    split, _ = stats_by_row(model, rows, budget=512)
    scorer = scorer_for(model)
    assert scorer.split
    scorer.body = scorer.head = None  # what a soft-capped model gets: its own logits
    fallback = {}
    for group, stats, _ in score_rows(scorer, rows, batch_tokens=512, device=CPU):
        fallback.update({row.key: s for row, s in zip(group, stats)})
    for i in split:
        assert np.abs(split[i] - fallback[i]).max() < 1e-4


def test_softcapped_logits_are_detected():
    model = build_tiny_model("gpt2", vocab_size=64)
    original = model.forward

    def capped(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out

    model.forward = capped
    assert not scorer_for(model).split


def test_sliding_window_equals_full_pass_when_item_fits(model, sequences):
    ids = max(sequences, key=len)
    assert plan_windows(len(ids), max_length=len(ids), stride=7) == [(0, len(ids), 1)]
    windows = plan_windows(len(ids), max_length=len(ids), stride=7)
    rows = [Row(w, ids[s:e], f - s) for w, (s, e, f) in enumerate(windows)]
    stats, _ = stats_by_row(model, rows, budget=4096)
    assert np.abs(stats[0] - reference_stats(model, ids)).max() < 1e-4


def test_sliding_window_scores_each_token_once_with_its_window_context(model, sequences):
    ids = max(sequences, key=len)
    max_length, stride = 40, 16
    windows = plan_windows(len(ids), max_length=max_length, stride=stride)
    assert len(windows) > 2
    rows = [Row(w, ids[s:e], f - s) for w, (s, e, f) in enumerate(windows)]
    stats, _ = stats_by_row(model, rows, budget=100)
    joined = np.concatenate([stats[w] for w in range(len(windows))])
    assert joined.shape[0] == len(ids) - 1  # every token after the context token, once
    for w, (s, e, f) in enumerate(windows):
        assert e - s <= max_length
        assert w == 0 or f - s >= max_length - stride  # later windows keep max_length - stride of context
        assert np.abs(stats[w] - reference_stats(model, ids[s:e], f - s)).max() < 1e-4


@pytest.mark.parametrize("n_ids,max_length,stride", [(2, 8, 4), (8, 8, 4), (9, 8, 4), (100, 8, 7), (100, 9, 1)])
def test_windows_cover_every_target_once(n_ids, max_length, stride):
    covered = []
    for start, end, first in plan_windows(n_ids, max_length=max_length, stride=stride):
        assert 0 <= start < first <= end <= n_ids and end - start <= max_length
        covered.extend(range(first, end))
    assert covered == list(range(1, n_ids))


def test_stride_must_leave_context():
    with pytest.raises(ValueError, match="stride must be in"):
        plan_windows(10, max_length=8, stride=8)


def test_minkpp_equals_direct_reference(model, sequences, tokenizer):
    ids = sequences[5]
    stats, _ = stats_by_row(model, [Row(0, ids, 1)], budget=4096)
    metrics = likelihood_metrics(stats[0], tokenizer.decode(ids[1:]))
    # Direct computation, following the Min-K%++ reference code (Zhang et al. 2024), in float64.
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    probs, log_probs = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
    token_log_probs = log_probs.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    mu = (probs * log_probs).sum(-1)
    sigma = (probs * torch.square(log_probs)).sum(-1) - torch.square(mu)
    mink_plus = ((token_log_probs - mu) / sigma.sqrt()).numpy()
    for k in (10, 20):
        k_length = max(1, int(len(mink_plus) * k / 100))
        expected = np.mean(np.sort(mink_plus)[:k_length])
        assert metrics[f"minkpp_{k}"] == pytest.approx(expected, abs=1e-4)
        expected_mink = np.mean(np.sort(token_log_probs.numpy())[:k_length])
        assert metrics[f"mink_{k}"] == pytest.approx(expected_mink, abs=1e-4)


def test_metric_definitions_against_hand_values():
    logprob = np.array([-1.0, -2.0, -3.0, -4.0, -0.5, -0.25, -6.0, -1.5, -2.5, -3.5])
    stats = np.stack([logprob, logprob - 1.0, np.full(10, 4.0)], axis=1)
    text = "hello hello hello"
    m = likelihood_metrics(stats, text)
    assert m["n_tokens"] == 10
    assert m["nll_mean"] == pytest.approx(2.425)
    assert m["ppl"] == pytest.approx(math.exp(2.425))
    assert m["mink_10"] == pytest.approx(-6.0)  # lowest 1 of 10
    assert m["mink_20"] == pytest.approx(-5.0)  # mean of -6 and -4
    assert m["minkpp_10"] == pytest.approx(0.5)  # (lp - (lp - 1)) / 2 for every token
    assert m["zlib_ratio"] == pytest.approx(24.25 / len(zlib.compress(text.encode())))
    assert m["n_bytes"] == 17
    assert m["nll_per_byte"] == pytest.approx(24.25 / 17)  # total NLL / UTF-8 bytes


@pytest.mark.parametrize("text,n_bytes", [("plain ascii text", 16), ("naïve café", 12), ("東京 data", 11),
                                          ("emoji 🙂!", 11)])
def test_n_bytes_counts_utf8_bytes_not_characters(text, n_bytes):
    stats = np.stack([np.full(4, -2.0), np.full(4, -3.0), np.ones(4)], axis=1)
    m = likelihood_metrics(stats, text)
    assert m["n_bytes"] == n_bytes == len(text.encode("utf-8"))
    assert m["nll_per_byte"] == pytest.approx(8.0 / n_bytes, rel=1e-12)


def test_byte_metrics_fill_a_score_cached_before_them_with_the_same_bits():
    stats = np.stack([-np.linspace(0.1, 7.3, 13), np.full(13, -4.0), np.ones(13)], axis=1)
    fresh = likelihood_metrics(stats, "é" * 9)
    old = {k: v for k, v in fresh.items() if k not in ("n_bytes", "nll_per_byte")}  # a cache entry from before
    assert byte_metrics(old, "é" * 9) == fresh and list(byte_metrics(old, "é" * 9)) == list(fresh)
    assert byte_metrics(fresh, "é" * 9) == fresh  # idempotent on new entries


def test_byte_metrics_refuse_empty_text():
    with pytest.raises(ValueError, match="`text` must not be empty"):
        byte_metrics({"n_tokens": 1, "nll_mean": 1.0}, "")


def test_nll_per_byte_totals_every_scored_token_across_windows(model, sequences, tokenizer):
    ids = max(sequences, key=len)
    text = tokenizer.decode(ids[1:])
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    windows = plan_windows(len(ids), max_length=40, stride=16)
    assert len(windows) > 2
    stats, _ = stats_by_row(model, [Row(w, ids[s:e], f - s) for w, (s, e, f) in enumerate(windows)], budget=100)
    m = likelihood_metrics(np.concatenate([stats[w] for w in range(len(windows))]), text)
    want = -sum(float(reference_stats(model, ids[s:e], f - s)[:, 0].sum()) for s, e, f in windows)
    assert m["n_tokens"] == len(ids) - 1  # the text's tokens, not the context token
    assert m["nll_per_byte"] * m["n_bytes"] == pytest.approx(m["nll_mean"] * m["n_tokens"], rel=1e-12)
    assert m["nll_per_byte"] * m["n_bytes"] == pytest.approx(want, rel=1e-5)
    assert m["n_bytes"] == len(text.encode("utf-8"))


def test_min_k_keeps_at_least_one_token():
    assert min_k(np.array([-1.0, -3.0, -2.0]), 10) == -3.0


def test_next_token_stats_in_chunks_match_float64():
    torch.manual_seed(0)
    logits = torch.randn(37, 1000, dtype=torch.float64) * 4
    targets = torch.randint(0, 1000, (37,))
    got = next_token_stats(logits.float().clone(), targets, chunk_rows=5).double()
    logp = torch.log_softmax(logits, -1)
    mu = (logp.exp() * logp).sum(-1)
    var = (logp.exp() * logp ** 2).sum(-1) - mu ** 2
    want = torch.stack([logp.gather(-1, targets[:, None]).squeeze(-1), mu, var], -1)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
    half = next_token_stats(logits.bfloat16(), targets, chunk_rows=8)  # low-precision logits upcast per chunk
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
