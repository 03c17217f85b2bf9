"""The cross-family panel test (contaudit.analysis.families) against known answers and simulated truth."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from contaudit.analysis import analyze
from contaudit.analysis.inputs import ReferenceScores
from contaudit.analysis.families import family_did
from contaudit.analysis.simulate import family_error_rates, simulate_family_panel
from contaudit.errors import InputError
from contaudit.manifest import make_manifest, write_json_atomic, write_jsonl_atomic
from contaudit.protocol import AnalysisSettings


def _panel(points, n_items=4):
    """Item scores whose group means are the given (shadow, test) points; row 0 the suspect."""
    g = np.r_[np.ones(n_items, bool), np.zeros(n_items, bool)]
    wiggle = np.tile([0.1, -0.1], n_items)  # mean zero in each group
    scores = np.array([np.where(g, y, x) + wiggle for x, y in points])
    return scores, g


def test_family_did_against_a_hand_computed_regression_prediction():
    points = [(3.1, 3.0), (2.0, 2.45), (2.5, 2.9), (3.0, 3.62), (3.5, 4.1), (4.0, 4.75), (2.8, 3.4)]
    scores, g = _panel(points)
    res = family_did(scores[0], scores[1:], g, confidence_level=0.9)
    x, y = np.array(points[1:]).T
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    s = np.sqrt(resid @ resid / (len(x) - 2))
    h = 1 / len(x) + (3.1 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum()
    r_s = 3.0 - (a + b * 3.1)
    assert res.statistic == pytest.approx(r_s) and res.slope == pytest.approx(b) and res.residual_sd == pytest.approx(s)
    assert res.pvalue_t == pytest.approx(stats.t.cdf(r_s / (s * np.sqrt(1 + h)), len(x) - 2))
    assert res.pvalue == max(res.pvalue_t, res.pvalue_heavy) and res.pvalue_heavy >= res.pvalue_t * 0.5
    assert res.distance_sd == pytest.approx(-r_s / s) and res.leverage == pytest.approx(h)


def test_conformal_pvalue_counts_the_suspect_itself():
    # References on a line, one off it by +0.3 (not towards contamination), the suspect 0.2 below.
    points = [(3.0, 3.7 - 0.2), (2.0, 2.5), (2.5, 3.1), (3.5, 4.3 + 0.3), (4.0, 4.9)]
    scores, g = _panel(points)
    res = family_did(scores[0], scores[1:], g, method="conformal")
    x, y = np.array(points).T
    fit = stats.linregress(x, y)
    e = -(y - (fit.intercept + fit.slope * x))
    assert res.pvalue == res.pvalue_conformal == pytest.approx((1 + np.sum(e[1:] >= e[0])) / 5)


def test_a_stronger_clean_suspect_on_the_relation_is_not_flagged_where_the_sibling_test_flags_it():
    """The suspect 2 reference-effect SDs along the relation (a stronger model of another family): the sibling
    panel, which assumes the suspect's effect is one more draw of the references', flags it far above alpha; the
    cross-family test holds alpha."""
    rates = family_error_rates(n_audits=300, n_references=9, levels=(0.05,), rng=3, along=2.0, n_heavy_draws=2**12)
    assert rates["siblings"][0.05] > 0.25
    assert rates["families"][0.05] <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300), rates


@pytest.mark.parametrize("heavy", [False, True])
def test_cross_family_null_rate_at_alpha_over_two(heavy):
    rates = family_error_rates(n_audits=400, n_references=5, levels=(0.025,), rng=4, heavy_tails=heavy,
                               n_heavy_draws=2**12)
    assert rates["families"][0.025] <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / 400), rates


def test_planted_contamination_is_found_and_the_sensitivity_says_how_far_off_a_recipe_would_have_to_be():
    sim = simulate_family_panel(n_references=9, effect=0.3, rng=5)
    res = family_did(sim.scores[0], sim.scores[1:], sim.is_test, alpha=0.05, n_tests=2)
    assert res.pvalue < 0.005 and res.distance_sd > 8 and res.robust_to_offset > 0
    q = max(stats.t.ppf(1 - 0.025, 7), np.quantile(res.heavy_null, 1 - 0.025))
    assert res.robust_to_offset == pytest.approx(res.distance_sd - q * np.sqrt(1 + res.leverage))
    clean = simulate_family_panel(n_references=9, rng=6)
    res = family_did(clean.scores[0], clean.scores[1:], clean.is_test)
    assert res.pvalue > 0.05 and res.robust_to_offset == 0.0


def test_references_with_one_shadow_score_fall_back_to_their_mean():
    points = [(1.0, 0.9), (1.0, 1.0), (1.0, 1.02), (1.0, 0.98), (1.0, 1.01)]  # e.g. exact match on unseen all alike
    scores, g = _panel(points)
    res = family_did(scores[0], scores[1:], g)
    assert res.slope == 0.0 and res.intercept == pytest.approx(np.mean([1.0, 1.02, 0.98, 1.01]))
    assert res.statistic == pytest.approx(0.9 - res.intercept)


def test_family_did_errors():
    scores, g = _panel([(1, 1), (2, 2), (3, 3)])
    with pytest.raises(InputError, match="at least 3 reference models"):
        family_did(scores[0], scores[1:], g)
    with pytest.raises(InputError, match="`method`"):
        family_did(scores[0], np.vstack([scores[1:], scores[1:]]), g, method="t")


# --- through analyze: files of models with different tokenizers -------------------------------

def _write_family_files(tmp_path: Path, sim, *, tokenizers: list[str]) -> dict:
    """Score files (nll_mean per token differs by tokenizer; nll_per_byte is the simulated score) with manifests."""
    ids = [f"item-{i}" for i in range(sim.is_test.size)]
    paths = []
    for m, tok in enumerate(tokenizers):
        bytes_per_token = {"bpe-2k": 3.0, "bpe-8k": 4.5, "chars": 1.0}[tok]
        files = {}
        for name, mask in (("test", sim.is_test), ("shadow", ~sim.is_test)):
            rows = [{"id": i, "nll_per_byte": float(v), "nll_mean": float(v * bytes_per_token), "n_bytes": 300,
                     "n_tokens": int(300 / bytes_per_token)}
                    for i, v, keep in zip(ids, sim.scores[m], mask) if keep]
            path = tmp_path / f"model{m}" / f"{name}.jsonl"
            write_jsonl_atomic(path, rows)
            fp = {"id": f"model-{m}", "path": f"/models/{m}",
                  "tokenizer_files": [{"name": "tokenizer.json", "size": 1, "sha256": tok}]}
            write_json_atomic(path.with_name(f"{name}.manifest.json"),
                              make_manifest("score", inputs=[], parameters={}, model=fp, tokenizer={"class": tok}))
            files[name] = str(path)
        paths.append(files)
    return {"suspect_test": paths[0]["test"], "suspect_shadow": paths[0]["shadow"], "clean_test": paths[1]["test"],
            "clean_shadow": paths[1]["shadow"],
            "references": [ReferenceScores(p["test"], p["shadow"]) for p in paths[2:]]}


SETTINGS = AnalysisSettings(n_permutations=200, n_bootstrap=0, min_items=10)


def test_an_audit_against_other_families_with_other_tokenizers_works_per_byte(tmp_path):
    toks = ["bpe-8k", "chars", "bpe-2k", "chars", "bpe-2k", "bpe-8k", "chars", "bpe-2k"]
    planted = _write_family_files(tmp_path / "planted", simulate_family_panel(n_references=7, effect=0.2, rng=1),
                                  tokenizers=toks)
    results = analyze(**planted, protocol=SETTINGS, out=tmp_path / "run")
    assert results["units"]["perplexity"] == "nats/byte" and "3 different tokenizers" in results["units"]["reason"]
    assert results["perplexity_did"]["unit"] == "nats/byte" and results["perplexity_did"]["metric"] == "nll_per_byte"
    assert results["perplexity_did"]["relation"]["r_squared"] > 0.9
    tests = {t["name"]: t for t in results["verdict"]["tests"]}
    assert tests["perplexity_did"]["counts"] and results["verdict"]["label"] == "SUSPECT"  # no probes: at most
    from contaudit.report import write_report

    report = write_report(tmp_path / "run")
    text = report.markdown.read_text()
    assert "nats/byte" in text and "different tokenizers" in text and "Cross-family panel" in text
    assert (tmp_path / "run" / "plots" / "family_plane.png").exists()
    clean = _write_family_files(tmp_path / "clean", simulate_family_panel(n_references=7, rng=2), tokenizers=toks)
    assert analyze(**clean, protocol=SETTINGS)["verdict"]["label"] == "NO_EVIDENCE"


def test_per_token_scores_across_tokenizers_would_mislead(tmp_path):
    """The same clean panel compared per token: the tokenizers' different token lengths swamp the relation."""
    toks = ["bpe-8k", "chars", "bpe-2k", "chars", "bpe-2k", "bpe-8k", "chars", "bpe-2k"]
    files = _write_family_files(tmp_path, simulate_family_panel(n_references=7, rng=2), tokenizers=toks)
    per_byte = analyze(**files, protocol=SETTINGS)["perplexity_did"]
    per_token = analyze(**files, protocol=AnalysisSettings(n_permutations=200, n_bootstrap=0, min_items=10,
                                                           unit="token"))["perplexity_did"]
    assert per_byte["relation"]["r_squared"] > 0.9 and per_token["unit"] == "nats/token"
    assert per_token["reference_sd"] > 3 * per_byte["reference_sd"]  # 5x here: the unit, not the models


def test_score_files_without_per_byte_scores_are_refused_when_tokenizers_differ(tmp_path):
    files = _write_family_files(tmp_path, simulate_family_panel(n_references=3, rng=2),
                                tokenizers=["bpe-8k", "chars", "bpe-2k", "chars"])
    path = Path(files["clean_test"])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    write_jsonl_atomic(path, [{k: v for k, v in r.items() if k != "nll_per_byte"} for r in rows])
    with pytest.raises(InputError, match=r"clean/test.jsonl|model1/test.jsonl"):
        analyze(**files, protocol=SETTINGS)


def test_two_clean_models_cannot_fit_a_cross_family_relation(tmp_path):
    two = _write_family_files(tmp_path / "two", simulate_family_panel(n_references=2, rng=2),
                              tokenizers=["chars"] * 3)
    results = analyze(**two, protocol=SETTINGS)
    assert results["verdict"]["label"] == "INCONCLUSIVE" and "at least 3 clean models" in results["verdict"]["reasons"][0]
