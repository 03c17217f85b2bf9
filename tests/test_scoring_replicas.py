"""Data-parallel scoring: replicas (processes, Ray actors) give one process's scores, bit for bit; kills resume.

The Ray test needs the optional extra (`pip install 'contaudit[ray]'`); without it it
skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contaudit.config import ScoreSettings
from contaudit.errors import InputError
from contaudit.models import resolve_model
from contaudit.scoring import score
from contaudit import ray_support
from contaudit.scoring.replicas import ReplicaError, process_plan, ray_plan
from tiny_models import save_tiny_model, tiny_corpus

# Many small batches (several per replica and phase), likelihood and completion.
SETTINGS = {"device": "cpu", "max_length": 48, "batch_tokens": 96, "completion_batch_tokens": 96, "completion": True}
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "llama", arch="llama", n_positions=64)


def write_probes(path: Path, n: int, *, seed: int) -> Path:
    """``n`` probe-style items of 1-6 corpus lines; the longer ones exceed max_length 48 (several windows)."""
    lines = tiny_corpus(n + 10, seed=seed)
    with open(path, "w") as f:
        for i in range(n):
            words = " ".join(lines[i:i + 1 + i % 6]).split()
            cut = max(1, len(words) - 5)
            f.write(json.dumps({"id": f"p{i}", "text": " ".join(words), "prefix": " ".join(words[:cut]),
                                "suffix": " " + " ".join(words[cut:])}) + "\n")
    return path


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return write_probes(tmp_path_factory.mktemp("d") / "probes.jsonl", 20, seed=5)


@pytest.fixture(scope="module")
def reference(model_dir, probes, tmp_path_factory):
    """The scores file of one process, uninterrupted."""
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    score(model_dir, probes, out, use_cache=False, **SETTINGS)
    return out.read_bytes()


def assert_same_after_resume(got: bytes, want: bytes) -> None:
    """A resumed run re-batches the items left, and padding changes float rounding (~1e-8): same rows, ids,
    integers and strings, floats to 1e-6 relative."""
    rows, ref = [json.loads(x) for x in got.splitlines()], [json.loads(x) for x in want.splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ref]
    for r, e in zip(rows, ref):
        assert r.keys() == e.keys()
        for k, v in e.items():
            if isinstance(v, float):
                assert r[k] == pytest.approx(v, rel=1e-6, abs=1e-9), (r["id"], k)
            else:
                assert r[k] == v, (r["id"], k)


def cache_lines(cache_dir: Path, kind: str) -> list[str]:
    files = list(cache_dir.glob(f"{kind}-*.jsonl"))
    assert len(files) == 1, files  # one cache file per key, whoever computed it
    return files[0].read_text().splitlines()


def children() -> list[int]:
    """Live child processes of this process (the replica processes), leaving out multiprocessing's resource
    tracker, which a spawned pool of an earlier test (an encoder index's workers) leaves for this process's life."""
    pids = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return [p for p in pids if b"resource_tracker" not in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:  # it exited meanwhile
        return b""


def test_two_replica_processes_score_as_one_process(tmp_path, model_dir, probes, reference):
    out = tmp_path / "two.jsonl"
    result = score(model_dir, probes, out, replicas=2, **SETTINGS)
    assert out.read_bytes() == reference  # every number bit for bit: the batches are one process's batches
    assert all({"n_bytes", "nll_per_byte"} <= set(json.loads(line)) for line in reference.splitlines())
    manifest = json.loads(result.manifest.read_text())
    assert manifest["device"] == "cpu, cpu"
    assert manifest["parameters"]["replicas"] == 2 and manifest["parameters"]["devices_used"] == ["cpu", "cpu"]
    assert manifest["counts"]["scored"] == 20
    assert not children()  # the replicas have exited
    # one cache, the one a single process keeps: each item once, and a one-process run takes it all
    cache = tmp_path / ".contaudit-cache"
    assert len(cache_lines(cache, "likelihood")) == len(cache_lines(cache, "completion")) == 20
    again = score(model_dir, probes, tmp_path / "again.jsonl", **SETTINGS)
    assert again.from_cache == again.n_scored == 20 and again.tokens_computed == 0


KILL_SCRIPT = """
import os, signal, sys
from contaudit.scoring import score
batches = []
def progress(phase, done, total):
    if done:
        batches.append(phase)
    if len(batches) == 3:
        pids = [p for t in os.listdir("/proc/self/task") for p in open(f"/proc/self/task/{t}/children").read().split()]
        open(sys.argv[4], "w").write(" ".join(pids))
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers: a real kill
score(sys.argv[1], sys.argv[2], sys.argv[3], replicas=2, progress=progress, **{settings})
"""


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # exited (a zombie until reaped)
    except FileNotFoundError:
        return True


def test_killed_run_resumes_to_the_uninterrupted_scores(tmp_path, model_dir, probes, reference):
    out = tmp_path / "scores" / "run.jsonl"
    pid_file = tmp_path / "replica-pids"
    script = KILL_SCRIPT.replace("{settings}", repr(SETTINGS))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(model_dir), str(probes), str(out), str(pid_file)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()  # written atomically at the end, never half
    replica_pids = [int(p) for p in pid_file.read_text().split()]
    assert len(replica_pids) == 2
    deadline = time.monotonic() + 60
    while not all(gone(p) for p in replica_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(p) for p in replica_pids), "replicas outlived their driver"
    cache = out.parent / ".contaudit-cache"
    done_before = len(cache_lines(cache, "likelihood"))
    assert 0 < done_before < 20

    phases = []
    result = score(model_dir, probes, out, replicas=2, progress=lambda *a: phases.append(a), **SETTINGS)
    all_tokens = sum(json.loads(line)["n_tokens"] for line in reference.splitlines())
    likelihood_totals = {total for phase, _, total in phases if phase == "likelihood"}
    assert len(likelihood_totals) == 1 and 0 < likelihood_totals.pop() < all_tokens  # finished items not redone
    assert result.n_scored == 20
    assert_same_after_resume(out.read_bytes(), reference)
    assert len(cache_lines(cache, "likelihood")) == 20  # each item cached once


def test_a_dead_replica_stops_the_run_and_one_process_resumes(tmp_path, model_dir, probes, reference):
    out = tmp_path / "run.jsonl"
    killed = []

    def kill_one_replica(phase, done, total):
        if done and not killed:
            killed.append(children()[0])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(ReplicaError, match=r"died \(killed by signal 9\); finished items are in the cache"):
        score(model_dir, probes, out, replicas=2, progress=kill_one_replica, **SETTINGS)
    assert killed and not children()  # the other replica was stopped too
    assert not out.exists()
    done_before = len(cache_lines(tmp_path / ".contaudit-cache", "likelihood"))
    assert 0 < done_before < 20
    # the cache is the one a single process keeps: resume without replicas (two CPU workers)
    result = score(model_dir, probes, out, threads=2, **SETTINGS)
    assert result.n_scored == 20
    assert_same_after_resume(out.read_bytes(), reference)


def test_replica_plans_split_gpus_and_threads(monkeypatch, model_dir):
    source = resolve_model(model_dir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    specs, envs, labels = process_plan(source, ScoreSettings(replicas=2, devices=("cuda:0", "cuda:1", "cuda:2",
                                                                                  "cuda:3")))
    assert labels == ["cuda:0+cuda:1", "cuda:2+cuda:3"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3,5", "6,7"]  # each replica sees its own GPUs only ...
    assert [s["devices"] for s in specs] == [["cuda:0", "cuda:1"]] * 2  # ... as cuda:0 and cuda:1, one model split
    specs, envs, labels = process_plan(source, ScoreSettings(replicas=4))  # device auto: one GPU each
    assert labels == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"] and envs[3]["CUDA_VISIBLE_DEVICES"] == "7"
    with pytest.raises(InputError, match="5 replicas need 5 GPUs"):
        process_plan(source, ScoreSettings(replicas=5))
    with pytest.raises(InputError, match="is one GPU"):
        process_plan(source, ScoreSettings(replicas=2, device="cuda:1"))
    # CPU: the threads are split, the GPUs hidden
    specs, envs, labels = process_plan(source, ScoreSettings(replicas=2, device="cpu", threads=5))
    assert [s["threads"] for s in specs] == [3, 2] and envs[0]["CUDA_VISIBLE_DEVICES"] == ""
    # Ray: GPUs per actor from the groups of devices; on CPU the threads
    specs, options = ray_plan(source, ScoreSettings(replicas=2, ray=True, devices=("cuda:0", "cuda:1", "cuda:2",
                                                                                   "cuda:3")))
    assert [o["num_gpus"] for o in options] == [2, 2] and specs[0]["devices"] == ["cuda:0", "cuda:1"]
    specs, options = ray_plan(source, ScoreSettings(replicas=2, ray=True), cluster={"CPU": 8.0})  # auto, no GPU
    assert [(o["num_cpus"], o["num_gpus"]) for o in options] == [(4, 0), (4, 0)] and specs[0]["devices"] == ["cpu"]


def test_settings_of_devices_and_replicas_are_checked():
    for devices in (("cuda:0", "cpu"), ("cuda:0", "cuda:0"), ("cuda",), ("auto",), "cuda:0"):
        with pytest.raises(InputError, match="`devices` must be"):
            ScoreSettings(devices=devices).validate()
    with pytest.raises(InputError, match="cannot be cut into `replicas` = 2 equal groups"):
        ScoreSettings(devices=("cuda:0", "cuda:1", "cuda:2"), replicas=2).validate()
    with pytest.raises(InputError, match="`replicas` must be an integer >= 1"):
        ScoreSettings(replicas=0).validate()
    ScoreSettings(devices=("cpu", "cpu"), replicas=2).validate()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for this module (the runs use it and leave it running)."""
    if IN_CI:
        import ray  # CI installs the extra: a missing ray is a failure there, not a skip
    else:
        ray = pytest.importorskip("ray", reason="the optional extra is not installed: pip install 'contaudit[ray]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


def test_ray_actors_score_as_one_process_and_resume(tmp_path, model_dir, probes, reference, local_ray):
    out = tmp_path / "ray.jsonl"
    seen = []

    def interrupt_after_the_first_batch(phase, done, total):
        if done:
            seen.append(done)
            raise KeyboardInterrupt  # the user pressed Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        score(model_dir, probes, out, replicas=2, ray=True, progress=interrupt_after_the_first_batch, **SETTINGS)
    done_before = len(cache_lines(tmp_path / ".contaudit-cache", "likelihood"))
    assert seen and 0 < done_before < 20
    result = score(model_dir, probes, out, replicas=2, ray=True, **SETTINGS)
    assert_same_after_resume(out.read_bytes(), reference)
    used = result.settings["devices_used"]
    assert len(used) == 2 and all(d.startswith("cpu@") for d in used)
    assert local_ray.is_initialized()  # an instance the run did not start is left running
    assert len(cache_lines(tmp_path / ".contaudit-cache", "likelihood")) == 20
    assert ray_support.import_ray() is local_ray


def test_more_cpu_replicas_than_cores_are_refused(monkeypatch, model_dir):
    """64 model copies on 2 cores took 268 s against 2 s, without a word (issue 23)."""
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(InputError, match=r"`replicas` = 64 CPU replicas on a machine with 2 cores.*use at most 2"):
        process_plan(resolve_model(model_dir), ScoreSettings(replicas=64, device="cpu"))
    specs, _, _ = process_plan(resolve_model(model_dir), ScoreSettings(replicas=2, device="cpu"))
    assert len(specs) == 2
