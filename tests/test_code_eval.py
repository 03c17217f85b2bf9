"""Code evaluation (issue 26): greedy generation, stop sequences, execution in separate processes."""

from __future__ import annotations

import json
import os

import pytest

from contaudit.code_eval import CodeEvalConfig, evaluate_code, execute, problems_of, truncate_at_stop
from contaudit.corpora import load_humaneval
from contaudit.errors import InputError


def test_completions_are_cut_at_the_first_stop_sequence():
    body = "    return x + 1\n"
    assert truncate_at_stop(body + "\ndef other():\n    pass\n") == body
    assert truncate_at_stop(body + "\nprint(f(2))\n# done") == body
    assert truncate_at_stop(body) == body


def test_execution_passes_right_programs_fails_wrong_ones_and_stops_endless_ones_in_their_own_processes(tmp_path):
    items = load_humaneval()[:6]
    problems = problems_of(items)
    # completions continue the stripped prompt: the newline the prompt lost comes first
    solutions = [it.fields["prompt"][len(p["prompt"]):] + it.fields["canonical_solution"] for it, p in zip(items, problems)]
    assert all(p["prompt"] == it.fields["prompt"].rstrip() for it, p in zip(items, problems))
    marker = tmp_path / "pid"
    spy = f"\n    open({str(marker)!r}, 'w').write(str(__import__('os').getpid()))\n    return None\n"
    completions = solutions[:3] + ["\n    return None\n", "\n    while True:\n        pass\n", spy]
    results = execute(problems, completions, CodeEvalConfig(timeout_s=1.0))
    assert [r["passed"] for r in results] == [True, True, True, False, False, False]
    assert results[4]["result"] == "timed out" and results[3]["result"].startswith("failed")
    assert marker.read_text() and int(marker.read_text()) != os.getpid()  # ran, but not in this process


def test_items_without_humanevals_fields_are_refused(tmp_path):
    from contaudit.io import load_items

    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "def f(): pass"}) + "\n")
    with pytest.raises(InputError, match="has no prompt, test, entry_point field"):
        problems_of(load_items(path))


def test_evaluate_writes_outcomes_with_their_inputs_and_reuses_them(tmp_path):
    """A tiny random model fails every problem, but the file, manifest and reuse are what the audit reads."""
    from contaudit.corpora import item_rows
    from contaudit.manifest import write_jsonl_atomic
    from tiny_models import save_tiny_model

    model = save_tiny_model(tmp_path / "model", arch="gpt2")
    data = tmp_path / "he.jsonl"
    write_jsonl_atomic(data, item_rows(load_humaneval()[:4]))
    out = tmp_path / "outcomes.jsonl"
    config = CodeEvalConfig(max_new_tokens=8, timeout_s=1.0)
    first = evaluate_code(model, [data], out, config)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"HumanEval/{i}" for i in range(4)] and not first.reused
    assert all(r["score"] in (0.0, 1.0) and r["score"] == float(r["passed"]) for r in rows)
    manifest = json.loads(out.with_name("outcomes.manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and manifest["metric"] == "pass@1"
    assert manifest["identity"]["model"] and len(manifest["identity"]["data"]) == 1
    again = evaluate_code(model, [data], out, config)
    assert again.reused and again.n_passed == first.n_passed
    other = evaluate_code(model, [data], out, CodeEvalConfig(max_new_tokens=4, timeout_s=1.0))
    assert not other.reused  # other settings: evaluated again
    out.write_text(out.read_text().replace('"score": 0.0', '"score": 1.0', 1))  # edited by hand: not reused
    assert not evaluate_code(model, [data], out, CodeEvalConfig(max_new_tokens=4, timeout_s=1.0)).reused
    with pytest.raises(InputError, match="`timeout_s` must be"):
        evaluate_code(model, [data], out, CodeEvalConfig(timeout_s=-1.0))
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text("{}\n")
    with pytest.raises(InputError, match="not written by contaudit evaluate"):
        evaluate_code(model, [data], foreign, config)
