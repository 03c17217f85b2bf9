"""Exit codes that cannot be confused: 2 bad input, 5 an unexpected error, 130 Ctrl-C, and the
gate's own codes (0 pass, 1 fail, 3, 4) only for gate outcomes, even when the reader of the
output stops early."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import cli
from contaudit.analysis import analyze
from contaudit.analysis.simulate import simulate_audit, write_audit
from contaudit.errors import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A finished analysis whose verdict is NO_EVIDENCE (a gate at SUSPECT passes: exit 0)."""
    root = tmp_path_factory.mktemp("clean")
    f = write_audit(simulate_audit(rng=0), root / "sim")
    analyze(f["suspect_test"], f["clean_test"], f["suspect_shadow"], f["clean_shadow"],
            suspect_probes=f["suspect_probes"], clean_probes=f["clean_probes"], probes=f["probes"],
            shadow_origin="random_split", out=root / "run")
    return root / "run"


def test_an_unexpected_error_exits_5_with_one_line_not_a_gate_failure(clean_run, monkeypatch):
    import contaudit.suite

    def broken(*args, **kwargs):
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(contaudit.suite, "gate_run", broken)
    code, output = cli("screen", clean_run, "--fail-on", "SUSPECT")
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == EXIT_INTERNAL_ERROR == 5, output
    assert "Traceback" not in output and len(lines) == 1, output
    assert "RuntimeError: the disk went away" in lines[0] and "--debug" in lines[0]


def test_ctrl_c_says_how_to_resume_and_exits_130(clean_run, monkeypatch):
    import contaudit.suite

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(contaudit.suite, "gate_run", interrupted)
    code, output = cli("screen", clean_run, "--fail-on", "SUSPECT")
    assert code == EXIT_INTERRUPTED == 130
    assert "rerun the same command to resume" in output


def test_a_pass_read_by_head_still_exits_0(clean_run):
    """The reader closes the pipe before contaudit prints: the gate's code survives (it was 1)."""
    exe = Path(sys.executable).with_name("contaudit")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(exe), "screen", str(clean_run), "--fail-on", "SUSPECT", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # as `| head -c 0` does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()

    passed = subprocess.run([str(exe), "screen", str(clean_run), "--fail-on", "SUSPECT"], capture_output=True,
                            env=env, timeout=120)
    assert passed.returncode == 0 and passed.stdout.startswith(b"PASS"), passed


def test_a_usage_error_stays_a_usage_error_not_an_internal_one():
    code, output = cli("score", "--bogus")
    assert code == 2 and "No such option: --bogus" in output and "Internal error" not in output


def test_flags_show_no_value_in_the_help():
    """A pure flag showed a '<bool>' metavar (issue 25: '--ray <bool>' suggests it takes a value)."""
    import re

    code, output = cli("score", "--help")
    assert code == 0 and "<bool>" not in output
    assert re.search(r"--ray\s+Run the replicas", output)


@pytest.mark.parametrize("command, text", [
    ("analyze", "[sets] shadow_origin"),
    ("screen", "its [gate]"),
    ("calibrate", "the [probes] and [analysis] tables"),
])
def test_help_texts_keep_the_protocol_tables_they_name(command, text):
    """Rich markup swallowed '[gate]' and '[sets]' (issue 25: "a suite's default: its ")."""
    code, output = cli(command, "--help")
    assert code == 0 and text in " ".join(output.split()), output
