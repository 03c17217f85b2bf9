"""`contaudit index --ray`: the same index as one machine, byte for byte; resume; the CLI.

Needs the optional extra (`pip install 'contaudit[ray]'`, which scripts/install.sh
installs). Without it these tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from contaudit.cli import app
from contaudit.errors import InputError
from contaudit.index import IndexConfig, build_index, build_indexes
from contaudit.index import build as build_mod

from planted import make_planted

if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
    import ray  # CI installs the extra: a missing ray is a failure there, not a skip
else:
    ray = pytest.importorskip("ray", reason="the optional extra is not installed: pip install 'contaudit[ray]'")

SMALL = dict(shard_mb=0.1, batch_mb=0.03)  # several shards per file, several batches per shard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A planted corpus as four units: three JSON Lines files and a directory of text files."""
    root = tmp_path_factory.mktemp("ray-corpus")
    planted = make_planted(root)
    lines = planted.corpus.read_text().splitlines(keepends=True)
    files = []
    for k in range(3):
        files.append(root / f"part-{k}.jsonl")
        files[-1].write_text("".join(lines[k:300:3]))
    texts = root / "texts"
    texts.mkdir()
    for k, line in enumerate(lines[300:]):
        (texts / f"doc-{k:03d}.txt").write_text(json.loads(line)["text"])
    planted.parts = files + [texts]
    return planted


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """One-machine indexes: of the four units, and of the planted corpus as one file."""
    root = tmp_path_factory.mktemp("ray-ref")
    build_index(corpus.parts, corpus.bench, root / "parts", config=IndexConfig(**SMALL))
    build_index([corpus.corpus], corpus.bench, root / "one", config=IndexConfig(**SMALL))
    return root


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for this module; builds use it and leave it running."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def assert_same_index(out, ref):
    assert (out / "items.jsonl").read_bytes() == (ref / "items.jsonl").read_bytes()
    timing = ("created", "seconds")
    mine, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, ref))
    assert {k: v for k, v in mine.items() if k not in timing} == {k: v for k, v in theirs.items() if k not in timing}


def test_starts_and_stops_its_own_local_instance(corpus, reference, tmp_path, monkeypatch):
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local instance, not a cluster
    summary = build_index(corpus.parts, corpus.bench, tmp_path / "i", config=IndexConfig(ray=True, workers=2, **SMALL))
    assert not ray.is_initialized(), "a local instance started by the build is stopped by it"
    assert summary.shards_total > 4 and summary.shards_resumed == 0
    assert_same_index(tmp_path / "i", reference / "parts")
    assert not (tmp_path / "i.partial").exists()


def test_one_file_is_split_across_tasks(corpus, reference, local_ray, tmp_path):
    # one unit and two workers: two tasks read the file, each scans every other batch
    build_index([corpus.corpus], corpus.bench, tmp_path / "i", config=IndexConfig(ray=True, workers=2, **SMALL))
    assert_same_index(tmp_path / "i", reference / "one")
    assert ray.is_initialized(), "an instance the build did not start is left running"


def test_resumes_the_shards_of_a_one_machine_run(corpus, reference, local_ray, tmp_path, monkeypatch):
    out = tmp_path / "i"
    real_scan, calls = build_mod._scan_batch, {"n": 0}

    def failing_scan(docs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return real_scan(docs)

    monkeypatch.setattr(build_mod, "_scan_batch", failing_scan)
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus.parts, corpus.bench, out, config=IndexConfig(**SMALL))
    monkeypatch.setattr(build_mod, "_scan_batch", real_scan)
    done = sorted(p.name for p in out.with_name("i.partial").glob("shard-*.json"))
    assert done
    summary = build_index(corpus.parts, corpus.bench, out, config=IndexConfig(ray=True, workers=2, **SMALL))
    assert summary.shards_resumed == len(done)
    items = (out / "items.jsonl").read_bytes()
    assert items == (reference / "parts" / "items.jsonl").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus"] == {**json.loads((reference / "parts" / "manifest.json").read_text())["corpus"],
                                  "shards_resumed": len(done)}


def test_an_interrupted_ray_build_keeps_its_finished_shards(corpus, reference, local_ray, tmp_path):
    out = tmp_path / "i"
    seen = {"n": 0}

    def interrupt(nbytes):
        seen["n"] += 1
        if seen["n"] == 10:
            raise KeyboardInterrupt

    config = IndexConfig(ray=True, workers=2, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus.parts, corpus.bench, out, config=config, progress=interrupt)
    assert not out.exists()
    done = sorted(p.name for p in out.with_name("i.partial").glob("shard-*.json"))
    assert done, "the shards finished before the interruption are saved"
    summary = build_index(corpus.parts, corpus.bench, out, config=config)
    assert summary.shards_resumed == len(done)
    assert (out / "items.jsonl").read_bytes() == (reference / "parts" / "items.jsonl").read_bytes()


def test_several_benchmarks_in_one_ray_scan_are_their_one_machine_indexes(corpus, reference, local_ray, tmp_path):
    half = tmp_path / "half.jsonl"  # every other item: the same ids and texts as in the whole benchmark
    half.write_text("".join(corpus.bench.read_text().splitlines(keepends=True)[::2]))
    build_index(corpus.parts, half, tmp_path / "half", config=IndexConfig(**SMALL))
    targets = {tmp_path / "ray" / "all": corpus.bench, tmp_path / "ray" / "half": half}
    summaries = build_indexes(corpus.parts, targets, tmp_path / "ray.partial",
                              config=IndexConfig(ray=True, workers=2, **SMALL))
    assert [s.shards_resumed for s in summaries] == [0, 0]
    for out, ref in zip(targets, (reference / "parts", tmp_path / "half")):
        assert (out / "items.jsonl").read_bytes() == (ref / "items.jsonl").read_bytes()
        manifest, single = (json.loads((d / "manifest.json").read_text()) for d in (out, ref))
        assert manifest["corpus"] == single["corpus"] and manifest["plan_sha256"] == single["plan_sha256"]
        assert manifest["scan"]["benchmarks"] == 2
    assert not (tmp_path / "ray.partial").exists()


def test_a_bad_record_read_by_a_task_is_a_one_line_input_error(corpus, local_ray, tmp_path):
    bad = tmp_path / "bad.jsonl"
    shutil.copy(corpus.parts[0], bad)
    with open(bad, "a") as f:
        f.write("{oops\n")
    with pytest.raises(InputError, match=r"bad\.jsonl, record 101: malformed JSON"):
        build_index([corpus.parts[1], bad], corpus.bench, tmp_path / "i", config=IndexConfig(ray=True, **SMALL))
    assert not (tmp_path / "i").exists()


def test_skipped_records_are_counted_as_on_one_machine(corpus, local_ray, tmp_path):
    parts = []
    for k, src in enumerate(corpus.parts[:3]):
        parts.append(tmp_path / src.name)
        lines = src.read_text().splitlines(keepends=True)
        parts[-1].write_text("".join(lines[:40] + [f"{{bad {k}\n"] + lines[40:] + ['{"no_text": 1}\n']))
    config = dict(skip_bad=True, neardup=False, **SMALL)
    build_index(parts, corpus.bench, tmp_path / "here", config=IndexConfig(**config))
    build_index(parts, corpus.bench, tmp_path / "ray", config=IndexConfig(ray=True, workers=2, **config))
    assert_same_index(tmp_path / "ray", tmp_path / "here")
    documents = json.loads((tmp_path / "ray" / "manifest.json").read_text())["corpus"]["documents"]
    assert documents["skipped"] == 6 and len(documents["skip_examples"]) == 6


def test_cli_ray(corpus, reference, local_ray, tmp_path):
    def index(out, *options):
        args = ["index", *map(str, corpus.parts), "-b", str(corpus.bench), "-o", str(out), "--shard-mb", "0.1"]
        result = CliRunner().invoke(app, args + list(options))
        assert result.exit_code == 0, result.output
        assert "Index written to" in result.output

    index(tmp_path / "ray", "--ray", "--workers", "2")
    index(tmp_path / "here")
    assert (tmp_path / "ray" / "items.jsonl").read_bytes() == (tmp_path / "here" / "items.jsonl").read_bytes()
