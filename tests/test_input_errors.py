"""Bad input through the real CLI: one line naming the file (and record or key), exit code 2.

Each case was a traceback (or, for a truncated ``.zst``, a silent partial read with exit 0).
Permission cases run the CLI in a subprocess; as root they drop the capabilities that let
root read and write anything (``setpriv``), and are skipped where that is not possible.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cli_helpers import cli, one_line_error

SECRET = ("the quick brown fox jumps over the lazy dog and then keeps running far away into the dark night "
          "while the farmer sleeps soundly in his small wooden house by the river")
OTHER = "an entirely different sentence about compilers registers and instruction scheduling " * 3
NOVEL = "novel words about gardening tomatoes and watering cans in the sunny morning light of early spring days"


def corpus_rows(n: int = 40) -> list[dict]:
    return [{"id": f"d{i}", "text": SECRET if i == 3 else f"{OTHER} number {i}"} for i in range(n)]


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def bench(tmp_path) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_bytes(jsonl_bytes([{"id": "q1", "text": SECRET}, {"id": "q2", "text": NOVEL}]))
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(jsonl_bytes(corpus_rows()))
    return path


@pytest.fixture
def index_dir(tmp_path, corpus, bench) -> Path:
    out = tmp_path / "idx"
    code, output = cli("index", corpus, "-b", bench, "-o", out)
    assert code == 0, output
    return out


# --------------------------------------------------------------- running without root's powers


def _unprivileged_prefix() -> list[str]:
    """A command prefix under which file permissions apply, or skip the test."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root (which ignores file permissions) and setpriv is not installed")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]
    probe_dir = Path(tempfile.mkdtemp())
    try:
        probe_dir.chmod(0o555)
        probe = subprocess.run([*prefix, sys.executable, "-c", f"import os; print(os.access({str(probe_dir)!r}, os.W_OK))"],
                               capture_output=True, text=True, check=False)
    finally:
        probe_dir.chmod(0o755)
        probe_dir.rmdir()
    if probe.returncode != 0 or probe.stdout.strip() != "False":
        pytest.skip("running as root (which ignores file permissions) and cannot drop CAP_DAC_OVERRIDE")
    return prefix


def cli_unprivileged(*args) -> tuple[int, str]:
    cmd = [*_unprivileged_prefix(), sys.executable, "-c", "from contaudit.cli import main; main()", *map(str, args)]
    env = {**os.environ, "COLUMNS": "80", "CONTAUDIT_DEBUG": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def read_only_dir(tmp_path):
    path = tmp_path / "readonly"
    path.mkdir()
    path.chmod(0o555)
    yield path
    path.chmod(0o755)


# --------------------------------------------------------------- 1. corrupt and truncated compressed corpora


def _zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("name, make, expected", [
    ("garbage.jsonl.zst", lambda d: os.urandom(4000), "corrupt zstd data"),
    ("truncated.jsonl.zst", lambda d: _zst(d)[: len(_zst(d)) * 2 // 3], "ends inside a zstd frame"),
    ("garbage.jsonl.gz", lambda d: b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + os.urandom(4000),
     "cannot read compressed file"),
    ("truncated.jsonl.gz", lambda d: gzip.compress(d)[: len(gzip.compress(d)) * 2 // 3],
     "Compressed file ended before the end-of-stream marker"),
])
def test_corrupt_or_truncated_compressed_corpus(tmp_path, bench, name, make, expected):
    rows = [{"id": f"d{i}", "text": os.urandom(300).hex()} for i in range(400)]  # incompressible: several blocks
    bad = tmp_path / name
    bad.write_bytes(make(jsonl_bytes(rows)))
    out = tmp_path / "idx"
    code, output = cli("index", bad, "-b", bench, "-o", out)
    one_line_error(code, output, f"{name}: cannot read compressed file", expected)
    assert not out.exists()


def test_valid_zst_corpus_is_read_whole(tmp_path, bench):
    corpus = tmp_path / "corpus.jsonl.zst"
    data = jsonl_bytes(corpus_rows())
    import zstandard

    half = len(data) // 2
    corpus.write_bytes(_zst(data[:half]) + zstandard.ZstdCompressor().compress(data[half:]))  # two frames
    code, output = cli("index", corpus, "-b", bench, "-o", tmp_path / "idx")
    assert code == 0, output
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["corpus"]["documents"]["read"] == 40 and manifest["counts"]["seen"] == 1


# --------------------------------------------------------------- 2. a corrupt Parquet row group


def test_corrupt_parquet_row_group(tmp_path, bench):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"d{i}", "text": f"{OTHER} {i}"} for i in range(5000)]
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000, compression="snappy")
    meta = pq.ParquetFile(path).metadata
    column = meta.row_group(2).column(1)  # the text column of the third row group
    start = column.dictionary_page_offset + 20  # past the page header, inside the compressed page
    data = bytearray(path.read_bytes())
    data[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    code, output = cli("index", path, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, "corpus.parquet, record 2001: corrupt Parquet data in row group 3 of 5 "
                                 "(records 2001-3000)")
    assert not (tmp_path / "idx").exists()


# --------------------------------------------------------------- 3. a read-only output directory


def test_index_into_read_only_directory(tmp_path, corpus, bench, read_only_dir):
    out = read_only_dir / "idx"
    code, output = cli_unprivileged("index", corpus, "-b", bench, "-o", out)
    one_line_error(code, output, f"{out}: cannot be written: directory {read_only_dir} is not writable")
    assert list(read_only_dir.iterdir()) == []


def test_probes_into_read_only_directory(index_dir, read_only_dir):
    out = read_only_dir / "probes.jsonl"
    code, output = cli_unprivileged("probes", index_dir, "-o", out)
    one_line_error(code, output, f"{out}: cannot be written: directory {read_only_dir} is not writable")
    assert list(read_only_dir.iterdir()) == []


def test_score_into_read_only_directory(tmp_path, bench, read_only_dir):
    from tiny_models import save_tiny_model

    model = save_tiny_model(tmp_path / "gpt2", arch="gpt2", n_positions=64)
    out = read_only_dir / "scores.jsonl"
    code, output = cli_unprivileged("score", "--model", model, "--data", bench, "--out", out, "--device", "cpu")
    one_line_error(code, output, f"{out}: cannot be written: directory {read_only_dir} is not writable")
    assert list(read_only_dir.iterdir()) == []


# --------------------------------------------------------------- 4. an unreadable file in a corpus directory


def test_unreadable_file_in_corpus_directory(tmp_path, bench):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.txt").write_text(SECRET)
    locked = root / "b.txt"
    locked.write_text(OTHER)
    locked.chmod(0)
    try:
        code, output = cli_unprivileged("index", root, "-b", bench, "-o", tmp_path / "idx")
    finally:
        locked.chmod(0o644)
    one_line_error(code, output, f"{locked}: cannot read", "Permission denied")
    assert not (tmp_path / "idx").exists()


def test_unlistable_directory_in_corpus_directory(tmp_path, bench):
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(SECRET)
    (root / "sub" / "b.txt").write_text(OTHER)
    (root / "sub").chmod(0)
    try:
        code, output = cli_unprivileged("index", root, "-b", bench, "-o", tmp_path / "idx")
    finally:
        (root / "sub").chmod(0o755)
    one_line_error(code, output, f"{root / 'sub'}: cannot list this directory", "Permission denied")


# --------------------------------------------------------------- 5. OUT.partial that is not our staging directory


def test_partial_that_is_a_file_is_refused_and_kept(tmp_path, corpus, bench):
    out = tmp_path / "idx"
    partial = tmp_path / "idx.partial"
    partial.write_text("not ours")
    code, output = cli("index", corpus, "-b", bench, "-o", out)
    one_line_error(code, output, f"{partial}: is not a directory")
    assert partial.read_text() == "not ours" and not out.exists()


def test_partial_that_is_a_symlink_is_refused_not_followed(tmp_path, corpus, bench):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "plan.json").write_text("{}")
    (target / "keep.txt").write_text("keep me")
    partial = tmp_path / "idx.partial"
    partial.symlink_to(target)
    code, output = cli("index", corpus, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, f"{partial}: is a symbolic link")
    assert partial.is_symlink() and sorted(p.name for p in target.iterdir()) == ["keep.txt", "plan.json"]
    assert (target / "plan.json").read_text() == "{}"


def test_partial_directory_not_made_by_contaudit_is_kept(tmp_path, corpus, bench):
    partial = tmp_path / "idx.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("keep me")
    code, output = cli("index", corpus, "-b", bench, "-o", tmp_path / "idx")
    one_line_error(code, output, f"{partial}: is not the staging directory of an index build")
    assert (partial / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------- 6. --out pointing at an existing directory


def test_score_out_is_a_directory(tmp_path, bench):
    out = tmp_path / "scores"
    out.mkdir()
    code, output = cli("score", "--model", tmp_path / "no-model", "--data", bench, "--out", out)
    one_line_error(code, output, f"{out}: is a directory")
    assert list(out.iterdir()) == []


def test_score_out_is_a_directory_named_jsonl(tmp_path, bench):
    out = tmp_path / "scores.jsonl"
    out.mkdir()
    code, output = cli("score", "--model", tmp_path / "no-model", "--data", bench, "--out", out)
    one_line_error(code, output, f"{out}: is a directory")


def test_probes_out_is_a_directory(index_dir, tmp_path):
    out = tmp_path / "probes.jsonl"
    out.mkdir()
    code, output = cli("probes", index_dir, "-o", out)
    one_line_error(code, output, f"{out}: is a directory")
    assert list(out.iterdir()) == [] and not (tmp_path / "probes.manifest.json").exists()


# --------------------------------------------------------------- 7. report on an unknown verdict label


def test_report_with_unknown_verdict_label(tmp_path):
    from contaudit.analysis.results import SCHEMA_VERSION

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"kind": "contaudit-results", "schema_version": SCHEMA_VERSION,
                                                  "verdict": {"label": "PROBABLY_FINE", "reasons": []}}))
    code, output = cli("report", run)
    one_line_error(code, output, f"{run / 'results.json'}: key 'verdict.label' is 'PROBABLY_FINE'",
                   "expected one of NO_EVIDENCE, SUSPECT, CONTAMINATED, INCONCLUSIVE, INVALID_DESIGN")
    assert sorted(p.name for p in run.iterdir()) == ["results.json"]


# --------------------------------------------------------------- 8. a UTF-8 byte-order mark is accepted


def test_byte_order_mark_in_benchmark_and_corpus_is_stripped(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"id": "q1", "text": SECRET}, {"id": "q2", "text": OTHER}]))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"id": "d0", "text": SECRET}, {"id": "d1", "text": "x y"}]))
    out = tmp_path / "idx"
    code, output = cli("index", corpus, "-b", bench, "-o", out)
    assert code == 0, output
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert items[0]["id"] == "q1" and items[0]["text"] == SECRET
    assert items[0]["status"] == "seen" and items[0]["locations"][0][:3] == [str(corpus), 1, 0]


# --------------------------------------------------------------- 9. output files honour the umask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_output_files_honour_the_umask(tmp_path, corpus, bench, umask):
    out = tmp_path / "idx"
    old = os.umask(umask)
    try:
        code, output = cli("index", corpus, "-b", bench, "-o", out)
        assert code == 0, output
        code, output = cli("probes", out, "-o", tmp_path / "probes.jsonl", "--min-seen", "1")
        assert code == 0, output
    finally:
        os.umask(old)
    for path in (out / "items.jsonl", out / "manifest.json", tmp_path / "probes.jsonl",
                 tmp_path / "probes.manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# --------------------------------------------------------------- 10. index options that would be ignored


def test_palm_rule_with_explicit_n_is_refused(tmp_path, corpus, bench):
    code, output = cli("index", corpus, "-b", bench, "-o", tmp_path / "idx", "--rule", "palm", "--n", "13")
    one_line_error(code, output, "--rule palm", "--n")
    assert not (tmp_path / "idx").exists()


def test_negative_max_locations_is_refused(tmp_path, corpus, bench):
    code, output = cli("index", corpus, "-b", bench, "-o", tmp_path / "idx", "--max-locations", "-1")
    one_line_error(code, output, "max_locations", "-1")
    assert not (tmp_path / "idx").exists()


def test_inconclusive_fails_without_fail_on_and_reference_base_without_a_setting(tmp_path):
    code, output = cli("audit", tmp_path / "p.toml", "--out", tmp_path / "run", "--inconclusive-fails")
    one_line_error(code, output, "--inconclusive-fails needs --fail-on")
    assert not (tmp_path / "run").exists()
    code, output = cli("calibrate", "--out", tmp_path / "cal", "--reference-base", tmp_path)
    one_line_error(code, output, "--reference-base is for your own setting")
    assert not (tmp_path / "cal").exists()


def test_per_byte_suffix_logprobs_without_suffix_tokens_are_refused_by_file(tmp_path):
    import numpy as np

    from contaudit.analysis.units import suffix_mean_per_byte
    from contaudit.analysis.inputs import ScoreMatrix, ScoreFile
    from contaudit.errors import InputError

    matrix = ScoreMatrix("probes", ["p1"], np.array([[-2.0]]))
    files = [ScoreFile(tmp_path / "sus.jsonl", {"p1": {"suffix_logprob": -2.0}}, None)]
    with pytest.raises(InputError, match=r"sus.jsonl.*probe 'p1': per-byte suffix log-probs need the score row's "
                                         r"'suffix_tokens'"):
        suffix_mean_per_byte(matrix, files, {"p1": 40})
    files[0].rows["p1"]["suffix_tokens"] = 10
    assert suffix_mean_per_byte(matrix, files, {"p1": 40})[0, 0] == -0.5


def test_json_errors_say_where_without_doubling_at():
    """'Unterminated string starting at at column 28' (issue 25)."""
    import json

    from contaudit.errors import json_problem

    messages = []
    for text in ('{"id": "a", "text": "never closed}', '{"id": 1 "text": "x"}'):
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            messages.append(json_problem(e))
    assert messages == ["Unterminated string starting at column 21", "Expecting ',' delimiter at column 10"]
    try:
        json.loads('{\n"a": }')
    except json.JSONDecodeError as e:
        assert json_problem(e, line=True) == "Expecting value at line 2, column 6"
