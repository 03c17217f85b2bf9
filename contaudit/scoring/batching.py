"""Packing sequences into batches under a token budget.

Sequences are sorted longest first and cut greedily into batches whose padded size
(rows x longest row) stays within the budget, so padding is small and long sequences
run alone. A sequence longer than the budget gets a batch of its own.
"""

from __future__ import annotations


def pack_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of padded size <= ``budget``.

    >>> pack_batches([3, 10, 4, 9], budget=20)
    [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        longest = max(lengths[order[start]], 1)
        size = max(1, budget // longest)
        batches.append(order[start:start + size])
        start += size
    return batches
