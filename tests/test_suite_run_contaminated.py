"""A suite with one contaminated benchmark and two clean ones: the table and exit code say exactly that.

The models are real (small GPT-2s trained here, ``suite_models``): the suspect trained
on ``alpha``'s test items ``dup`` times, the clean control on none; ``beta`` and
``gamma`` are in no training text. Ground truth is therefore known per benchmark.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import cli
from suite_models import BENCHMARKS, CONTAMINATED, make_suite_fixture


def _suite_toml(fx, seed: int) -> str:
    import tomli_w

    suite = {
        "name": "one contaminated of three",
        "models": {"suspect": {"path": str(fx.suspect)}, "clean": {"path": str(fx.clean)}},
        "index": {"corpus": [str(fx.corpus)]},
        "probes": fx.tables["probes"],
        "analysis": {**fx.tables["analysis"], "seed": seed},
        "benchmarks": [{"name": name, "shadow_origin": "random_split", "test": {"path": str(parts["test"])},
                        "shadow": {"path": str(parts["shadow"])}, "heldout": [{"path": str(parts["heldout"])}]}
                       for name, parts in fx.benchmarks.items()],
    }
    return tomli_w.dumps(suite)


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite-models")
    fx = make_suite_fixture(root, seed=0)
    suite = root / "suite.toml"
    suite.write_text(_suite_toml(fx, seed=20240601))
    run = root / "screen"
    code, output = cli("screen", suite, "--out", run, "--fail-on", "CONTAMINATED")
    return fx, run, code, output


def test_one_contaminated_benchmark_of_three_fails_the_gate_and_only_it(screened):
    fx, run, code, output = screened
    data = json.loads((run / "suite.json").read_text())
    rows = {row["name"]: row for row in data["benchmarks"]}
    gate = {part["name"]: part for part in data["gate"]["benchmarks"]}
    verdicts = {name: rows[name]["verdict"] for name in BENCHMARKS}
    assert verdicts == {"alpha": "CONTAMINATED", "beta": "NO_EVIDENCE", "gamma": "NO_EVIDENCE"}, output
    assert code == 1, output  # the gate fails, on alpha alone
    assert data["gate"]["exit_code"] == 1
    assert {name for name, part in gate.items() if part["fails"]} == {CONTAMINATED}

    # the corpus evidence says the same: alpha's test items are in the suspect's training text, the others' are not
    assert rows["alpha"]["corpus"]["share_seen"] == 1.0
    assert rows["beta"]["corpus"]["n_seen"] == 0 and rows["gamma"]["corpus"]["n_seen"] == 0
    assert rows["alpha"]["top_items"], "the contaminated benchmark names the items found in the corpus"
    # the clean benchmarks are decided by the perplexity DiD alone, which finds nothing
    for name in ("beta", "gamma"):
        assert rows[name]["memorization_did"] is None
        assert rows[name]["perplexity_did"]["pvalue_holm"] > 0.05
    assert rows["alpha"]["perplexity_did"]["estimate"] < 0 and rows["alpha"]["memorization_did"]["estimate"] > 0

    # one corpus pass, each model loaded once, and the table says it too
    assert data["run"]["index"]["corpus_passes"] == 1
    assert data["run"]["model_loads"] == {"suspect": 1, "clean": 1}
    table = (run / "report.md").read_text()
    lines = {name: next(line for line in table.splitlines() if f"[{name}](benchmarks/{name}/report.html)" in line)
             for name in BENCHMARKS}
    assert "CONTAMINATED" in lines["alpha"] and all("NO_EVIDENCE" in lines[n] for n in ("beta", "gamma"))
