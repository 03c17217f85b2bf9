"""Per-item likelihood metrics from one forward pass per item (or per window).

For each text token t_i the model gives log p(t_i | t_<i) and, for Min-K%++, the mean
and variance of log p(x) over the whole next-token distribution x ~ p(. | t_<i). From
those the per-item metrics follow (:func:`likelihood_metrics`).

Speed without changing a score:

- rows are right-padded and run without an attention mask: a causal model never lets
  a real token attend to a later (padding) position, so padding cannot change a score;
- the model body gives hidden states (B, T, H); the output head runs only on the
  positions that predict a scored token, in blocks, so no (B, T, V) logits tensor
  exists and padding costs no head FLOPs; models whose head is not a plain linear
  layer after the body (soft-capped logits, scaled logits) are detected at load time
  and use the model's own logits instead;
- log-softmax statistics are taken in float32 over small row chunks that stay in
  cache, never over a full-vocabulary float32 tensor of the batch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from contaudit.scoring.batching import pack_batches
from contaudit.scoring.parallel import run_batches

MIN_K_PERCENTS = (10, 20)
VAR_FLOOR = 1e-12  # a one-hot next-token distribution has zero variance


def plan_windows(n_ids: int, *, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(start, end, first_target)`` over a sequence of ``n_ids`` token ids.

    Position 0 is context only; targets 1..n_ids-1 are each scored exactly once. The
    first window is ``[0, max_length)``; each later window ends ``stride`` tokens
    further and is ``max_length`` long, scoring only its last ``stride`` tokens, so
    every token after the first window sees at least ``max_length - stride`` tokens of
    context. An item that fits (``n_ids <= max_length``) is one window: a full pass.

    >>> plan_windows(10, max_length=6, stride=2)
    [(0, 6, 1), (2, 8, 6), (4, 10, 8)]
    """
    if not 1 <= stride < max_length:
        raise ValueError(f"stride must be in [1, max_length - 1], got stride={stride}, max_length={max_length}")
    end = min(n_ids, max_length)
    windows = [(0, end, 1)]
    while end < n_ids:
        new_end = min(n_ids, end + stride)
        windows.append((new_end - max_length, new_end, end))
        end = new_end
    return windows


def next_token_stats(logits: torch.Tensor, targets: torch.Tensor, *, chunk_rows: int) -> torch.Tensor:
    """Per row: log p(target), E[log p] and Var[log p] under softmax(logits), in float32.

    ``logits`` is (n, V) in any dtype; rows are converted to float32 ``chunk_rows`` at a
    time (float32 ``logits`` are overwritten in place). Returns a float32 tensor (n, 3).
    """
    out = torch.empty(logits.shape[0], 3, dtype=torch.float32, device=logits.device)
    for a in range(0, logits.shape[0], chunk_rows):
        z = logits[a:a + chunk_rows].float()  # (c, V); a view when logits are float32 already
        z.sub_(z.amax(-1, keepdim=True))  # centred logits, max 0
        p = torch.exp(z)
        s = p.sum(-1, keepdim=True)
        p.div_(s)  # softmax
        log_s = s.log_().squeeze(-1)  # (c,) logsumexp of centred logits
        out[a:a + chunk_rows, 0] = z.gather(-1, targets[a:a + chunk_rows, None]).squeeze(-1) - log_s
        ez = p.mul_(z).sum(-1)  # E[z]
        ez2 = p.mul_(z).sum(-1)  # E[z^2]
        out[a:a + chunk_rows, 1] = ez - log_s  # E[log p] = E[z] - logsumexp
        out[a:a + chunk_rows, 2] = (ez2 - ez * ez).clamp_min_(0.0)  # Var[log p] = Var[z]
    return out


class NextTokenScorer:
    """Runs a causal LM on right-padded rows and scores the selected positions.

    ``block_elems`` bounds the logits computed at once (rows x vocabulary), and
    ``chunk_elems`` the float32 working set of the statistics.
    """

    def __init__(self, model: torch.nn.Module, *, block_elems: int, chunk_elems: int):
        self.model = model
        head = model.get_output_embeddings()
        self.vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
        self.block_rows = max(1, block_elems // self.vocab)
        self.chunk_rows = max(1, chunk_elems // self.vocab)
        self.body, self.head = split_head(model)

    @property
    def split(self) -> bool:
        """True when the head runs on selected positions only."""
        return self.body is not None

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """Stats (n, 3) for the positions ``select`` (B, T-1) that predict ``ids[:, 1:]``."""
        targets = ids[:, 1:][select]  # (n,)
        if self.body is not None:
            hidden = self.body(input_ids=ids, use_cache=False)[0]  # (B, T, H)
            rows = hidden[:, :-1][select]  # (n, H): only positions that predict a scored token
            blocks = (self.head(rows[a:a + self.block_rows]) for a in range(0, rows.shape[0], self.block_rows))
        else:
            logits = self.model(input_ids=ids, use_cache=False).logits  # (B, T, V) in the model's dtype
            b_idx, t_idx = select.nonzero(as_tuple=True)
            blocks = (logits[b_idx[a:a + self.block_rows], t_idx[a:a + self.block_rows]]
                      for a in range(0, b_idx.shape[0], self.block_rows))
        parts = []
        start = 0
        for z in blocks:  # (r, V)
            parts.append(next_token_stats(z, targets[start:start + z.shape[0]], chunk_rows=self.chunk_rows))
            start += z.shape[0]
        return torch.cat(parts) if parts else torch.empty(0, 3)


def split_head(model: torch.nn.Module) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
    """``(body, head)`` when ``head(body(ids)[0])`` reproduces the model's logits, else ``(None, None)``.

    Checked on a short sequence, so a model that scales or soft-caps its logits (or
    otherwise post-processes them) falls back to its own forward.
    """
    head = model.get_output_embeddings()
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(head, torch.nn.Linear) or not isinstance(body, torch.nn.Module) or body is model:
        return None, None
    device = head.weight.device
    ids = (torch.arange(1, 9, device=device) * 7919 % head.weight.shape[0])[None, :]  # (1, 8)
    try:
        with torch.inference_mode():
            ref = model(input_ids=ids, use_cache=False).logits.float()
            alt = head(body(input_ids=ids, use_cache=False)[0]).float()
    except Exception:  # a body that wants other arguments: use the model's own forward
        return None, None
    scale = max(1.0, ref.abs().max().item())
    if alt.shape != ref.shape or not torch.allclose(alt, ref, rtol=1e-3, atol=1e-3 * scale):
        return None, None
    return body, head


@dataclass
class Row:
    """One forward-pass row: token ids and the first position scored in it."""

    key: object  # the caller's tag, e.g. (item, window number)
    ids: list[int]
    first_target: int  # row-local index of the first scored token (>= 1)


def score_rows(scorer: NextTokenScorer, rows: list[Row], *, batch_tokens: int, device: torch.device,
               pad_id: int = 0, workers: int = 1) -> Iterator[tuple[list[Row], list[np.ndarray], int]]:
    """Run ``rows`` in length-sorted batches under ``batch_tokens`` (padded tokens).

    Yields ``(rows, stats, n_scored)`` per batch, in the order batches finish:
    ``stats[j]`` is a float32 array (n_j, 3) of (log-prob, mean, variance) for the
    scored tokens of ``rows[j]``. ``workers`` > 1 runs batches on that many
    single-threaded CPU workers (:mod:`contaudit.scoring.parallel`).
    """

    def run(batch: list[int]) -> tuple[list[np.ndarray], int]:
        group = [rows[i] for i in batch]
        width = len(group[0].ids)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        select = torch.zeros(len(group), width - 1, dtype=torch.bool)
        counts = []
        for j, row in enumerate(group):
            ids[j, :len(row.ids)] = torch.tensor(row.ids)
            select[j, row.first_target - 1:len(row.ids) - 1] = True
            counts.append(len(row.ids) - row.first_target)
        stats = scorer(ids.to(device), select.to(device)).cpu().numpy()
        return np.split(stats, np.cumsum(counts)[:-1]), sum(counts)

    batches = pack_batches([len(r.ids) for r in rows], batch_tokens)
    for batch, (stats, n) in run_batches(batches, run, workers=workers):
        yield [rows[i] for i in batch], stats, n


def min_k(values: np.ndarray, percent: int) -> float:
    """Mean of the lowest ``percent`` % of ``values`` (at least one value)."""
    k = max(1, int(len(values) * percent / 100))
    return float(np.mean(np.partition(values, k - 1)[:k]))


def byte_metrics(metrics: dict, text: str) -> dict:
    """``metrics`` with ``n_bytes`` and ``nll_per_byte`` set from ``text``.

    - ``n_bytes``: UTF-8 byte length of ``text`` (the string that was tokenized);
    - ``nll_per_byte``: total NLL of the scored tokens in nats / ``n_bytes``, where the
      total is ``nll_mean * n_tokens`` (``n_tokens`` is the number of scored tokens).

    Derived from ``nll_mean`` and ``n_tokens`` alone, so a score cached before these
    fields existed gains them, with the bits a fresh score gets. Tokenizer-independent,
    unlike ``nll_mean``: divide by ``ln 2`` for bits per byte.

    >>> byte_metrics({"n_tokens": 2, "nll_mean": 3.0}, "né")
    {'n_tokens': 2, 'nll_mean': 3.0, 'n_bytes': 3, 'nll_per_byte': 2.0}
    """
    n_bytes = len(text.encode("utf-8"))
    if n_bytes == 0:
        raise ValueError("`text` must not be empty: nll_per_byte divides by its UTF-8 byte count")
    return {**metrics, "n_bytes": n_bytes, "nll_per_byte": metrics["nll_mean"] * metrics["n_tokens"] / n_bytes}


def likelihood_metrics(stats: np.ndarray, text: str) -> dict:
    """Per-item metrics from per-token stats (N, 3) = (log-prob, mean, variance).

    ``stats`` has one row per scored token (every text token after the context token;
    windows joined), and ``text`` is the string that was tokenized.

    - ``n_tokens``: scored tokens, N;
    - ``nll_mean``: mean negative log-likelihood, nats per token; ``ppl = exp(nll_mean)``;
    - ``mink_K``: mean of the lowest K % token log-probs (Shi et al. 2024);
    - ``minkpp_K``: the same over (log p - mu) / sigma, mu and sigma^2 the mean and
      variance of log p under the model's next-token distribution (Zhang et al. 2024);
    - ``zlib_ratio``: total NLL (nats) / zlib-compressed UTF-8 byte length of the text;
    - ``n_bytes``, ``nll_per_byte``: UTF-8 bytes of the text and total NLL per byte
      (:func:`byte_metrics`).
    """
    stats = stats.astype(np.float64)
    logprob, mean, var = stats[:, 0], stats[:, 1], stats[:, 2]
    nll = float(-logprob.sum())
    standardized = (logprob - mean) / np.sqrt(np.maximum(var, VAR_FLOOR))
    out = {"n_tokens": int(len(logprob)), "nll_mean": nll / len(logprob)}
    out["ppl"] = math.exp(min(out["nll_mean"], 700.0))
    for k in MIN_K_PERCENTS:
        out[f"mink_{k}"] = min_k(logprob, k)
    for k in MIN_K_PERCENTS:
        out[f"minkpp_{k}"] = min_k(standardized, k)
    out["zlib_ratio"] = nll / len(zlib.compress(text.encode("utf-8")))
    return byte_metrics(out, text)
