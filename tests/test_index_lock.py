"""One index build per --out at a time (a lock on OUT.partial/lock), and `--ray` without its extra."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.errors import InputError
from contaudit.index import IndexConfig, build_index, load_index

from planted import make_planted

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted(tmp_path_factory.mktemp("lock"), n_items=60, n_docs=200)


def test_a_second_build_of_the_same_out_fails_at_once(planted, tmp_path):
    out = tmp_path / "idx"
    partial = tmp_path / "idx.partial"
    partial.mkdir()
    with open(partial / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running build holds it
        with pytest.raises(InputError, match=r"another contaudit index run is writing .*idx \(lock .*idx\.partial/lock\); "
                                             r"wait for it or choose another --out"):
            build_index([planted.corpus], planted.bench, out)
    assert not out.exists()
    summary = build_index([planted.corpus], planted.bench, out)  # the lock is free again
    assert summary.index.manifest["counts"]["items"] == 60
    assert not partial.exists()


def test_two_concurrent_runs_cannot_mix(planted, tmp_path):
    """A build in another process holds the lock while it runs; a second run exits 2 with one line."""
    out, started, go = tmp_path / "idx", tmp_path / "started", tmp_path / "go"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from contaudit.index import IndexConfig, build_index

        def progress(nbytes):
            Path({str(started)!r}).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.02)

        build_index([{str(planted.corpus)!r}], {str(planted.bench)!r}, {str(out)!r},
                    config=IndexConfig(shard_mb=0.05, batch_mb=0.02), progress=progress)
    """)
    first = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first build never started scanning"
            time.sleep(0.05)
        result = CliRunner().invoke(app, ["index", str(planted.corpus), "-b", str(planted.bench), "-o", str(out),
                                          "--no-neardup"])
        assert result.exit_code == 2
        assert "another contaudit index run is writing" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    finally:
        go.touch()
        first.wait(timeout=120)
    assert first.returncode == 0, first.stderr.read()
    index = load_index(out)
    assert index.manifest["parameters"]["neardup"] is True  # the first run's index, not a mixture
    assert index.manifest["corpus"]["shards_resumed"] == 0
    assert index.manifest["corpus"]["documents"]["read"] == 200


def test_a_failed_build_leaves_no_lock_behind(planted, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b"\n')
    with pytest.raises(InputError, match="malformed JSON"):
        build_index([planted.corpus], bad, tmp_path / "idx")
    assert not (tmp_path / "idx.partial").exists()


def test_a_stale_lock_file_of_a_killed_run_is_no_obstacle(planted, tmp_path):
    partial = tmp_path / "idx.partial"
    partial.mkdir()
    (partial / "lock").write_text("")  # left by a run killed before it wrote plan.json; nobody holds it
    build_index([planted.corpus], planted.bench, tmp_path / "idx", config=IndexConfig(neardup=False))
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["counts"]["items"] == 60
    assert not partial.exists()


def test_ray_without_the_extra_says_how_to_install_it(planted, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"--ray needs the optional extra: pip install 'contaudit\[ray\]'"):
        build_index([planted.corpus], planted.bench, tmp_path / "idx", config=IndexConfig(ray=True))
    assert not (tmp_path / "idx.partial").exists()
    result = CliRunner().invoke(app, ["index", str(planted.corpus), "-b", str(planted.bench), "-o",
                                      str(tmp_path / "idx"), "--ray"])
    assert result.exit_code == 2 and "pip install 'contaudit[ray]'" in result.output
