"""The completion metrics table: adding a metric is a row in contaudit/metrics.py (plus its
computation in scoring), and the protocol, the analysis and the reports pick it up."""

import json

import pytest

from contaudit.analysis import analyze
from contaudit.analysis.primary import random_streams
from contaudit.analysis.simulate import simulate_audit, write_audit
from contaudit.metrics import METRICS, CompletionMetric
from contaudit.protocol import AnalysisSettings, load_setting_tables
from contaudit.report import write_report

# The simulated probe score files carry ``edit_similarity`` (as contaudit's scorer writes it),
# which the table does not list: a metric that exists in the files but not yet in the analysis.
EDIT = CompletionMetric("edit_similarity", "share of tokens", binary=False, item_key="edit",
                        stream=5)


@pytest.fixture
def audit_files(tmp_path):
    files = write_audit(simulate_audit(ppl_effect=0.3, mem_effect=0.3, rng=3), tmp_path / "sim")
    return {k: str(v) for k, v in files.items()}


def _analyze(files, out, **settings):
    return analyze(files["suspect_test"], files["clean_test"], files["suspect_shadow"], files["clean_shadow"],
                   suspect_probes=files["suspect_probes"], clean_probes=files["clean_probes"], probes=files["probes"],
                   shadow_origin="random_split", protocol=AnalysisSettings(**settings), out=out)


def test_a_metric_added_to_the_table_is_tested_reported_and_can_be_primary(audit_files, tmp_path, monkeypatch):
    before = _analyze(audit_files, tmp_path / "before")
    monkeypatch.setitem(METRICS, EDIT.name, EDIT)
    after = _analyze(audit_files, tmp_path / "after", primary_metric="edit_similarity")

    mem = after["memorization_did"]
    assert mem["primary_metric"] == "edit_similarity"
    assert mem["edit_similarity"]["unit"] == "share of tokens" and mem["edit_similarity"]["estimate"] > 0
    assert all("edit_sus" in p and "edit_clean" in p for p in after["items"]["probes"])
    # The other metrics keep their random streams, so their numbers do not move.
    for m in ("exact_match", "token_match_frac", "suffix_logprob"):
        assert after["memorization_did"][m] == before["memorization_did"][m]
    assert after["perplexity_did"] == before["perplexity_did"]

    report = write_report(tmp_path / "after")
    text = report.markdown.read_text()  # the primary row is edit_similarity's; the table's others are secondary
    assert all(f"Memorization DiD ({m}, secondary)" in text for m in ("exact_match", "token_match_frac",
                                                                       "suffix_logprob"))
    assert "edit_similarity, secondary" not in text


def test_a_protocol_may_name_a_metric_of_the_table_and_no_other(tmp_path, monkeypatch):
    path = tmp_path / "p.toml"
    path.write_text('[analysis]\nprimary_metric = "edit_similarity"\n')
    with pytest.raises(Exception, match="primary_metric.*one of 'exact_match', 'token_match_frac', 'suffix_logprob'"):
        load_setting_tables(path, ("analysis",))
    monkeypatch.setitem(METRICS, EDIT.name, EDIT)
    assert load_setting_tables(path, ("analysis",))["analysis"]["primary_metric"] == "edit_similarity"


def test_each_metric_has_its_own_random_stream(monkeypatch):
    streams = random_streams(0)
    assert set(METRICS) | {"perplexity", "supporting", "inflation"} == set(streams)
    monkeypatch.setitem(METRICS, "clash", CompletionMetric("clash", "share", binary=False, item_key="c",
                                                           stream=METRICS["exact_match"].stream))
    with pytest.raises(ValueError, match="share a random stream"):
        random_streams(0)


def test_the_table_matches_what_the_scorer_writes():
    from contaudit.scoring.completion import completion_metrics

    row = completion_metrics([1, 2, 3], [1, 2, 4])
    scored = set(row) | {"suffix_logprob"}  # the log-prob comes from the likelihood pass (scoring/engine.py)
    assert set(METRICS) <= scored
    assert json.dumps({m.name: m.stream for m in METRICS.values()}) == (
        '{"exact_match": 1, "token_match_frac": 2, "suffix_logprob": 4}')  # existing streams never move
