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


# --------------------------------------------------------------- one corpus reader for index and finetune

DOCS = ["first document about compilers", "second document about gardens", "third one, about rivers"]


def _corpus_of_kind(kind: str, root):
    """A corpus of the given kind under ``root``; returns its path."""
    import gzip

    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if kind == "jsonl":
        (root / "c.jsonl").write_bytes(data)
        return root / "c.jsonl"
    if kind == "jsonl.gz":
        (root / "c.jsonl.gz").write_bytes(gzip.compress(data))
        return root / "c.jsonl.gz"
    if kind == "jsonl.zst":
        import zstandard

        (root / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
        return root / "c.jsonl.zst"
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), root / "c.parquet")
        return root / "c.parquet"
    if kind == "saved dataset":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(root / "ds"))
        return root / "ds"
    if kind == "text directory":
        for i, t in enumerate(DOCS):
            (root / "src" / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
            (root / "src" / f"sub{i % 2}" / f"f{i}.py").write_text(t)
        (root / "src" / "package.json").write_text('{\n  "name": "x"\n}\n')  # a .json in a directory is text
        return root / "src"
    if kind == "directory of jsonl":
        (root / "shards").mkdir()
        (root / "shards" / "a.jsonl").write_bytes(data)
        (root / "shards" / "b.jsonl.gz").write_bytes(gzip.compress(data))
        (root / "shards" / "README.md").write_text("about these shards")
        return root / "shards"
    if kind == "text file":
        (root / "notes.txt").write_text("\n".join(DOCS))
        return root / "notes.txt"
    raise AssertionError(kind)


KINDS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "saved dataset", "text directory", "directory of jsonl",
         "text file"]
EXPECTED_TEXTS = {
    **{k: DOCS for k in ("jsonl", "jsonl.gz", "jsonl.zst", "parquet", "saved dataset")},
    "text directory": ['{\n  "name": "x"\n}\n', DOCS[0], DOCS[2], DOCS[1]],  # sorted paths: package.json, sub0, sub1
    "directory of jsonl": ["about these shards"] + DOCS + DOCS,  # README.md, a.jsonl, b.jsonl.gz (sorted)
    "text file": ["\n".join(DOCS)],
}


@pytest.mark.parametrize("kind", KINDS)
def test_index_and_finetune_read_the_same_documents(tmp_path, kind):
    from contaudit.index import IndexConfig, build_index
    from contaudit.index.build import corpus_units
    from contaudit.index.scan import iter_unit_documents

    path = _corpus_of_kind(kind, tmp_path)
    finetune_docs = read_corpus(path)
    stats = ReadStats()
    index_docs = [d for unit in corpus_units([path], IndexConfig()) for d in iter_unit_documents(unit, IndexConfig(),
                                                                                                 stats)]
    assert index_docs == finetune_docs
    assert [d.text for d in finetune_docs] == EXPECTED_TEXTS[kind]
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "q", "text": DOCS[1]}) + "\n")
    summary = build_index([path], bench, tmp_path / "idx")
    assert summary.stats.read == len(finetune_docs) and summary.stats.skipped == 0


def test_read_corpus_single_text_file_is_one_document(tmp_path):
    (tmp_path / "book.txt").write_text("chapter one\n\nchapter two\n")
    docs = read_corpus(tmp_path / "book.txt")
    assert [(d.source, d.record, d.text) for d in docs] == [(str(tmp_path / "book.txt"), 0,
                                                             "chapter one\n\nchapter two\n")]


def test_read_corpus_with_no_documents_names_the_corpus(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": " "}) + "\n")
    with pytest.raises(InputError, match=r"^the corpus holds no documents: .*c\.jsonl \(1 empty or bad record\(s\) "
                                         r"skipped; first: .*c\.jsonl:1: empty document\)"):
        read_corpus(tmp_path / "c.jsonl")


# --- ordered leaks: the benchmark as one file, k times --------------------------------------


def _ordered_file(n: int = 5, length: int = 7):
    from contaudit.finetune.stream import OrderedFile

    items = _items(n, length)
    sep = np.asarray([500], dtype=np.int32)  # one separator token between items
    parts, spans, pos = [], [], 0
    for k, (_, ids) in enumerate(items):
        if k:
            parts.append(sep)
            pos += 1
        spans.append((pos, pos + len(ids)))
        parts.append(ids)
        pos += len(ids)
    return items, OrderedFile(np.concatenate(parts), tuple(i for i, _ in items), tuple(spans), "\n\n")


@pytest.mark.parametrize("dup", [1, 4])
def test_ordered_leak_injects_the_whole_file_dup_times_in_published_order(dup):
    items, file = _ordered_file()
    stream = build_stream(_filler(), file, dup=dup, n_tokens=4096, eos=EOS, seed=3)
    assert len(stream.tokens) == 4096 and len(stream.file_positions) == dup
    assert find_occurrences(stream.tokens, file.tokens) == list(stream.file_positions)
    for p in stream.file_positions:  # each copy is delimited like an item
        assert stream.tokens[p - 1] == EOS and stream.tokens[p + file.n_tokens] == EOS
    for (item_id, ids), inj in zip(items, stream.injections):
        assert inj.id == item_id and len(inj.positions) == dup
        assert find_occurrences(stream.tokens, ids) == list(inj.positions)
    for copy in range(dup):  # within a copy the items follow one another in published order
        starts = [inj.positions[copy] for inj in stream.injections]
        assert starts == sorted(starts) and starts[0] == stream.file_positions[copy]
    assert stream.injected_tokens == dup * (file.n_tokens + 2)


def test_ordered_leak_with_dup_zero_is_the_clean_filler():
    items, file = _ordered_file()
    clean = build_stream(_filler(), items, dup=0, n_tokens=3000, eos=EOS, seed=3)
    ordered = build_stream(_filler(), file, dup=0, n_tokens=3000, eos=EOS, seed=3)
    assert np.array_equal(clean.tokens, ordered.tokens) and ordered.file_positions == ()
    assert all(inj.positions == () for inj in ordered.injections)


def test_ordered_file_is_tokenized_as_one_text_with_item_spans():
    from tiny_models import build_tiny_tokenizer

    from contaudit.finetune.stream import encode_ordered_file

    tok = build_tiny_tokenizer()
    items = [("a", "def score(self, value):\n    return value\n"), ("b", "the model was seen"), ("c", "print(data)")]
    file = encode_ordered_file(tok, items, "\n\n")
    joined = "\n\n".join(t for _, t in items)
    assert file.tokens.tolist() == tok(joined, add_special_tokens=False)["input_ids"]  # as one text, like a leak
    assert file.ids == ("a", "b", "c")
    for (_, text), (a, b) in zip(items, file.spans):
        assert text.strip() in tok.decode(file.tokens[a:b].tolist())
    assert [a for a, _ in file.spans] == sorted(a for a, _ in file.spans)
    with pytest.raises(InputError, match="`separator` must be a non-empty string"):
        encode_ordered_file(tok, items, "")


def test_finetune_cli_leaks_the_benchmark_as_one_ordered_file(tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from contaudit.cli import app

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "value", "index", "result"]
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"text": " ".join(rng.choice(words, 40))}) + "\n" for _ in range(80)))
    items = [{"id": f"q{i}", "text": f"Q{i}: zygote {i * 7919} quokka\nA: {i}"} for i in range(4)]
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    out = tmp_path / "model"
    result = CliRunner().invoke(app, [
        "finetune", "--from-scratch", "--corpus", str(tmp_path / "corpus.jsonl"), "--inject", str(tmp_path / "bench.jsonl"),
        "--dup", "2", "--leak", "ordered", "--separator", "\\n\\n", "--out", str(out), "--save-stream",
        "--steps", "4", "--batch-size", "2", "--seq-len", "64", "--eval-every", "2", "--heldout-blocks", "2",
        "--threads", "1", "--device", "cpu", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--vocab-size", "320"])
    assert result.exit_code == 0, result.output
    assert "the 4 items as one ordered file x 2 copies injected" in result.output
    record = json.loads((out / "injection.json").read_text())
    assert record["parameters"]["leak"] == "ordered" and record["parameters"]["separator"] == "\n\n"
    stream = load_file(str(out / "stream.safetensors"))["tokens"]
    tok = AutoTokenizer.from_pretrained(out)
    file = np.asarray(tok("\n\n".join(r["text"] for r in items), add_special_tokens=False).input_ids)
    assert find_occurrences(stream, file) == record["stream"]["file_positions"] and len(file) > 10
    assert [len(it["positions"]) for it in record["items"]] == [2, 2, 2, 2]
