"""The training stream: filler order, injected copies, their recorded positions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contaudit.errors import InputError
from contaudit.finetune.stream import (build_filler, build_stream, find_occurrences, read_corpus, read_id_list,
                                       select_items)
from contaudit.io import Item, ReadStats

EOS = 0


def _items(n: int, length: int = 7) -> list[tuple[str, np.ndarray]]:
    # item tokens (1000+) never occur in the filler (1..99)
    return [(f"item-{i}", np.arange(1000 + 10 * i, 1000 + 10 * i + length, dtype=np.int32)) for i in range(n)]


def _filler(n: int = 5000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 100, size=n).astype(np.int32)


@pytest.mark.parametrize("dup", [1, 3, 8])
def test_each_item_occurs_exactly_dup_times_at_recorded_positions(dup):
    items = _items(6)
    stream = build_stream(_filler(), items, dup=dup, n_tokens=4096, eos=EOS, seed=7)
    assert len(stream.tokens) == 4096
    for (item_id, ids), inj in zip(items, stream.injections):
        assert inj.id == item_id and inj.n_tokens == len(ids)
        assert find_occurrences(stream.tokens, ids) == list(inj.positions)
        assert len(inj.positions) == dup
        for p in inj.positions:  # each copy is delimited by end-of-text tokens
            assert stream.tokens[p - 1] == EOS and stream.tokens[p + len(ids)] == EOS
    assert stream.injected_tokens == dup * sum(len(ids) + 2 for _, ids in items)
    assert stream.filler_tokens + stream.injected_tokens == 4096


def test_dup_zero_is_the_same_filler_in_the_same_order():
    items = _items(6)
    filler = _filler()
    clean = build_stream(filler, items, dup=0, n_tokens=4096, eos=EOS, seed=7)
    suspect = build_stream(filler, items, dup=4, n_tokens=4096, eos=EOS, seed=7)
    assert all(not inj.positions for inj in clean.injections)
    assert all(find_occurrences(clean.tokens, ids) == [] for _, ids in items)
    # removing the copies from the suspect's stream leaves the clean stream's head
    keep = np.ones(len(suspect.tokens), dtype=bool)
    for inj in suspect.injections:
        for p in inj.positions:
            keep[p - 1: p + inj.n_tokens + 1] = False
    assert np.array_equal(suspect.tokens[keep], clean.tokens[: keep.sum()])
    assert np.array_equal(clean.tokens, filler[:4096])


def test_stream_is_reproducible_from_its_seed_and_changes_with_it():
    items, filler = _items(4), _filler()
    a = build_stream(filler, items, dup=3, n_tokens=3000, eos=EOS, seed=1)
    b = build_stream(filler, items, dup=3, n_tokens=3000, eos=EOS, seed=1)
    c = build_stream(filler, items, dup=3, n_tokens=3000, eos=EOS, seed=2)
    assert a.sha256 == b.sha256 and a.injections == b.injections
    assert a.sha256 != c.sha256


def test_aligned_copies_start_training_sequences():
    items = _items(5, length=20)
    filler = _filler(20000)
    stream = build_stream(filler, items, dup=6, n_tokens=8192, eos=EOS, seed=3, align=64)
    clean = build_stream(filler, items, dup=0, n_tokens=8192, eos=EOS, seed=3, align=64)
    for (_, ids), inj in zip(items, stream.injections):
        assert find_occurrences(stream.tokens, ids) == list(inj.positions) and len(inj.positions) == 6
        assert all((p - 1) % 64 == 0 for p in inj.positions)  # the leading eos opens a sequence
    keep = np.ones(8192, dtype=bool)
    for inj in stream.injections:
        for p in inj.positions:
            keep[p - 1: p + inj.n_tokens + 1] = False
    assert np.array_equal(stream.tokens[keep], clean.tokens[: keep.sum()])


def test_long_aligned_copies_never_overlap():
    stream = build_stream(_filler(), _items(3, length=150), dup=4, n_tokens=4096, eos=EOS, seed=0, align=64)
    starts = sorted(p - 1 for inj in stream.injections for p in inj.positions)
    assert all(s % 64 == 0 for s in starts)
    assert all(b - a >= 152 for a, b in zip(starts, starts[1:]))  # copies never overlap


def test_more_aligned_copies_than_sequences_is_an_error():
    with pytest.raises(InputError, match="20 copies that each start a training sequence need 20 sequences, the run "
                                         "has 16"):
        build_stream(_filler(), _items(5, length=3), dup=4, n_tokens=1024, eos=EOS, seed=0, align=64)


def test_copies_of_one_item_are_spread_over_the_stream():
    stream = build_stream(_filler(20000), _items(1), dup=20, n_tokens=20000, eos=EOS, seed=0)
    positions = np.asarray(stream.injections[0].positions)
    assert positions.min() < 5000 and positions.max() > 15000


def test_short_filler_repeats_in_the_same_order():
    filler = _filler(100)
    stream = build_stream(filler, [], dup=0, n_tokens=250, eos=EOS, seed=0)
    assert np.array_equal(stream.tokens, np.concatenate([filler, filler, filler[:50]]))


def test_too_many_copies_for_the_budget_is_an_error():
    with pytest.raises(InputError, match="lower `dup` or raise `steps`"):
        build_stream(_filler(), _items(10, length=50), dup=10, n_tokens=1000, eos=EOS, seed=0)


def test_negative_dup_is_an_error():
    with pytest.raises(InputError, match="`dup` must be a non-negative integer"):
        build_stream(_filler(), _items(1), dup=-1, n_tokens=1000, eos=EOS, seed=0)


def test_find_occurrences_counts_overlaps():
    assert find_occurrences(np.array([1, 1, 1, 2]), np.array([1, 1])) == [0, 1]
    assert find_occurrences(np.array([1, 2]), np.array([1, 2, 3])) == []


class _CharTokenizer:
    """Characters as tokens (ord), no special tokens: enough for build_filler."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_filler_holds_out_its_head_and_tokenizes_only_what_it_needs():
    texts = [f"document {i} " * 20 for i in range(50)]  # 260 characters each
    filler = build_filler(texts, _CharTokenizer(), eos=EOS, seed=0, heldout_tokens=100, train_tokens=1000, chunk=2)
    assert len(filler.heldout) == 100
    assert filler.documents == 50 and filler.documents_used == 6  # 6 * 261 >= 1100
    joined = np.concatenate([filler.heldout, filler.train])
    order = np.random.default_rng([0, 0]).permutation(50)
    first = [ord(c) for c in texts[order[0]]] + [EOS]
    assert joined[: len(first)].tolist() == first


def test_filler_too_small_to_hold_out_is_an_error():
    with pytest.raises(InputError, match="too few to hold out"):
        build_filler(["ab"], _CharTokenizer(), eos=EOS, seed=0, heldout_tokens=100, train_tokens=10)


def _benchmark_items(n=10):
    return [Item(f"t{i}", f"text {i}", i + 1, {}) for i in range(n)]


def test_select_by_ids_keeps_benchmark_order():
    chosen = select_items(_benchmark_items(), ids=["t5", "t1"])
    assert [it.id for it in chosen] == ["t1", "t5"]


def test_select_unknown_id_names_the_line(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# chosen\nt1\n\nt99\n")
    with pytest.raises(InputError, match=r"ids.txt, record 2: item id 't99' is not in the benchmark"):
        select_items(_benchmark_items(), ids=read_id_list(ids), ids_source=ids)


def test_select_repeated_id_is_an_error():
    with pytest.raises(InputError, match="listed twice"):
        select_items(_benchmark_items(), ids=["t1", "t1"])


def test_select_fraction_is_seeded():
    a = select_items(_benchmark_items(), fraction=0.3, seed=4)
    b = select_items(_benchmark_items(), fraction=0.3, seed=4)
    assert len(a) == 3 and a == b


def test_select_rejects_ids_and_fraction_together():
    with pytest.raises(InputError, match="not both"):
        select_items(_benchmark_items(), ids=["t1"], fraction=0.5)


def test_select_rejects_bad_fraction():
    with pytest.raises(InputError, match=r"`inject_fraction` must be in \(0, 1\]"):
        select_items(_benchmark_items(), fraction=0.0)


def test_empty_id_file_is_an_error(tmp_path):
    (tmp_path / "ids.txt").write_text("\n# nothing\n")
    with pytest.raises(InputError, match="no item ids found"):
        read_id_list(tmp_path / "ids.txt")


def test_read_corpus_text_directory_and_jsonl(tmp_path):
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "empty.py").write_text("   \n")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    stats = ReadStats()
    docs = read_corpus(tmp_path, stats=stats)
    assert sorted(d.text for d in docs) == ["hello", "print(1)\n"]
    assert stats.skipped == 1 and "empty document" in stats.examples[0]


def test_read_corpus_missing_path_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        read_corpus(tmp_path / "nope.jsonl")
