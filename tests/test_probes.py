"""Probe construction: SMD against hand values, matching, prefix/suffix split."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from contaudit.errors import InputError
from contaudit.index.store import CorpusIndex
from contaudit.probes import ProbeConfig, make_probes, match_pairs, split_probe, standardized_mean_difference


def test_smd_against_hand_computation():
    a, b = [1.0, 2.0, 3.0, 6.0], [2.0, 2.0, 5.0]
    var_a = sum((x - 3.0) ** 2 for x in a) / 3  # 14/3
    assert standardized_mean_difference(a, b) == pytest.approx(0.0)
    c = [4.0, 5.0, 6.0]
    expected = (3.0 - 5.0) / math.sqrt((var_a + 1.0) / 2)
    assert standardized_mean_difference(a, c) == pytest.approx(expected)
    assert math.isnan(standardized_mean_difference([1.0], c))
    assert standardized_mean_difference([2, 2], [2, 2]) == 0.0


def test_optimal_matching_beats_greedy_and_respects_caliper():
    # Greedy nearest-first would pair seen 10 with unseen 10 and leave seen 11 with 30.
    seen = np.array([[10.0], [11.0]])
    unseen = np.array([[10.5], [10.0], [30.0]])
    pairs = match_pairs(seen, unseen, caliper=10.0)
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert match_pairs(seen, np.array([[30.0], [31.0]]), caliper=0.1) == []


def test_split_keeps_text_and_counts_words():
    text = " ".join(f"w{i}" for i in range(200)) + "\n"
    prefix, suffix = split_probe(text, ProbeConfig())
    assert suffix.split() == [f"w{i}" for i in range(168, 200)]
    assert prefix.split() == [f"w{i}" for i in range(40, 168)]
    assert text.endswith(prefix + suffix)
    assert split_probe(" ".join(f"w{i}" for i in range(40)), ProbeConfig()) is None  # 8 prefix words < 16


LENGTH_ONLY = ProbeConfig(match_on=("length",))  # these fake items differ in length only


def fake_index(seen_lengths, unseen_lengths) -> CorpusIndex:
    items = []
    for status, lengths in (("seen", seen_lengths), ("unseen", unseen_lengths)):
        for j, n in enumerate(lengths):
            items.append({"id": f"{status}-{j}", "status": status, "n_words": n, "coverage8": 1.0 if status == "seen" else 0.0,
                          "occurrences": 1, "text": " ".join(f"t{j}x{i}" for i in range(n))})
    return CorpusIndex(None, {}, items)


def test_matched_sets_are_balanced_on_length():
    rng = random.Random(0)
    seen = [rng.randint(60, 200) for _ in range(40)]
    unseen = [rng.randint(50, 400) for _ in range(150)]  # a different length distribution
    result = make_probes(fake_index(seen, unseen), LENGTH_ONLY)
    assert result.counts["n_seen"] == result.counts["n_unseen"] >= 35
    assert abs(result.balance["length_smd"]) < 0.1
    assert result.ok, result.problems
    unmatched_smd = standardized_mean_difference(seen, unseen)
    assert abs(unmatched_smd) > 0.5  # matching is what made them comparable
    by_id = {p["id"]: p for p in result.probes}
    for p in result.probes:
        assert by_id[p["pair"]]["pair"] == p["id"] and by_id[p["pair"]]["probe_set"] != p["probe_set"]


def test_too_few_seen_items_is_reported_clearly():
    result = make_probes(fake_index([100, 101], [100] * 15 + [101] * 15), LENGTH_ONLY)
    assert not result.ok
    assert "only 2 matched seen/unseen pairs (need at least 10)" in result.problems[0]


def test_unbalanced_sets_are_flagged():
    result = make_probes(fake_index([60] * 12 + [200] * 12, [60] * 24 + [70] * 5), ProbeConfig(match_on=("length",), caliper=100))
    assert any("out of balance on length" in p for p in result.problems)


def test_bad_match_covariate():
    with pytest.raises(InputError, match="`match_on` must be a list that includes .length."):
        make_probes(fake_index([100], [100]), ProbeConfig(match_on=("colour",)))
