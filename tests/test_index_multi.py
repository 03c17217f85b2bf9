"""`build_indexes`: several benchmarks screened with one corpus pass.

Each target is, byte for byte, the index `build_index` writes for its benchmark alone,
with the same plan (so it is reused); the manifests record one shared scan; an
interrupted build resumes from the shared staging directory; bad targets are one-line
errors before any work. (With Ray: tests/test_index_ray.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contaudit.errors import InputError
from contaudit.index import IndexConfig, build_index, build_indexes, load_index
from contaudit.index import build as build_mod
from contaudit.io import is_index_plan

from planted import make_planted

SMALL = {"shard_mb": 0.3, "batch_mb": 0.1}  # three shards of the planted corpus, several batches each
CONFIGS = {
    "neardup": IndexConfig(max_locations=2, **SMALL),
    "palm-workers": IndexConfig.palm(neardup=False, max_locations=1, workers=2, **SMALL),
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A planted corpus and three benchmarks cut from its benchmark: A and B share 50 items (same ids, same
    texts); C reuses A's ids for other texts. Short, CJK, Thai and invisible-character items are in all three."""
    root = tmp_path_factory.mktemp("multi")
    planted = make_planted(root, scripts=True)
    lines = planted.bench.read_text().splitlines(keepends=True)
    a_ids = [json.loads(line)["id"] for line in lines[:150]]
    c_lines = [json.dumps({**json.loads(line), "id": a_ids[k]}) + "\n" for k, line in enumerate(lines[200:])]
    benches = {"a": lines[:150], "b": lines[100:260], "c": c_lines}
    planted.benches = {}
    for name, rows in benches.items():
        planted.benches[name] = root / f"{name}.jsonl"
        planted.benches[name].write_text("".join(rows))
    return planted


@pytest.fixture(scope="module", params=list(CONFIGS))
def built(request, suite, tmp_path_factory):
    """For one config: each benchmark built alone (``single/NAME``) and all three at once (``run/index/NAME``)."""
    config = CONFIGS[request.param]
    root = tmp_path_factory.mktemp(f"built-{request.param}")
    for name, bench in suite.benches.items():
        build_index([suite.corpus], bench, root / "single" / name, config=config)
    targets = {root / "run" / "index" / name: bench for name, bench in suite.benches.items()}
    summaries = build_indexes([suite.corpus], targets, root / "run" / "index.partial", config=config)
    return root, config, summaries


def test_each_target_is_its_single_build_byte_for_byte(suite, built):
    root, _, summaries = built
    for name, summary in zip(suite.benches, summaries):
        items = (root / "run" / "index" / name / "items.jsonl").read_bytes()
        assert items == (root / "single" / name / "items.jsonl").read_bytes(), name
        assert summary.index.path == root / "run" / "index" / name
        assert len(summary.index.items) == len(suite.benches[name].read_text().splitlines())
    a, c = (load_index(root / "run" / "index" / n).by_id() for n in "ac")
    assert a.keys() & c.keys() and all(a[k]["text"] != c[k]["text"] for k in a.keys() & c.keys())
    statuses = {r["status"] for n in suite.benches for r in load_index(root / "run" / "index" / n).items}
    assert statuses == {"seen", "unseen", "ambiguous"}
    assert not (root / "run" / "index.partial").exists()


def test_each_target_is_reused_as_its_single_build(suite, built):
    root, config, _ = built
    for name, bench in suite.benches.items():
        out = root / "run" / "index" / name
        assert build_mod.plan_matches(out, [suite.corpus], bench, config)
        plan = json.loads((out / "manifest.json").read_text())["plan_sha256"]
        assert plan == json.loads((root / "single" / name / "manifest.json").read_text())["plan_sha256"]
    other = suite.benches["b"]
    assert not build_mod.plan_matches(root / "run" / "index" / "a", [suite.corpus], other, config)


def test_the_manifests_record_one_shared_scan(suite, built):
    root, _, summaries = built
    manifests = {n: json.loads((root / "run" / "index" / n / "manifest.json").read_text()) for n in suite.benches}
    single = {n: json.loads((root / "single" / n / "manifest.json").read_text()) for n in suite.benches}
    scans = [m["scan"] for m in manifests.values()]
    assert scans[0] == scans[1] == scans[2]
    assert scans[0]["benchmarks"] == 3
    assert scans[0]["targets"] == [str(root / "run" / "index" / n) for n in suite.benches]
    assert len(scans[0]["staging_plan_sha256"]) == 64
    assert all("scan" not in m for m in single.values())  # one target: the manifest of today
    for name, m in manifests.items():
        assert m["corpus"] == single[name]["corpus"]  # the one scan: same bytes, documents, shards
        assert m["counts"] == single[name]["counts"]  # per benchmark
        assert m["benchmark"] == single[name]["benchmark"]
        assert m["inputs"] == single[name]["inputs"] and m["parameters"] == single[name]["parameters"]
    assert {s.corpus_bytes for s in summaries} == {manifests["a"]["corpus"]["bytes"]}
    assert summaries[0].shards_total == 3


def test_an_interrupted_build_resumes_from_the_shared_staging(suite, tmp_path):
    config = CONFIGS["neardup"]
    targets = {tmp_path / "index" / name: bench for name, bench in suite.benches.items()}
    staging = tmp_path / "index.partial"
    calls = {"n": 0}

    def interrupt(nbytes):
        calls["n"] += 1
        if calls["n"] == 6:  # in the second shard (3 batches of 0.1 MB to a shard)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_indexes([suite.corpus], targets, staging, config=config, progress=interrupt)
    assert not any(out.exists() for out in targets)
    done = sorted(p.name for p in staging.glob("shard-*.json"))
    assert done == ["shard-0-0.json"]
    plan = json.loads((staging / "plan.json").read_text())
    assert is_index_plan(staging / "plan.json") and len(plan["benchmark"]) == 3

    summaries = build_indexes([suite.corpus], targets, staging, config=config)
    assert [s.shards_resumed for s in summaries] == [1, 1, 1]
    single = tmp_path / "single"
    for name, bench in suite.benches.items():
        build_index([suite.corpus], bench, single / name, config=config)
        assert (tmp_path / "index" / name / "items.jsonl").read_bytes() == (single / name / "items.jsonl").read_bytes()
    assert not staging.exists()


def test_a_build_stopped_between_two_targets_publishes_all_when_rerun(suite, tmp_path, monkeypatch):
    config = IndexConfig(neardup=False)
    targets = {tmp_path / "a": suite.benches["a"], tmp_path / "b": suite.benches["b"]}
    real_publish = build_mod._publish

    def publish_once(out, *args):
        if out.name == "b":
            raise KeyboardInterrupt
        real_publish(out, *args)

    monkeypatch.setattr(build_mod, "_publish", publish_once)
    with pytest.raises(KeyboardInterrupt):
        build_indexes([suite.corpus], targets, tmp_path / "staging.partial", config=config)
    assert (tmp_path / "a" / "manifest.json").exists() and not (tmp_path / "b").exists()
    monkeypatch.setattr(build_mod, "_publish", real_publish)
    summaries = build_indexes([suite.corpus], targets, tmp_path / "staging.partial", config=config)
    assert [s.shards_resumed for s in summaries] == [1, 1]
    assert all(build_mod.plan_matches(out, [suite.corpus], bench, config) for out, bench in targets.items())


def one_line_error(targets, staging, corpus, match) -> None:
    with pytest.raises(InputError, match=match) as e:
        build_indexes([corpus], targets, staging)
    assert len(str(e.value).splitlines()) == 1, str(e.value)


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_targets_that_clash_are_one_line_errors_and_nothing_is_touched(suite, tmp_path):
    a, b = suite.benches["a"], suite.benches["b"]
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    (out / "keep" / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    staging = out / "index.partial"
    # the same directory twice (spelled two ways), and a target inside another
    one_line_error({out / "x": a, out / "keep" / ".." / "x": b}, staging, suite.corpus,
                   r"out/x: is written twice by this build \(also as .*out/keep/\.\./x\)")
    one_line_error({str(out / "x"): a, out / "x": b}, staging, suite.corpus, r"is written twice by this build")
    one_line_error({out / "x": a, out / "x" / "y": b}, staging, suite.corpus,
                   r"out/x/y: is inside .*out/x, which this build also writes")
    one_line_error({out / "x": a, out / "y": b}, out / "x" / "stage", suite.corpus,
                   r"x/stage: is inside .*out/x, which this build also writes")
    # a directory that is not an index, at the second target
    one_line_error({out / "x": a, out / "keep": b}, staging, suite.corpus,
                   r"out/keep: exists and is not a contaudit index .*nothing was deleted")
    # a benchmark inside another target, which the build would replace
    one_line_error({out / "x": out / "keep" / "notes.txt", out / "keep": b}, staging, suite.corpus,
                   r"notes\.txt: the benchmark of .*out/x is inside .*out/keep, which this command replaces")
    one_line_error({}, staging, suite.corpus, "no index to build")
    assert snapshot(tmp_path) == before  # nothing deleted, no staging directory made


def test_a_staging_directory_in_use_names_every_target(suite, tmp_path):
    import fcntl

    staging = tmp_path / "index.partial"
    staging.mkdir()
    with open(staging / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        targets = {tmp_path / "a": suite.benches["a"], tmp_path / "b": suite.benches["b"]}
        one_line_error(targets, staging, suite.corpus,
                       r"another contaudit index run is writing .*/a, .*/b \(lock .*index\.partial/lock\)")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
