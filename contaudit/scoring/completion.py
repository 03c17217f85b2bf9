"""Verbatim completion: greedy continuation of each prefix, compared with the true suffix.

Prompts are left-padded into length-sorted batches under a token budget; one forward
pass over the prompts fills the KV cache, then each step feeds one token per row.
Position ids come from the attention mask, so a left-padded row sees exactly the
positions it would see alone. Decoding is plain argmax for exactly ``n_new`` tokens:
no end-of-sequence stop, no sampling, no repetition penalty.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import torch

from contaudit.scoring.batching import pack_batches
from contaudit.scoring.parallel import run_batches


def _accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def greedy_continue(model: torch.nn.Module, prompts: list[list[int]], n_new: list[int], *, batch_tokens: int,
                    device: torch.device, pad_id: int = 0, workers: int = 1, max_positions: int | None = None,
                    ) -> Iterator[tuple[list[int], list[list[int]], int]]:
    """Greedy continuations of ``prompts``, ``n_new[i]`` tokens for prompt ``i``.

    A batch decodes for its longest continuation; a row whose own continuation is done
    keeps decoding tokens that are thrown away, and with ``max_positions`` (the
    model's context) its position ids are clamped so they stay valid.

    Yields ``(indices, continuations, n_generated)`` per batch, in the order batches
    finish, where ``continuations[j]`` belongs to ``prompts[indices[j]]``. ``workers``
    > 1 runs batches on that many single-threaded CPU workers.
    """
    last_only = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    # transformers >= 5.3 names the KV cache `cache` (input and output); older releases `past_key_values`.
    cache_name = "cache" if _accepts(model, "cache") else "past_key_values"

    @torch.inference_mode()
    def run(batch: list[int]) -> tuple[list[list[int]], int]:
        width = max(len(prompts[i]) for i in batch)
        steps = max(n_new[i] for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for j, i in enumerate(batch):
            ids[j, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[j, width - len(prompts[i]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, P): 0 at each row's first real token
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_only)
        token = out.logits[:, -1].argmax(-1)  # (B,)
        generated = [token]
        cache = getattr(out, cache_name)
        position = positions[:, -1:]  # (B, 1)
        for _ in range(steps - 1):
            mask = torch.cat([mask, mask.new_ones(len(batch), 1)], dim=1)
            position = position + 1
            if max_positions is not None:
                position = position.clamp_max(max_positions - 1)  # only rows already finished reach it
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                        use_cache=True, **{cache_name: cache}, **last_only)
            cache = getattr(out, cache_name)
            token = out.logits[:, -1].argmax(-1)
            generated.append(token)
        tokens = torch.stack(generated, dim=1).tolist()  # (B, steps)
        return [tokens[j][:n_new[i]] for j, i in enumerate(batch)], sum(n_new[i] for i in batch)

    lengths = [len(p) + n for p, n in zip(prompts, n_new)]
    for batch, (continuations, n) in run_batches(pack_batches(lengths, batch_tokens), run, workers=workers):
        yield batch, continuations, n


def levenshtein(a: list[int], b: list[int]) -> int:
    """Edit distance (insertions, deletions, substitutions) between two token lists."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def completion_metrics(generated: list[int], reference: list[int]) -> dict:
    """Compare a greedy continuation with the reference suffix tokens.

    - ``exact_match``: 1 when every token matches, else 0;
    - ``token_match_frac``: fraction of positions where the tokens agree;
    - ``lcp_tokens``: length of the longest common prefix;
    - ``edit_similarity``: 1 - Levenshtein distance / max(length of the two).
    """
    n = len(reference)
    lcp = 0
    while lcp < min(n, len(generated)) and generated[lcp] == reference[lcp]:
        lcp += 1
    matches = sum(g == r for g, r in zip(generated, reference))
    longest = max(n, len(generated), 1)
    return {"suffix_tokens": n, "exact_match": int(generated == reference), "token_match_frac": matches / n,
            "lcp_tokens": lcp, "edit_similarity": 1.0 - levenshtein(generated, reference) / longest}
