"""contaudit analyze / screen: score files in, results.json out, through the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contaudit.analysis import SCHEMA_VERSION, analyze as _analyze, load_results


def analyze(*args, **kwargs):
    """Simulated audits split items at random: test and shadow are exchangeable."""
    return _analyze(*args, **{"shadow_origin": "random_split", **kwargs})
from contaudit.analysis.simulate import simulate_audit, write_audit
from contaudit.cli import app
from contaudit.errors import InputError, ManifestMismatchError
from contaudit.protocol import AnalysisSettings
from contaudit.suite import gate_run as screen

FAST = AnalysisSettings(n_permutations=2000, n_bootstrap=1000)
runner = CliRunner()


def _files(directory: Path, **simulation) -> dict[str, str]:
    audit = simulate_audit(n_test=100, n_shadow=100, n_seen=60, n_unseen=60, rng=11, **simulation)
    return {k: str(v) for k, v in write_audit(audit, directory).items()}


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory) -> dict[str, str]:
    return _files(tmp_path_factory.mktemp("contaminated"), ppl_effect=0.1, mem_effect=0.4, contaminated_fraction=0.7)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, str]:
    return _files(tmp_path_factory.mktemp("clean"))


def _cli_args(files: dict[str, str], out: Path, *extra: str) -> list[str]:
    args = ["analyze"]
    for key in ("suspect_test", "clean_test", "suspect_shadow", "clean_shadow", "suspect_probes", "clean_probes",
                "probes", "index"):
        if key in files:
            args += [f"--{key.replace('_', '-')}", files[key]]
    return args + ["--out", str(out), *extra]


def test_contaminated_audit_writes_versioned_results_and_manifest(contaminated, tmp_path):
    results = analyze(**contaminated, protocol=FAST, out=tmp_path / "run")
    assert results["verdict"]["label"] == "CONTAMINATED"
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION == "1.4"
    assert on_disk["verdict"] == results["verdict"]
    manifest = json.loads((tmp_path / "run" / "results.manifest.json").read_text())
    assert manifest["stage"] == "analyze" and len(manifest["inputs"]) == 8
    assert manifest["parameters"]["n_permutations"] == 2000
    assert results["perplexity_did"]["estimate"] < 0 and results["perplexity_did"]["n"] == [100, 100]
    mem = results["memorization_did"]
    assert mem["primary_metric"] == "suffix_logprob" and mem["exact_match"]["estimate"] > 0  # the default
    assert mem["token_match_frac"]["estimate"] > 0
    assert mem["suffix_logprob"]["estimate"] > 0 and mem["suffix_logprob"]["unit"] == "nats/token"
    assert results["supporting"]["dose_response"]["available"] and results["supporting"]["dose_response"]["rho"] < 0
    assert results["supporting"]["minkpp_did"]["available"]
    assert len(results["items"]["test"]) == 100 and "index" in results["items"]["test"][0]
    assert {c["name"] for c in results["design_checks"]} >= {"sample_size_test", "shadow_comparability",
                                                             "probe_balance_length", "probe_balance_rarity"}


def test_clean_audit_gives_no_evidence_with_minimum_detectable_effects(clean):
    results = analyze(**clean, protocol=FAST)
    assert results["verdict"]["label"] == "NO_EVIDENCE"
    mde = results["verdict"]["minimum_detectable_effect"]
    assert mde["perplexity_did"] > 0 and mde["memorization_did"] > 0


def test_suffix_logprob_as_primary_metric_decides_with_its_hand_computed_did(contaminated, clean):
    import numpy as np

    settings = AnalysisSettings(n_permutations=2000, n_bootstrap=1000, primary_metric="suffix_logprob")
    results = analyze(**contaminated, protocol=settings)
    mem = results["memorization_did"]
    probes = results["items"]["probes"]
    e = {s: np.mean([p["logprob_sus"] - p["logprob_clean"] for p in probes if p["probe_set"] == s])
         for s in ("seen", "unseen")}
    assert mem["primary_metric"] == "suffix_logprob"
    assert mem["suffix_logprob"]["estimate"] == pytest.approx(e["seen"] - e["unseen"], abs=1e-12)
    test = {t["name"]: t for t in results["verdict"]["tests"]}["memorization_did"]
    assert test["unit"] == "nats/token" and test["counts"]
    assert results["verdict"]["label"] == "CONTAMINATED"
    assert analyze(**clean, protocol=settings)["verdict"]["label"] == "NO_EVIDENCE"


def test_probe_scores_without_suffix_logprob_still_analyze_on_the_greedy_metrics(contaminated, tmp_path):
    files = dict(contaminated)
    for key in ("suspect_probes", "clean_probes"):
        rows = [json.loads(line) for line in Path(files[key]).read_text().splitlines()]
        files[key] = str(tmp_path / f"{key}.jsonl")
        Path(files[key]).write_text("".join(json.dumps({k: v for k, v in r.items() if k != "suffix_logprob"}) + "\n"
                                            for r in rows))
    results = analyze(**files, protocol=AnalysisSettings(n_permutations=2000, n_bootstrap=1000,
                                                         primary_metric="exact_match"))
    assert results["memorization_did"]["suffix_logprob"] is None
    assert results["memorization_did"]["exact_match"]["estimate"] > 0
    assert any("suffix_logprob" in w for w in results["warnings"])
    with pytest.raises(InputError, match="missing field 'suffix_logprob'"):  # the default primary metric
        analyze(**files, protocol=FAST)


def test_probe_files_with_every_probe_skipped_give_invalid_design_not_an_error(contaminated, tmp_path):
    files = dict(contaminated)
    for key in ("suspect_probes", "clean_probes"):
        files[key] = str(tmp_path / f"{key}.jsonl")
        Path(files[key]).write_text("")  # what `score` writes when every suffix is longer than the context
        (tmp_path / f"{key}.manifest.json").write_text(json.dumps({"counts": {"skip_reasons": {"suffix_too_long": 120}}}))
    results = analyze(**files, protocol=FAST)
    assert results["verdict"]["label"] == "INVALID_DESIGN"
    failed = {c["name"] for c in results["design_checks"] if c["passed"] is False}
    assert {"sample_size_seen", "sample_size_unseen"} <= failed
    assert results["memorization_did"]["suffix_logprob"] is None
    assert any("has no scored probes (skipped: {'suffix_too_long': 120})" in w for w in results["warnings"])
    with pytest.raises(InputError, match="no scored items"):  # an empty test-set score file stays an error
        analyze(**{**contaminated, "suspect_test": files["suspect_probes"]}, protocol=FAST)


def test_results_are_reproducible_with_the_protocol_seed(clean):
    a = analyze(**clean, protocol=FAST)
    b = analyze(**clean, protocol=FAST)
    assert a["perplexity_did"] == b["perplexity_did"] and a["memorization_did"] == b["memorization_did"]


def test_items_missing_from_one_file_are_counted_and_checked_never_silently_dropped(contaminated, tmp_path):
    files = dict(contaminated)
    lines = Path(files["clean_test"]).read_text().splitlines()
    short = tmp_path / "clean_test_short.jsonl"
    short.write_text("\n".join(lines[:90]) + "\n")  # the clean model lost 10 test items
    files["clean_test"] = str(short)
    results = analyze(**files, protocol=FAST)
    data = results["data"]["test"]
    assert data["n_paired"] == 90 and data["n_only_suspect"] == 10 and data["n_only_clean"] == 0
    assert data["only_suspect"][0] == json.loads(lines[90])["id"]
    pairing = next(c for c in results["design_checks"] if c["name"] == "pairing_test")
    assert pairing["passed"] is False and pairing["numbers"]["n_unpaired"] == 10
    assert results["verdict"]["label"] == "INVALID_DESIGN"
    loose = analyze(**files, protocol=AnalysisSettings(n_permutations=500, n_bootstrap=0, max_unpaired_fraction=0.2))
    assert loose["verdict"]["label"] == "CONTAMINATED" and loose["data"]["test"]["n_only_suspect"] == 10


def test_without_probes_there_is_no_memorization_test_and_at_most_suspect(contaminated):
    files = {k: contaminated[k] for k in ("suspect_test", "clean_test", "suspect_shadow", "clean_shadow")}
    results = analyze(**files, protocol=FAST)
    assert results["memorization_did"] is None and results["data"]["probes"] is None
    assert results["verdict"]["label"] == "SUSPECT"
    assert results["supporting"]["dose_response"] == {"available": False, "reason": "no index given"}


def test_probe_files_must_come_together(contaminated):
    files = {k: v for k, v in contaminated.items() if k != "clean_probes"}
    with pytest.raises(InputError, match="needs --suspect-probes, --clean-probes and --probes together; "
                                         "missing --clean-probes"):
        analyze(**files, protocol=FAST)


@pytest.mark.parametrize("line, match", [
    ('{"id": "x", "n_tokens": 3}', r"record 2: missing field 'nll_mean'"),
    ('{"id": "x", "nll_mean": "low"}', r"record 2: field 'nll_mean' must be a finite number; got 'low'"),
    ('{"id": "a", "nll_mean": 1.0}', r"record 2: duplicate id 'a' \(first at record 1\)"),
    ('{"nll_mean": 1.0}', r"record 2: missing field 'id'"),
    ('{"id": "x", "nll_mean": 1.0', r"record 2: malformed JSON"),
])
def test_bad_score_records_name_the_file_and_record(contaminated, tmp_path, line, match):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "nll_mean": 1.0}\n' + line + "\n")
    with pytest.raises(InputError, match=match) as info:
        analyze(**{**contaminated, "suspect_test": str(bad)}, protocol=FAST)
    assert str(bad) in str(info.value)


def test_item_order_evidence_is_included_when_given(contaminated, tmp_path):
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"canonical": [-100.0, -98.0, -97.5],
                                 "shuffled": [[-101.0, -102.5], [-99.0, -99.5], [-98.0, -99.0]]}))
    results = analyze(**contaminated, item_order=str(order), protocol=FAST)
    io = results["supporting"]["item_order"]
    assert io["available"] and io["n_shards"] == 3 and io["estimate"] > 0
    order.write_text(json.dumps({"canonical": [1.0]}))
    with pytest.raises(InputError, match="expected an object with 'canonical'"):
        analyze(**contaminated, item_order=str(order), protocol=FAST)


def test_load_results_refuses_another_major_schema(contaminated, tmp_path):
    analyze(**contaminated, protocol=FAST, out=tmp_path)
    assert load_results(tmp_path)["schema_version"] == "1.4"
    data = json.loads((tmp_path / "results.json").read_text())
    data["schema_version"] = "2.0"
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ManifestMismatchError, match="schema_version '2.0' cannot be read"):
        load_results(tmp_path)
    with pytest.raises(InputError, match="no results.json"):
        load_results(tmp_path / "elsewhere")


def test_cli_analyze_then_screen_exit_codes(contaminated, clean, tmp_path):
    quick = str(Path(__file__).resolve().parents[1] / "protocols" / "quick.toml")
    result = runner.invoke(app, _cli_args(contaminated, tmp_path / "sus", "--protocol", quick,
                                          "--shadow-origin", "random_split"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("CONTAMINATED: perplexity DiD -")
    assert (tmp_path / "sus" / "results.json").exists()

    fail = runner.invoke(app, ["screen", str(tmp_path / "sus"), "--fail-on", "CONTAMINATED"])
    assert fail.exit_code == 1 and fail.output.startswith("FAIL CONTAMINATED:")
    assert len(fail.output.strip().splitlines()) == 1

    assert runner.invoke(app, _cli_args(clean, tmp_path / "clean", "--protocol", quick,
                                        "--shadow-origin", "random_split")).exit_code == 0
    ok = runner.invoke(app, ["screen", str(tmp_path / "clean"), "--fail-on", "SUSPECT", "--json"])
    assert ok.exit_code == 0
    summary = json.loads(ok.output)
    assert summary["verdict"] == "NO_EVIDENCE" and summary["passed"] is True and summary["fail_on"] == "SUSPECT"
    assert len(summary["protocol_sha256"]) == 64


def test_cli_screen_returns_3_for_invalid_design(clean, tmp_path):
    files = {**clean}
    results = analyze(**files, protocol=AnalysisSettings(n_permutations=200, n_bootstrap=0, min_items=500),
                      out=tmp_path)
    assert results["verdict"]["label"] == "INVALID_DESIGN"
    res = runner.invoke(app, ["screen", str(tmp_path), "--fail-on", "CONTAMINATED"])
    assert res.exit_code == 3 and res.output.startswith("INVALID_DESIGN INVALID_DESIGN:")
    assert screen(tmp_path, fail_on="SUSPECT").exit_code == 3


def test_cli_library_errors_exit_2_with_one_line(contaminated, tmp_path):
    files = {**contaminated, "clean_shadow": str(tmp_path / "missing.jsonl")}
    res = runner.invoke(app, _cli_args(files, tmp_path / "run"))
    assert res.exit_code == 2
    assert "missing.jsonl: no such file or directory" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["screen", str(tmp_path / "nothing"), "--fail-on", "SUSPECT"])
    assert res.exit_code == 2 and "no results.json" in res.output
    res = runner.invoke(app, ["screen", str(tmp_path), "--fail-on", "MAYBE"])
    assert res.exit_code == 2 and "--fail-on must be SUSPECT or CONTAMINATED" in res.output


def _empty_probes(directory: Path, *, seen_items: int, unseen_items: int) -> str:
    """A probes file with no pairs, and the manifest ``contaudit probes`` writes for it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "probes.jsonl").write_text("")
    counts = {"n_seen": 0, "n_unseen": 0, "seen_items": seen_items, "unseen_items": unseen_items}
    (directory / "probes.manifest.json").write_text(json.dumps({"counts": counts, "balance": {}}))
    return str(directory / "probes.jsonl")


def test_a_benchmark_absent_from_the_corpus_is_decided_by_the_perplexity_test(contaminated, clean, tmp_path):
    """Too few seen items in the corpus: no memorization test, no design failure; at most SUSPECT."""
    base = {k: v for k, v in contaminated.items() if k not in ("probes", "suspect_probes", "clean_probes", "index")}
    res = analyze(**base, probes=_empty_probes(tmp_path / "absent", seen_items=2, unseen_items=98), protocol=FAST)
    v = res["verdict"]
    assert v["label"] == "SUSPECT" and v["ceiling"] == "SUSPECT"  # the perplexity DiD of this audit counts
    assert [t["name"] for t in v["tests"]] == ["perplexity_did"]
    assert not [c for c in res["design_checks"] if c["passed"] is False]
    assert any("marks 2 of 100 benchmark items seen" in r for r in v["reasons"])
    assert "marks 2 of 100" in res["memorization_did"]["not_run"]
    clean_base = {k: v for k, v in clean.items() if k not in ("probes", "suspect_probes", "clean_probes", "index")}
    res = analyze(**clean_base, probes=_empty_probes(tmp_path / "absent2", seen_items=0, unseen_items=100),
                  protocol=FAST)
    assert res["verdict"]["label"] == "NO_EVIDENCE"
    # enough seen items in the corpus but no pairs matched: the test should run and cannot
    res = analyze(**base, probes=_empty_probes(tmp_path / "unmatched", seen_items=40, unseen_items=60), protocol=FAST)
    assert res["verdict"]["label"] == "INVALID_DESIGN"


def test_swapped_test_and_shadow_files_get_a_hint(tmp_path):
    """Swapped files gave a verdict with no hint that they were swapped (issue 25)."""
    from contaudit.analysis.simulate import simulate_audit, write_audit

    f = write_audit(simulate_audit(ppl_effect=0.3, rng=4), tmp_path / "sim")
    right = _analyze(f["suspect_test"], f["clean_test"], f["suspect_shadow"], f["clean_shadow"], index=f["index"],
                     shadow_origin="random_split")
    swapped = _analyze(f["suspect_shadow"], f["clean_shadow"], f["suspect_test"], f["clean_test"], index=f["index"],
                       shadow_origin="random_split")
    assert not any("files swapped?" in w for w in right["warnings"])
    assert any("were the test and shadow files swapped?" in w for w in swapped["warnings"])
