"""Run directories owned by one command at a time: a lock, no foreign files, no links (issue 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cli_helpers import cli, one_line_error
from contaudit.errors import InputError
from contaudit.rundir import LOCK_NAME, MARKER_NAME, run_directory

PROTOCOL = """
[models.suspect]
path = "suspect"
[models.clean]
path = "clean"
[sets.test]
path = "test.jsonl"
[sets.shadow]
path = "shadow.jsonl"
"""


@pytest.fixture
def protocol(tmp_path):
    """A protocol that loads (its models need not be real: these runs are refused before scoring)."""
    for name in ("suspect", "clean"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    for name in ("test", "shadow"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"id": name, "text": "x"}) + "\n")
    path = tmp_path / "protocol.toml"
    path.write_text(PROTOCOL)
    return path


def test_a_second_audit_on_the_same_out_fails_at_once_with_one_line(tmp_path, protocol):
    run = tmp_path / "run"
    # The first command runs in another process (flock locks belong to the open file, per process).
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom contaudit.rundir import run_directory\n"
        f"with run_directory({str(run)!r}, 'audit'):\n    print('held', flush=True)\n    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, output = cli("audit", protocol, "--out", run)
        one_line_error(code, output, "another contaudit command is writing this run directory", LOCK_NAME)
        assert sorted(p.name for p in run.iterdir()) == sorted([LOCK_NAME, MARKER_NAME])  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    with run_directory(run, "audit"):  # the lock goes with its holder
        pass


def test_audit_refuses_a_folder_of_the_users_files(tmp_path, protocol):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")
    code, output = cli("audit", protocol, "--out", mine)
    one_line_error(code, output, "holds files contaudit did not write (report.md)", "choose a new or empty --out")
    assert (mine / "report.md").read_text() == "my notes\n" and sorted(os.listdir(mine)) == ["report.md"]


def test_a_run_directory_of_another_command_is_refused(tmp_path):
    with run_directory(tmp_path / "cal", "calibrate"):
        (tmp_path / "cal" / "calibration.json").write_text("{}")
    with pytest.raises(InputError, match="is the run directory of `contaudit calibrate`, not of `contaudit audit`"):
        with run_directory(tmp_path / "cal", "audit"):
            pass
    with run_directory(tmp_path / "cal", "calibrate"):  # its own command resumes it
        pass


def test_links_inside_a_run_directory_are_refused(tmp_path):
    run = tmp_path / "run"
    with run_directory(run, "audit"):
        (run / "scores").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "sets").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match=r"sets: is a symbolic link inside the run directory"):
        with run_directory(run, "audit"):
            pass
    (run / "sets").unlink()
    (tmp_path / "cache.jsonl").write_text("")
    (run / "scores" / "cache.jsonl").symlink_to(tmp_path / "cache.jsonl")
    with pytest.raises(InputError, match=r"cache.jsonl: is a symbolic link"):
        with run_directory(run, "audit"):
            pass
    assert (tmp_path / "cache.jsonl").read_text() == "" and list(elsewhere.iterdir()) == []


def test_a_run_directory_of_an_earlier_version_is_still_resumed(tmp_path):
    """Before the marker, a run directory was recognised by what contaudit wrote in it."""
    old = tmp_path / "old"
    (old / "scores" / "suspect").mkdir(parents=True)
    (old / "scores" / "suspect" / "test.manifest.json").write_text(json.dumps(
        {"stage": "score", "contaudit_version": "0.9"}))
    with run_directory(old, "audit"):
        pass
    assert json.loads((old / MARKER_NAME).read_text())["command"] == "audit"


def test_out_may_not_be_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="--out must be a directory"):
        with run_directory(tmp_path / "f", "audit"):
            pass


def test_a_protocol_alone_cannot_make_contaudit_run_model_code(tmp_path, protocol):
    """trust_remote_code = true in a protocol file runs the model's own Python: the command line must agree."""
    asking = protocol.with_name("remote.toml")
    asking.write_text(PROTOCOL.replace('path = "clean"\n', 'path = "clean"\ntrust_remote_code = true\n'))
    code, output = cli("audit", asking, "--out", tmp_path / "run")
    one_line_error(code, output, "models.clean set trust_remote_code = true", "pass --trust-remote-code")
    assert not (tmp_path / "run").exists()
