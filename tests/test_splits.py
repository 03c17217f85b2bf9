"""Random splits made by contaudit (contaudit.splits): derived, recorded, re-derived and verified at analysis."""

import json

import numpy as np
import pytest

from contaudit.analysis import analyze
from contaudit.errors import InputError
from contaudit.manifest import make_manifest, write_json_atomic, write_jsonl_atomic
from contaudit.protocol import load_protocol
from contaudit.splits import random_split_items


def _benchmark(tmp_path, n=80):
    path = tmp_path / "all.jsonl"
    write_jsonl_atomic(path, [{"id": f"q{i}", "text": f"question {i} about topic {i % 7}"} for i in range(n)])
    return path


def _protocol(tmp_path, extra=""):
    for name in ("sus", "clean"):
        (tmp_path / name).mkdir(exist_ok=True)
    p = tmp_path / "p.toml"
    p.write_text('[models.suspect]\npath = "sus"\n[models.clean]\npath = "clean"\n'
                 '[sets.random_split]\npath = "all.jsonl"\nseed = 3\ntest_fraction = 0.5\n' + extra +
                 '[analysis]\nn_permutations = 499\nn_bootstrap = 0\nmin_items = 10\n')
    return p


def _scores(tmp_path, test_ids, shadow_ids, *, shift: float):
    """Score files of two models; the clean model sees the shadow set as harder by ``shift`` nats."""
    rng = np.random.default_rng(0)
    paths = {}
    for model in ("suspect", "clean"):
        for name, ids in (("test", test_ids), ("shadow", shadow_ids)):
            base = 2.0 + (shift if name == "shadow" else 0.0)
            rows = [{"id": i, "nll_mean": float(base + rng.normal(0, 0.2)), "n_tokens": 40} for i in ids]
            path = tmp_path / "scores" / model / f"{name}.jsonl"
            write_jsonl_atomic(path, rows)
            write_json_atomic(path.with_name(f"{name}.manifest.json"),
                              make_manifest("score", inputs=[], parameters={"model": model}))
            paths[f"{model}_{name}"] = path
    return paths


def test_the_protocol_names_a_random_split_and_the_sets_stage_records_it(tmp_path):
    from contaudit.audit import materialize_sets

    _benchmark(tmp_path)
    protocol = load_protocol(_protocol(tmp_path))
    assert protocol.sets.random_split.seed == 3
    paths, warnings = materialize_sets(protocol, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "sets" / "split.json").read_text())
    assert record["n_test"] == record["n_shadow"] == 40 and record["seed"] == 3 and not warnings
    assert len(record["input"]["sha256"]) == 64
    test_ids = [json.loads(line)["id"] for line in paths["test"].read_text().splitlines()]
    assert test_ids == [it.id for it in random_split_items(protocol.sets.random_split)[0]]


def test_a_random_split_cannot_be_mixed_with_other_sets_or_called_a_date_split(tmp_path):
    _benchmark(tmp_path)
    (tmp_path / "t.jsonl").write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(Exception, match=r"key `sets.random_split`: give either \[sets.random_split\] or \[sets.test\]"):
        load_protocol(_protocol(tmp_path, '[sets.test]\npath = "t.jsonl"\n'))
    with pytest.raises(Exception, match=r"key `sets.shadow_origin`: a \[sets.random_split\] is a random split"):
        load_protocol(_protocol(tmp_path, '[sets]\nshadow_origin = "date_split"\n'))


def test_a_verified_split_keeps_the_exact_test_even_when_the_sets_look_shifted(tmp_path):
    """A genuine random split fails the comparability check by chance; when contaudit made it, the check is
    reported and decides nothing (before: INVALID_DESIGN in 5-10 % of such audits)."""
    _benchmark(tmp_path)
    protocol = _protocol(tmp_path)
    test, shadow = random_split_items(load_protocol(protocol).sets.random_split)
    files = _scores(tmp_path, [it.id for it in test], [it.id for it in shadow], shift=0.5)
    results = analyze(**files, protocol=protocol)
    check = next(c for c in results["design_checks"] if c["name"] == "shadow_comparability")
    assert check["passed"] is None and "contaudit made this split at random" in check["detail"]
    assert results["design"]["random_split_verified"] and results["design"]["exchangeable_sets"]
    assert results["verdict"]["label"] in ("NO_EVIDENCE", "SUSPECT")  # the exact tests decide (no probes: <= SUSPECT)
    assert results["protocol"]["split"]["verified"] and results["protocol"]["split"]["seed"] == 3
    # The same scores declared a random split without provenance: the failed check refutes it.
    declared = analyze(**files, shadow_origin="random_split")
    assert declared["verdict"]["label"] == "INCONCLUSIVE" and declared["design"]["exchangeability_refuted"]


def test_scores_of_other_sets_than_the_split_are_refused(tmp_path):
    _benchmark(tmp_path)
    protocol = _protocol(tmp_path)
    test, shadow = random_split_items(load_protocol(protocol).sets.random_split)
    swapped = [it.id for it in test[1:]] + [shadow[0].id]
    files = _scores(tmp_path, swapped, [it.id for it in shadow[1:]], shift=0.0)
    with pytest.raises(InputError, match=r"the test scores are not the random split contaudit makes from .*all\.jsonl "
                                         r"with seed 3 .*1 test items do not belong \(e\.g\. 'q\d+', a shadow item"):
        analyze(**files, protocol=protocol)
