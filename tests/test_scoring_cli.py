"""``contaudit score`` through typer's CliRunner: results, counted skips and clear errors."""

from __future__ import annotations

import os
import json
import shutil

import pytest
from typer.testing import CliRunner

from contaudit.cli import app
from tiny_models import save_tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "gpt2", arch="gpt2", n_positions=64)


@pytest.fixture
def items(tmp_path):
    path = tmp_path / "items.jsonl"
    rows = [{"id": "q1", "text": "the model said what it had seen"}, {"id": "q2", "text": ""},
            {"id": "q3", "text": "seen unseen " * 80}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def invoke(*args):
    return runner.invoke(app, ["score", *map(str, args)])


def test_scores_items_and_counts_skips(tmp_path, model_dir, items):
    out = tmp_path / "scores" / "tiny.jsonl"
    result = invoke("--model", model_dir, "--data", items, "--out", out, "--device", "cpu", "--batch-tokens", "128")
    assert result.exit_code == 0, result.output
    assert "2 of 3 items scored" in result.output
    assert "1 items skipped (1 empty_text); first: id 'q2' (record 2)" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q3"]
    assert rows[1]["n_tokens"] > 64  # longer than the context: sliding windows
    again = invoke("--model", model_dir, "--data", items, "--out", out, "--device", "cpu")
    assert again.exit_code == 0 and "2 from cache, 0 tokens computed" in again.output


def expect_error(result, *fragments):
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich may wrap long paths
    for fragment in fragments:
        assert fragment in text
    assert "Traceback" not in result.output


def test_missing_model_path(tmp_path, items):
    result = invoke("--model", tmp_path / "absent", "--data", items, "--out", tmp_path / "o.jsonl")
    expect_error(result, "absent", "model path does not exist")


def test_directory_without_weights(tmp_path, model_dir, items):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").unlink()
    result = invoke("--model", broken, "--data", items, "--out", tmp_path / "o.jsonl")
    expect_error(result, "broken", "no weight files")


def test_unreadable_data_file(tmp_path, model_dir):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"id": "a", "text": "ok"}\n\xff\xfe not utf-8\n')
    result = invoke("--model", model_dir, "--data", data, "--out", tmp_path / "o.jsonl")
    expect_error(result, "bad.jsonl", "not valid UTF-8")


def test_missing_data_file(tmp_path, model_dir):
    result = invoke("--model", model_dir, "--data", tmp_path / "none.jsonl", "--out", tmp_path / "o.jsonl")
    expect_error(result, "none.jsonl", "no such file")


def test_data_without_text_field_names_the_record(tmp_path, model_dir):
    data = tmp_path / "items.jsonl"
    data.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "question": "where is the text?"}\n')
    result = invoke("--model", model_dir, "--data", data, "--out", tmp_path / "o.jsonl")
    expect_error(result, "items.jsonl, record 2", "missing text field 'text'")


def test_item_longer_than_every_limit_is_a_counted_skip(tmp_path, model_dir):
    data = tmp_path / "probes.jsonl"
    long = "seen unseen " * 80
    data.write_text(json.dumps({"id": "big", "text": long, "prefix": "seen", "suffix": long}) + "\n" +
                    json.dumps({"id": "ok", "text": "a b c d", "prefix": "a b", "suffix": " c d"}) + "\n")
    result = invoke("--model", model_dir, "--data", data, "--out", tmp_path / "o.jsonl", "--completion")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "1 of 2 items scored" in text and "1 suffix_too_long" in text and "cannot fit max-length 64" in text


def test_bad_option_values(tmp_path, model_dir, items):
    expect_error(invoke("--model", model_dir, "--data", items, "--out", tmp_path / "o.jsonl", "--dtype", "int4"),
                 "`dtype` must be one of")
    expect_error(invoke("--model", model_dir, "--data", items, "--out", tmp_path / "o.jsonl", "--stride", "0"),
                 "`stride` must be an integer >= 1")


def test_token_progress_restarts_for_each_file_and_never_overshoots():
    """Scoring a second file in the same phase showed '1176/999 tokens' (issue 23)."""
    from rich.console import Console

    from contaudit.progress import TokenProgress

    with TokenProgress(console=Console(file=open(os.devnull, "w"))) as bar:
        bar("likelihood", 0, 999)
        bar("likelihood", 999, 999)
        bar("likelihood", 0, 1176)
        bar("likelihood", 600, 1176)
        task = bar._progress.tasks[0]
        assert (task.completed, task.total) == (600, 1176)
        bar("likelihood", 1176, 1176)
        assert all(t.completed <= t.total for t in bar._progress.tasks) and len(bar._progress.tasks) == 1


def test_progress_bars_stay_out_of_logs():
    """In a log (not a terminal) the bars were printed after the verdict, frozen at their last refresh (issue 25)."""
    import io

    from rich.console import Console

    from contaudit.progress import TokenProgress

    log = io.StringIO()
    with TokenProgress(console=Console(file=log, force_terminal=False)) as bar:
        bar("likelihood", 0, 18178)
        bar("likelihood", 17109, 18178)
    assert log.getvalue() == ""
