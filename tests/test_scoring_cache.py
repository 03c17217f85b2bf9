"""Resuming: a killed or failed run, rerun, ends with exactly one score per item."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from contaudit.scoring import score
from contaudit.scoring.cache import ScoreCache, text_hash
from tiny_models import save_tiny_model, tiny_corpus

# Many small batches, run by two CPU workers (a tiny model would otherwise get one thread).
SETTINGS = {"device": "cpu", "max_length": 48, "batch_tokens": 96, "completion_batch_tokens": 96, "threads": 2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "gpt2", arch="gpt2")


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Probe-style items of varied length; some longer than max_length (sliding windows)."""
    path = tmp_path_factory.mktemp("d") / "probes.jsonl"
    lines = tiny_corpus(60, seed=3)
    with open(path, "w") as f:
        for i in range(20):
            words = " ".join(lines[i:i + 1 + i % 6]).split()
            cut = max(1, len(words) - 5)
            f.write(json.dumps({"id": f"p{i}", "probe_set": "seen" if i % 2 else "unseen", "text": " ".join(words),
                                "prefix": " ".join(words[:cut]), "suffix": " " + " ".join(words[cut:])}) + "\n")
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_scores(got, want):
    assert [r["id"] for r in got] == [r["id"] for r in want]  # exactly one row per item, input order
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for name in a:
            if isinstance(a[name], float):
                assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-6), (a["id"], name)
            else:
                assert a[name] == b[name], (a["id"], name)


@pytest.fixture(scope="module")
def uninterrupted(model_dir, probes, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    score(model_dir, probes, out, completion=True, use_cache=False, **SETTINGS)
    return read_rows(out)


KILL_SCRIPT = """
import os, signal, sys
from contaudit.scoring import score
batches = []
def progress(phase, done, total):
    if done:
        batches.append(phase)
    if len(batches) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers: a real kill
score(sys.argv[1], sys.argv[2], sys.argv[3], completion=True, progress=progress, **{settings})
"""


def test_killed_run_resumes_to_the_uninterrupted_scores(tmp_path, model_dir, probes, uninterrupted):
    out = tmp_path / "scores" / "run.jsonl"
    script = KILL_SCRIPT.replace("{settings}", repr(SETTINGS))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(model_dir), str(probes), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()  # the output is written atomically at the end, never half
    cache_files = list((out.parent / ".contaudit-cache").glob("likelihood-*.jsonl"))
    assert len(cache_files) == 1
    done_before = len(cache_files[0].read_text().splitlines())
    assert 0 < done_before < len(uninterrupted)

    batches = []
    result = score(model_dir, probes, out, completion=True, progress=lambda *a: batches.append(a), **SETTINGS)
    assert result.n_scored == len(uninterrupted)
    assert 0 < result.tokens_computed  # it finished the rest ...
    likelihood_done = [d for phase, d, t in batches if phase == "likelihood"]
    assert likelihood_done[-1] < sum(r["n_tokens"] for r in uninterrupted)  # ... without redoing the start
    assert_same_scores(read_rows(out), uninterrupted)
    assert len(cache_files[0].read_text().splitlines()) == len(uninterrupted)  # each item cached once


def test_failure_during_completion_loses_nothing(tmp_path, model_dir, probes, uninterrupted):
    out = tmp_path / "run.jsonl"
    seen = []

    def fail_after_two_completion_batches(phase, done, total):
        if phase == "completion" and done:
            seen.append(done)
            if len(seen) == 2:
                raise KeyboardInterrupt  # the user pressed Ctrl-C

    with pytest.raises(KeyboardInterrupt):  # raised in the main thread while CPU workers run batches
        score(model_dir, probes, out, completion=True, progress=fail_after_two_completion_batches, **SETTINGS)
    assert len(seen) == 2
    assert not out.exists()
    phases = []
    result = score(model_dir, probes, out, completion=True, progress=lambda *a: phases.append(a[0]), **SETTINGS)
    assert "likelihood" not in phases  # every likelihood score came from the cache
    assert 0 < result.from_cache < result.n_scored and result.tokens_computed > 0  # completions partly cached
    assert_same_scores(read_rows(out), uninterrupted)
    again = score(model_dir, probes, out, completion=True, **SETTINGS)
    assert again.from_cache == again.n_scored and again.tokens_computed == 0
    assert_same_scores(read_rows(out), uninterrupted)


def test_changed_settings_do_not_reuse_scores(tmp_path, model_dir, probes):
    out = tmp_path / "a.jsonl"
    score(model_dir, probes, out, **SETTINGS)
    other = score(model_dir, probes, out, **{**SETTINGS, "max_length": 40})
    assert other.from_cache == 0
    same = score(model_dir, probes, out, **{**SETTINGS, "batch_tokens": 500})  # batching is not a setting of a score
    assert same.from_cache == same.n_scored


def test_scores_cached_before_per_byte_fields_gain_them_unchanged(tmp_path, model_dir, probes):
    """A likelihood cache written before ``n_bytes`` and ``nll_per_byte`` existed stays valid: the rerun takes
    every item from it and writes the bytes of a fresh run (the fields derive from the text, n_tokens, nll_mean)."""
    fresh = score(model_dir, probes, tmp_path / "fresh.jsonl", **SETTINGS)
    cache_file, = (tmp_path / ".contaudit-cache").glob("likelihood-*.jsonl")
    entries = [json.loads(line) for line in cache_file.read_text().splitlines()]
    assert all({"n_bytes", "nll_per_byte"} <= set(e["v"]) for e in entries)
    for e in entries:
        del e["v"]["n_bytes"], e["v"]["nll_per_byte"]
    cache_file.write_text("".join(json.dumps(e) + "\n" for e in entries))
    again = score(model_dir, probes, tmp_path / "again.jsonl", **SETTINGS)
    assert again.from_cache == again.n_scored == fresh.n_scored and again.tokens_computed == 0
    assert (tmp_path / "again.jsonl").read_bytes() == fresh.out.read_bytes()
    assert all("nll_per_byte" in r for r in read_rows(again.out))


def test_torn_last_line_is_cut_and_appends_continue(tmp_path):
    cache = ScoreCache(tmp_path, {"kind": "likelihood", "model": "m"})
    cache.add({"a": {"nll_mean": 1.5}, "b": {"nll_mean": 2.5}})
    with open(cache.path, "a") as f:
        f.write('{"h": "c", "v": {"nll_me')  # killed mid-write
    assert ScoreCache(tmp_path, {"kind": "likelihood", "model": "m"}).load() == {"a": {"nll_mean": 1.5},
                                                                                "b": {"nll_mean": 2.5}}
    cache.add({"c": {"nll_mean": 3.5}})
    assert cache.load()["c"] == {"nll_mean": 3.5}
    for line in cache.path.read_text().splitlines():  # plain JSON data, nothing that executes on load
        assert set(json.loads(line)) == {"h", "v"}
    key_file = cache.path.with_name(cache.path.name.replace(".jsonl", ".key.json"))
    assert json.loads(key_file.read_text())["model"] == "m"


def test_item_hash_separates_prefix_and_suffix():
    assert text_hash("ab", "c") != text_hash("a", "bc")
    assert text_hash("x") == text_hash("x")
