"""`contaudit index` (and `finetune`) on bad corpus inputs and outputs, through the real CLI.

Each case was a silent wrong answer or lost data: an empty corpus indexed as "every item
unseen"; `--out` inside the corpus read back as corpus on the next run; a foreign
directory at `--out` replaced; `--skip-bad` stopping at a non-UTF-8 line (and
naming the wrong line). Each now fails with one line (exit 2) and leaves the files as
they were, or skips and counts exactly the bad line.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from cli_helpers import cli, one_line_error

SECRET = ("the quick brown fox jumps over the lazy dog and then keeps running far away into the dark night "
          "while the farmer sleeps soundly in his small wooden house by the river")
OTHER = "an entirely different sentence about compilers registers and instruction scheduling"
NOVEL = "novel words about gardening tomatoes and watering cans in the sunny morning light of early spring days"


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for a directory)."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def bench(tmp_path) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_bytes(jsonl_bytes([{"id": "q1", "text": SECRET}, {"id": "q2", "text": NOVEL}]))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(jsonl_bytes([{"id": f"d{i}", "text": SECRET if i == 3 else f"{OTHER} {i}"} for i in range(20)]))
    return path


def no_index(out: Path) -> None:
    """No index at ``out``; ``OUT.partial`` holds at most the resume state of ``build_index`` (its lock and
    plan, no shard: the error came before the first shard was done)."""
    assert not out.exists()
    partial = out.with_name(out.name + ".partial")
    assert not partial.exists() or {p.name for p in partial.iterdir()} <= {"lock", "plan.json"}


def index_ok(corpus, bench, out, *extra) -> dict:
    code, output = cli("index", corpus, "-b", bench, "-o", out, *extra)
    assert code == 0, output
    return json.loads((Path(out) / "manifest.json").read_text())


def finetune_cli(corpus, out, *extra) -> tuple[int, str]:
    """`finetune --from-scratch`: the corpus is read before any model or tokenizer is made."""
    return cli("finetune", "--corpus", corpus, "--out", out, "--from-scratch", "--steps", "1", "--device", "cpu",
               *extra)


# --------------------------------------------------------------- 1. a truncated .zst, for index and finetune


def _truncated_zst(path: Path) -> Path:
    import zstandard

    rows = [{"id": f"d{i}", "text": os.urandom(300).hex()} for i in range(400)]  # incompressible: several blocks
    data = zstandard.ZstdCompressor().compress(jsonl_bytes(rows))
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def test_truncated_zst_corpus_is_an_error_for_index(tmp_path, bench):
    bad = _truncated_zst(tmp_path / "corpus.jsonl.zst")
    code, output = cli("index", bad, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, f"{bad}: cannot read compressed file after line", "ends inside a zstd frame")
    no_index(tmp_path / "idx")


def test_truncated_zst_corpus_is_an_error_for_finetune(tmp_path):
    bad = _truncated_zst(tmp_path / "corpus.jsonl.zst")
    code, output = finetune_cli(bad, tmp_path / "model")
    one_line_error(code, output, f"{bad}: cannot read compressed file after line", "ends inside a zstd frame")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl.zst"]


# --------------------------------------------------------------- 2. an empty corpus


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


EMPTY_CORPORA = {
    "empty .jsonl": lambda d: _write(d / "c.jsonl", b""),
    "blank lines only": lambda d: _write(d / "c.jsonl", b"\n\n  \n"),
    "empty documents only": lambda d: _write(d / "c.jsonl", jsonl_bytes([{"text": ""}, {"text": "  \n"}])),
    "empty .jsonl.gz": lambda d: _write(d / "c.jsonl.gz", gzip.compress(b"")),
    "directory of empty files": lambda d: (_write(d / "src" / "a.py", b""), _write(d / "src" / "b.txt", b"\n"))[0].parent,
    "empty text file": lambda d: _write(d / "notes.txt", b""),
}


@pytest.mark.parametrize("kind", sorted(EMPTY_CORPORA))
def test_empty_corpus_is_an_error(tmp_path, bench, kind):
    data = tmp_path / "data"
    path = EMPTY_CORPORA[kind](data)
    before = snapshot(tmp_path)
    code, output = cli("index", path, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, f"the corpus holds no documents: {path}")
    code, output = finetune_cli(path, tmp_path / "model")
    one_line_error(code, output, f"the corpus holds no documents: {path}")
    assert snapshot(tmp_path) == before  # no idx, idx.partial or model left behind


def test_empty_directory_is_an_error(tmp_path, bench):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = cli("index", empty, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, f"{empty}: the corpus directory holds no files, so no documents")
    code, output = finetune_cli(empty, tmp_path / "model")
    one_line_error(code, output, f"{empty}: the corpus directory holds no files, so no documents")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.jsonl", "empty"]


def test_globs_that_match_nothing_are_an_error(tmp_path, bench):
    src = tmp_path / "src"
    _write(src / "a.py", SECRET.encode())
    code, output = cli("index", src, "-b", bench, "-o", tmp_path / "idx", "--include", "*.rs")
    one_line_error(code, output, f"{src}: no file in this directory matches --include/--exclude (it holds 1 file(s))")
    assert not (tmp_path / "idx").exists() and not (tmp_path / "idx.partial").exists()


def test_corpus_whose_every_record_is_skipped_is_an_error(tmp_path, bench):
    path = _write(tmp_path / "c.jsonl", b'{"text": \n[1, 2]\n{"body": "no text field"}\n')
    code, output = cli("index", path, "-b", bench, "-o", tmp_path / "idx", "--skip-bad")
    one_line_error(code, output, f"the corpus holds no documents: {path} (3 empty or bad record(s) skipped; "
                                 f"first: {path}:1: malformed JSON)")
    assert not (tmp_path / "idx").exists() and not (tmp_path / "idx.partial").exists()


def test_an_empty_input_beside_a_full_one_is_fine(tmp_path, corpus, bench):
    empty = _write(tmp_path / "empty.jsonl", b"")
    m = index_ok(corpus, bench, tmp_path / "idx")
    code, output = cli("index", corpus, empty, "-b", bench, "-o", tmp_path / "idx2")
    assert code == 0, output
    m2 = json.loads((tmp_path / "idx2" / "manifest.json").read_text())
    assert m2["corpus"]["documents"]["read"] == m["corpus"]["documents"]["read"] == 20


# --------------------------------------------------------------- 3. --out and the corpus must stay apart


def test_out_inside_the_corpus_directory_is_refused(tmp_path, bench):
    src = tmp_path / "src"
    _write(src / "a.txt", SECRET.encode())
    before = snapshot(tmp_path)
    out = src / "idx"
    code, output = cli("index", src, "-b", bench, "-o", out)
    one_line_error(code, output, f"{out}: is inside the corpus directory {src}; a later run would read this output "
                                 "as corpus")
    assert snapshot(tmp_path) == before


def test_out_that_is_the_corpus_directory_is_refused(tmp_path, bench):
    src = tmp_path / "src"
    _write(src / "a.txt", SECRET.encode())
    before = snapshot(tmp_path)
    code, output = cli("index", src, "-b", bench, "-o", src)
    one_line_error(code, output, f"{src}: is also a corpus input")
    assert snapshot(tmp_path) == before


def test_corpus_inside_out_is_refused(tmp_path, corpus, bench):
    out = tmp_path / "idx"
    index_ok(corpus, bench, out)
    inner = _write(out / "more.jsonl", jsonl_bytes([{"text": OTHER}]))
    before = snapshot(tmp_path)
    code, output = cli("index", corpus, inner, "-b", bench, "-o", out)
    one_line_error(code, output, f"{inner}: the corpus input is inside {out}, which this command replaces")
    assert snapshot(tmp_path) == before


def test_benchmark_inside_out_is_refused(tmp_path, corpus, bench):
    out = tmp_path / "idx"
    index_ok(corpus, bench, out)
    inner = out / "items.jsonl"  # the index's own items as a benchmark: replaced by the new index
    before = snapshot(tmp_path)
    code, output = cli("index", corpus, "-b", inner, "-o", out)
    one_line_error(code, output, f"{inner}: the benchmark is inside {out}, which this command replaces")
    assert snapshot(tmp_path) == before


def test_an_index_inside_a_corpus_directory_is_never_read(tmp_path, bench):
    """The second-run case: an earlier index (with the benchmark's text in items.jsonl) under the corpus."""
    src = tmp_path / "src"
    _write(src / "a.txt", f"{OTHER} only".encode())
    index_ok(src, bench, tmp_path / "idx")
    (tmp_path / "idx").rename(src / "idx")
    before = snapshot(tmp_path)
    code, output = cli("index", src, "-b", bench, "-o", tmp_path / "idx2")
    one_line_error(code, output, f"{src / 'idx'}/", "is output of `contaudit index`",
                   f"inside the corpus directory {src}", "--exclude 'idx/*'")
    assert snapshot(tmp_path) == before
    manifest = index_ok(src, bench, tmp_path / "idx2", "--exclude", "idx/*")  # the way out the message names
    assert manifest["counts"]["seen"] == 0 and manifest["corpus"]["documents"]["read"] == 1


def test_a_staging_directory_inside_a_corpus_directory_is_never_read(tmp_path, bench):
    src = tmp_path / "src"
    _write(src / "a.txt", f"{OTHER} only".encode())
    staging = src / "idx.partial"
    _write(staging / "plan.json", json.dumps({"parameters": {}, "benchmark": "x", "inputs": []}).encode())
    _write(staging / "shard-0-0.json", b"{}")
    code, output = cli("index", src, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, "is the staging directory of `contaudit index`", "--exclude 'idx.partial/*'")


def test_probes_beside_corpus_files_are_never_read(tmp_path, corpus, bench):
    src = tmp_path / "src"
    _write(src / "a.txt", f"{OTHER} only".encode())
    index_ok(corpus, bench, tmp_path / "idx")
    code, output = cli("probes", tmp_path / "idx", "-o", src / "probes.jsonl", "--min-seen", "1")
    assert code == 0, output
    code, output = cli("index", src, "-b", bench, "-o", tmp_path / "idx2")
    one_line_error(code, output, "is output of `contaudit probes`", "--exclude 'probes.*'")
    index_ok(src, bench, tmp_path / "idx2", "--exclude", "probes.*")


def test_finetune_output_inside_a_corpus_directory_is_never_read(tmp_path):
    from contaudit.errors import InputError
    from contaudit.finetune.stream import read_corpus

    src = tmp_path / "src"
    _write(src / "a.txt", SECRET.encode())
    _write(src / "model" / "injection.json", json.dumps({"stage": "finetune", "contaudit_version": "0"}).encode())
    _write(src / "model" / "injected.jsonl", jsonl_bytes([{"text": SECRET}]))
    with pytest.raises(InputError, match=r"injected\.jsonl: is output of `contaudit finetune`"):
        read_corpus(src)
    assert [d.text for d in read_corpus(src, exclude=["model/*"])] == [SECRET]


def test_a_foreign_manifest_in_a_corpus_directory_is_just_text(tmp_path, bench):
    src = tmp_path / "src"
    _write(src / "manifest.json", b'{"name": "my-extension", "version": "1.0"}')
    _write(src / "a.txt", SECRET.encode())
    manifest = index_ok(src, bench, tmp_path / "idx")
    assert manifest["corpus"]["documents"]["read"] == 2 and manifest["counts"]["seen"] == 1


# --------------------------------------------------------------- 4. a foreign directory at --out


@pytest.mark.parametrize("manifest", [
    None,
    b'{"name": "some other tool", "version": 3}',   # a manifest.json, but not contaudit's
    b'{"stage": "probes", "contaudit_version": "0.1"}',  # contaudit's, but not an index
    b"not json at all",
])
def test_foreign_directory_at_out_is_refused_and_kept(tmp_path, corpus, bench, manifest):
    out = tmp_path / "mine"
    _write(out / "notes.txt", b"keep me")
    _write(out / "sub" / "deep.bin", b"\x00\x01")
    if manifest is not None:
        _write(out / "manifest.json", manifest)
    before = snapshot(tmp_path)
    code, output = cli("index", corpus, "-b", bench, "-o", out)
    one_line_error(code, output, f"{out}: exists and is not a contaudit index", "nothing was deleted")
    assert snapshot(tmp_path) == before


def test_index_directory_with_extra_files_is_refused_and_kept(tmp_path, corpus, bench):
    out = tmp_path / "idx"
    index_ok(corpus, bench, out)
    _write(out / "my-notes.md", b"my analysis, not a build output")
    before = snapshot(tmp_path)
    code, output = cli("index", corpus, "-b", bench, "-o", out)
    one_line_error(code, output, f"{out}: holds files a contaudit index does not (my-notes.md)",
                   "nothing was deleted")
    assert snapshot(tmp_path) == before


def test_a_previous_index_is_replaced_and_siblings_are_kept(tmp_path, corpus, bench):
    out = tmp_path / "idx"
    for name in ("idx.old", "idx.new", ".idx.old"):  # names a tool might use for a swap: never ours
        _write(tmp_path / name / "keep.txt", name.encode())
    index_ok(corpus, bench, out)
    index_ok(corpus, bench, out, "--n", "10")  # a real rebuild: replaces the previous index
    assert sorted(p.name for p in out.iterdir()) == ["items.jsonl", "manifest.json"]
    for name in ("idx.old", "idx.new", ".idx.old"):
        assert (tmp_path / name / "keep.txt").read_text() == name
    assert not (tmp_path / "idx.partial").exists()


def test_partial_with_a_foreign_plan_is_refused_and_kept(tmp_path, corpus, bench):
    partial = tmp_path / "idx.partial"
    _write(partial / "plan.json", b'{"steps": ["mine"]}')
    _write(partial / "work.txt", b"keep me")
    before = snapshot(tmp_path)
    code, output = cli("index", corpus, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, f"{partial}: is not the staging directory of an index build")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------- 5. --skip-bad and non-UTF-8 lines


def _compress(name: str, data: bytes) -> bytes:
    if name.endswith(".gz"):
        return gzip.compress(data)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


BAD_LINE = 3000  # far past the first block a decoder reads, so a block-wise decode would name the wrong line


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz", "corpus.jsonl.zst"])
def test_non_utf8_line_is_named_and_skipped(tmp_path, bench, name):
    lines = [json.dumps({"id": f"d{i}", "text": f"{OTHER} {i}"}).encode() for i in range(1, 4001)]
    lines[BAD_LINE - 1] = b'{"id": "latin", "text": "caf\xe9 au lait"}'
    lines[BAD_LINE] = json.dumps({"id": "after", "text": SECRET}).encode()  # read only if reading goes on
    path = _write(tmp_path / name, _compress(name, b"\n".join(lines) + b"\n"))
    out = tmp_path / "idx"

    code, output = cli("index", path, "-b", bench, "-o", out)
    one_line_error(code, output, f"{path}, record {BAD_LINE}: not valid UTF-8 at byte 28 of this line",
                   "--skip-bad")
    no_index(out)

    code, output = cli("index", path, "-b", bench, "-o", out, "--skip-bad")
    assert code == 0, output
    assert "1 corpus records skipped" in output
    manifest = json.loads((out / "manifest.json").read_text())
    docs = manifest["corpus"]["documents"]
    assert docs["read"] == 3999 and docs["skipped"] == 1
    assert docs["skip_examples"] == [f"{path}:{BAD_LINE}: not valid UTF-8"]
    assert manifest["counts"]["seen"] == 1  # the line after the bad one was read


def test_non_utf8_line_in_finetune_corpus_is_skipped_with_its_line(tmp_path):
    from contaudit.errors import InputError
    from contaudit.finetune.stream import read_corpus
    from contaudit.io import ReadStats

    path = _write(tmp_path / "c.jsonl.gz", gzip.compress(b'{"text": "a"}\n{"text": "\xff"}\n{"text": "b"}\n'))
    with pytest.raises(InputError, match=r"c\.jsonl\.gz, record 2: not valid UTF-8 at byte 10 of this line"):
        read_corpus(path)
    stats = ReadStats()
    assert [d.text for d in read_corpus(path, skip_bad=True, stats=stats)] == ["a", "b"]
    assert stats.skipped == 1 and stats.examples == [f"{path}:2: not valid UTF-8"]
