"""``analyze`` with a reference panel, a non-random shadow set, and score files that do not belong together."""

import json
from pathlib import Path

import numpy as np
import pytest

from contaudit.analysis import analyze
from contaudit.analysis.inputs import ReferenceScores
from contaudit.analysis.simulate import simulate_model_panel
from contaudit.errors import InputError
from contaudit.manifest import make_manifest, write_json_atomic, write_jsonl_atomic
from contaudit.protocol import AnalysisSettings

FAST = AnalysisSettings(n_permutations=500, n_bootstrap=0, references="siblings")  # write_panel: seed siblings


def _write(path: Path, rows: list[dict], model: str) -> str:
    write_jsonl_atomic(path, rows)
    write_json_atomic(path.with_name(path.stem + ".manifest.json"),
                      make_manifest("score", inputs=[], parameters={}, model={"id": f"fingerprint-{model}",
                                                                            "path": f"/models/{model}"}))
    return str(path)


def write_panel(directory: Path, *, n_models: int = 6, ppl_effect: float = 0.0, mem_effect: float = 0.0,
                seed: int = 0) -> dict:
    """Score files of a suspect (model 0) and clean models under a shift, with probes."""
    ppl = simulate_model_panel(n_models=n_models, effect=ppl_effect, rng=seed)
    # Suffix log-prob is minus a simulated NLL: the suspect gains mem_effect on seen probes.
    mem = simulate_model_panel(n_models=n_models, n_test=40, n_shadow=40, effect=mem_effect, rng=seed + 1000)
    ids = [f"item-{i}" for i in range(ppl.is_test.size)]
    probe_ids = [f"probe-{i}" for i in range(mem.is_test.size)]
    rng = np.random.default_rng(seed)
    half = mem.is_test.sum()  # seen and unseen probes share lengths and rarities: balanced by construction
    words, rarity = np.tile(rng.integers(60, 200, half), 2), np.tile(rng.normal(5, 1, half), 2)
    write_jsonl_atomic(directory / "probes.jsonl", [
        {"id": p, "probe_set": "seen" if s else "unseen", "n_words": int(w), "rarity": float(r)}
        for p, s, w, r in zip(probe_ids, mem.is_test, words, rarity)])
    files = []
    for m in range(n_models):
        d = directory / "scores" / f"model{m}"
        sets = {}
        for name, mask in (("test", ppl.is_test), ("shadow", ~ppl.is_test)):
            sets[name] = _write(d / f"{name}.jsonl", [{"id": i, "nll_mean": float(y), "n_tokens": 50 + k % 30}
                                                      for k, (i, y) in enumerate(zip(ids, ppl.scores[m]))
                                                      if mask[k]], f"model{m}")
        sets["probes"] = _write(d / "probes.jsonl", [
            {"id": p, "exact_match": 0, "token_match_frac": 0.2, "suffix_logprob": float(-v)}
            for p, v in zip(probe_ids, mem.scores[m])], f"model{m}")
        files.append(sets)
    return {"suspect_test": files[0]["test"], "suspect_shadow": files[0]["shadow"],
            "suspect_probes": files[0]["probes"], "clean_test": files[1]["test"], "clean_shadow": files[1]["shadow"],
            "clean_probes": files[1]["probes"], "probes": str(directory / "probes.jsonl"),
            "references": [ReferenceScores(f["test"], f["shadow"], f["probes"]) for f in files[2:]]}


def test_panel_finds_planted_contamination_under_a_shift(tmp_path):
    results = analyze(**write_panel(tmp_path, ppl_effect=0.3, mem_effect=0.3), protocol=FAST, out=tmp_path / "run")
    assert results["verdict"]["label"] == "CONTAMINATED", results["verdict"]["reasons"]
    design = {k: v for k, v in results["design"].items() if k != "models"}
    assert design == {"shadow_origin": "later_set", "n_clean_models": 5, "test": "reference panel",
                      "exchangeable_sets": False, "verdict_cap": None, "exchangeability_refuted": None,
                      "inconclusive": None, "random_split_verified": False, "cutoffs": None}
    assert results["design"]["models"][2] == {"role": "reference[1]", "fingerprints": ["fingerprint-model2"]}
    ppl = results["perplexity_did"]
    assert ppl["n_references"] == 5 and ppl["covariates"] == ["difficulty", "length"] and ppl["estimate"] < -0.1
    mem = results["memorization_did"]["suffix_logprob"]
    assert mem["covariates"] == ["difficulty", "length", "rarity"] and mem["estimate"] > 0.1
    shift = next(c for c in results["design_checks"] if c["name"] == "shadow_shift")
    assert shift["passed"] is True and "common support" in shift["detail"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["design"]["n_clean_models"] == 5


def test_panel_null_with_a_shift_is_not_flagged(tmp_path):
    results = analyze(**write_panel(tmp_path, seed=3), protocol=FAST)
    assert results["verdict"]["label"] == "NO_EVIDENCE", results["verdict"]["reasons"]


def test_one_clean_model_on_a_shifted_set_is_inconclusive_whatever_the_tests_show(tmp_path):
    files = write_panel(tmp_path, ppl_effect=0.3, mem_effect=0.3)
    files["references"] = []
    results = analyze(**files, protocol=FAST)
    assert results["design"]["inconclusive"] and results["verdict"]["ceiling"] == "INCONCLUSIVE"
    tests = {t["name"]: t["counts"] for t in results["verdict"]["tests"]}
    assert tests == {"perplexity_did": True, "memorization_did": True}  # shown, but deciding nothing
    assert results["verdict"]["label"] == "INCONCLUSIVE"
    reasons = results["verdict"]["reasons"]
    assert "[[models.reference]]" in reasons[0] and all(r.startswith("For diagnosis only") for r in reasons[1:])
    null = {**write_panel(tmp_path / "null"), "references": []}
    null = analyze(**null, protocol=FAST)
    assert null["verdict"]["label"] == "INCONCLUSIVE"  # no NO_EVIDENCE either: the design cannot tell
    same = analyze(**files, shadow_origin="random_split", protocol=FAST)  # the exact test is kept for random splits
    assert same["verdict"]["label"] == "CONTAMINATED" and same["design"]["test"] == "item permutation"


def test_rank_test_with_too_few_references_is_inconclusive(tmp_path):
    results = analyze(**write_panel(tmp_path, ppl_effect=0.3, mem_effect=0.3),
                      protocol=AnalysisSettings(n_permutations=500, n_bootstrap=0, reference_test="rank",
                                                references="siblings"))
    assert results["verdict"]["label"] == "INCONCLUSIVE"
    assert "39 are needed" in results["verdict"]["reasons"][0]
    assert not any(c["passed"] is False for c in results["design_checks"])


def test_score_files_of_another_model_stop_with_both_files_named(tmp_path):
    files = write_panel(tmp_path)
    files["suspect_shadow"] = files["references"][0].shadow
    with pytest.raises(InputError, match=r"suspect score files come from different models: .*model0/test\.jsonl "
                                         r"was scored with /models/model0 .* but .*model2/shadow\.jsonl with "
                                         r"/models/model2"):
        analyze(**files, protocol=FAST)


def test_a_reference_that_repeats_another_model_is_refused(tmp_path):
    files = write_panel(tmp_path)
    files["references"][1] = files["references"][0]
    with pytest.raises(InputError, match=r"reference\[2\] and reference\[1\] score files come from the same model"):
        analyze(**files, protocol=FAST)


def test_a_clean_model_that_is_the_suspect_is_refused(tmp_path):
    """Before, the suspect as its own clean control gave NO_EVIDENCE (every difference zero) and passed the gate."""
    files = write_panel(tmp_path)
    files.update(clean_test=files["suspect_test"], clean_shadow=files["suspect_shadow"],
                 clean_probes=files["suspect_probes"], references=[])
    with pytest.raises(InputError, match=r"suspect and clean score files come from the same model .*the clean "
                                         r"control must be another model"):
        analyze(**files, protocol=FAST)


def test_reference_probes_are_required_with_the_memorization_test(tmp_path):
    files = write_panel(tmp_path)
    files["references"][0] = ReferenceScores(files["references"][0].test, files["references"][0].shadow)
    with pytest.raises(InputError, match="every reference model's probe scores"):
        analyze(**files, protocol=FAST)


def test_shadow_origin_must_be_known(tmp_path):
    with pytest.raises(InputError, match="`shadow_origin` must be one of random_split, date_split, later_set"):
        analyze(**write_panel(tmp_path), shadow_origin="yesterday", protocol=FAST)


def test_cli_analyze_with_reference_models(tmp_path):
    from typer.testing import CliRunner

    from contaudit.cli import app

    files = write_panel(tmp_path, ppl_effect=0.3, mem_effect=0.3)
    args = ["analyze", "--out", str(tmp_path / "run"), "--shadow-origin", "date_split"]
    for key in ("suspect_test", "clean_test", "suspect_shadow", "clean_shadow", "suspect_probes", "clean_probes",
                "probes"):
        args += [f"--{key.replace('_', '-')}", files[key]]
    for ref in files["references"]:
        args += ["--reference-test", ref.test, "--reference-shadow", ref.shadow, "--reference-probes", ref.probes]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("CONTAMINATED")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["design"]["n_clean_models"] == 5 and saved["protocol"]["shadow_origin"] == "date_split"

    unequal = CliRunner().invoke(app, args[:-2])  # the last --reference-probes dropped
    assert unequal.exit_code == 2 and "once per reference model" in unequal.output


def test_report_places_the_suspect_among_the_clean_models(tmp_path):
    from contaudit.report import write_report

    files = write_panel(tmp_path, ppl_effect=0.3, mem_effect=0.3)
    analyze(**files, protocol=FAST, out=tmp_path / "panel")
    names = [p.stem for p in write_report(tmp_path / "panel").plots]
    assert names[0] == "panel"
    text = (tmp_path / "panel" / "report.md").read_text()
    assert "Reference panel of 5 clean models" in text and "Spread of the clean models' effects" in text
    files["references"] = []
    analyze(**files, protocol=FAST, out=tmp_path / "single")
    assert "panel" not in [p.stem for p in write_report(tmp_path / "single").plots]
