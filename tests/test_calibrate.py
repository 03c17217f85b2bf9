"""Calibration summaries: detection rates, false-positive rate, smallest detected k, plot."""

import pytest

from contaudit.calibrate import _run_record, detection_rates, plot_power_curve, render_markdown, summarize


def runs(table):
    return [{"k": k, "seed": s, "verdict": v} for k, verdicts in table.items() for s, v in enumerate(verdicts)]


def test_summary_counts_only_contaminated_as_detected():
    table = {0: ["NO_EVIDENCE", "SUSPECT", "NO_EVIDENCE", "CONTAMINATED", "NO_EVIDENCE"],
             1: ["SUSPECT", "CONTAMINATED", "NO_EVIDENCE", "NO_EVIDENCE", "NO_EVIDENCE"],
             4: ["CONTAMINATED"] * 4 + ["SUSPECT"],
             8: ["CONTAMINATED"] * 5}
    detection, fpr, smallest = summarize(runs(table))
    assert detection == {0: 0.2, 1: 0.2, 4: 0.8, 8: 1.0}
    assert fpr == 0.2 and smallest == 4
    assert summarize(runs({2: ["SUSPECT"]}))[1:] == (None, None)


def test_rates_per_outcome():
    rows = [{"k": 0, "verdict": "NO_EVIDENCE", "perplexity_counts": False, "memorization_counts": False},
            {"k": 0, "verdict": "SUSPECT", "perplexity_counts": True, "memorization_counts": False},
            {"k": 4, "verdict": "SUSPECT", "perplexity_counts": False, "memorization_counts": True},
            {"k": 4, "verdict": "CONTAMINATED", "perplexity_counts": True, "memorization_counts": True}]
    assert detection_rates(rows) == {"contaminated": {0: 0.0, 4: 0.5}, "suspect_or_higher": {0: 0.5, 4: 1.0},
                                     "perplexity_test": {0: 0.5, 4: 0.5}, "memorization_test": {0: 0.0, 4: 1.0}}


def test_plot_and_markdown(tmp_path):
    detection = {0: 0.0, 2: 0.4, 8: 1.0}
    rates = {"suspect_or_higher": {0: 0.2, 2: 0.6, 8: 1.0}, "perplexity_test": {0: 0.2, 2: 0.6, 8: 1.0}}
    path = plot_power_curve(detection, 5, tmp_path / "curve.png", rates)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = render_markdown(detection, 0.0, 8, 5, rates)
    assert "| 2 | 0.40 | 0.60 | 0.60 |" in md and "False-positive rate at k = 0: 0.00" in md and "Smallest k" in md
    assert "| 2 | 0.40 |" in render_markdown(detection, 0.0, 8, 5)


def test_run_record_reads_results_schema():
    results = {"verdict": {"label": "SUSPECT", "tests": [{"name": "perplexity_did", "counts": True},
                                                         {"name": "memorization_did", "counts": False}]},
               "perplexity_did": {"estimate": -0.2, "pvalue": 0.001},
               "memorization_did": {"primary_metric": "exact_match", "exact_match": {"estimate": 0.1, "pvalue": 0.3}}}
    rec = _run_record(4, 2, results)
    assert rec == {"k": 4, "seed": 2, "verdict": "SUSPECT", "perplexity_did": -0.2, "perplexity_p": 0.001,
                   "memorization_did": 0.1, "memorization_p": 0.3, "perplexity_counts": True,
                   "memorization_counts": False}


def test_bad_grid_is_rejected(tmp_path):
    from contaudit.calibrate import calibrate
    from contaudit.errors import InputError

    with pytest.raises(InputError, match="`dups` must be non-negative"):
        calibrate(tmp_path, dups=(-1,))
    with pytest.raises(InputError, match="`seeds` must be at least 1"):
        calibrate(tmp_path, seeds=0)


def _results(ppl_p, mem, *, design_ok=True):
    return {"verdict": {"label": "SUSPECT", "tests": []},
            "protocol": {"analysis": {"alpha": 0.05, "min_effect_perplexity": 0.01, "min_effect_memorization": 0.02}},
            "design_checks": [{"name": "balance", "passed": design_ok}],
            "perplexity_did": {"estimate": -0.2, "pvalue": ppl_p},
            "memorization_did": {"primary_metric": "exact_match", **mem}}


def test_each_metric_as_if_primary_applies_holm_direction_and_minimum_effect():
    from contaudit.calibrate import if_primary

    mem = {"exact_match": {"estimate": 0.0, "pvalue": 1.0},
           "token_match_frac": {"estimate": 0.01, "pvalue": 0.001},  # significant but below the 0.02 minimum
           "suffix_logprob": {"estimate": 0.17, "pvalue": 0.04}}
    # Holm with perplexity p 0.001: the larger p (0.04) is compared with alpha as is, the smaller doubled
    got = if_primary(_results(0.001, mem))
    assert {m: (r["memorization_counts"], r["contaminated"]) for m, r in got.items()} == {
        "exact_match": (False, False), "token_match_frac": (False, False), "suffix_logprob": (True, True)}
    # perplexity p 0.03 is then the smaller one, doubled to 0.06; step-down keeps 0.04 at 0.06 too
    assert if_primary(_results(0.03, mem))["suffix_logprob"] == {"memorization_counts": False, "contaminated": False,
                                                                 "did": 0.17, "p": 0.04}
    assert not if_primary(_results(0.001, mem, design_ok=False))["suffix_logprob"]["contaminated"]
    rows = [{"k": 0, "verdict": "SUSPECT", **{"if_primary": if_primary(_results(0.5, mem))}},
            {"k": 8, "verdict": "SUSPECT", **{"if_primary": got}}]
    rates = detection_rates(rows)
    assert rates["contaminated[suffix_logprob]"] == {0: 0.0, 8: 1.0}
    assert rates["memorization_test[exact_match]"] == {0: 0.0, 8: 0.0}
    md = render_markdown({0: 0.0, 8: 0.0}, 0.0, None, 1, rates)
    assert "CONTAMINATED with suffix_logprob primary" in md and "| 8 | 0.00 | 0.00 | 0.00 | 0.00 | 1.00 | 1.00 |" in md


def test_an_audit_is_reused_only_when_its_results_carry_every_metric(tmp_path):
    import json

    from contaudit.calibrate import _has_every_metric

    path = tmp_path / "results.json"
    assert not _has_every_metric(path)  # no audit yet
    path.write_text("{not json")
    assert not _has_every_metric(path)
    mem = {"primary_metric": "exact_match", "exact_match": {}, "token_match_frac": {}, "suffix_logprob": None}
    path.write_text(json.dumps({"memorization_did": mem}))
    assert not _has_every_metric(path)  # scored before suffix_logprob existed
    path.write_text(json.dumps({"memorization_did": {**mem, "suffix_logprob": {"estimate": 0.1}}}))
    assert _has_every_metric(path)
