"""Files every stage writes: strict JSON (no Infinity or NaN), atomically."""

import json

import pytest

from contaudit.manifest import finite_json, write_json_atomic, write_jsonl_atomic


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    obj = {"smd": float("inf"), "p": float("nan"), "ok": 1.5, "nested": [float("-inf"), {"x": 2.0}], "n": 3}
    write_json_atomic(tmp_path / "a.json", obj)
    assert _strict((tmp_path / "a.json").read_text()) == {"smd": None, "p": None, "ok": 1.5,
                                                          "nested": [None, {"x": 2.0}], "n": 3}
    write_jsonl_atomic(tmp_path / "a.jsonl", [obj, {"y": float("nan")}])
    rows = [_strict(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows[0]["smd"] is None and rows[1] == {"y": None}


def test_finite_json_keeps_everything_else():
    assert finite_json({"a": [1, "x", True, None, 0.25]}) == {"a": [1, "x", True, None, 0.25]}


def test_probe_balance_with_constant_groups_is_strict_json(tmp_path):
    """coverage8 is 1 for every seen probe and 0 for every unseen one: an infinite SMD, written as null."""
    from contaudit.probes import standardized_mean_difference

    smd = standardized_mean_difference([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert smd == float("inf")
    write_json_atomic(tmp_path / "m.json", {"balance": {"coverage8_smd": smd}})
    assert _strict((tmp_path / "m.json").read_text()) == {"balance": {"coverage8_smd": None}}
    with pytest.raises(ValueError, match="Infinity"):
        _strict(json.dumps({"x": smd}))  # what the writer used to produce
