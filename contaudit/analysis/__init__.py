"""Difference-in-differences analysis and the verdict (``contaudit analyze``).

:func:`analyze` runs, in order: :mod:`~contaudit.analysis.inputs` (score files read and
paired), :mod:`~contaudit.analysis.design` (what the design allows),
:mod:`~contaudit.analysis.primary` (the two DiD tests), :mod:`~contaudit.analysis.evidence`
(supporting evidence), :mod:`~contaudit.analysis.verdict` (the decision rule) and
:mod:`~contaudit.analysis.results` (the results.json schema, written and read). The tests:

* :mod:`contaudit.analysis.did` -- item-level estimators and tests (scipy-style functions);
* :mod:`contaudit.analysis.panel` -- reference-panel tests and shift adjustment (non-random shadow sets);
* :mod:`contaudit.analysis.families` -- the cross-family panel;
* :mod:`contaudit.analysis.simulate` -- synthetic audits with planted effects.

Example::

    from contaudit.analysis import analyze
    analyze("scores/sus/test.jsonl", "scores/clean/test.jsonl",
            "scores/sus/shadow.jsonl", "scores/clean/shadow.jsonl",
            protocol="protocols/default.toml", out="runs/audit")

The release gate over a finished run is :func:`contaudit.suite.gate_run`.
"""

from contaudit.analysis.analyze import analyze
from contaudit.analysis.inputs import ReferenceScores, pair_scores, read_scores
from contaudit.analysis.results import write_results
from contaudit.analysis.did import (CorrelationResult, DiDResult, ItemOrderResult, difference_in_means,
                                    dose_response, item_order_mde, item_order_test, memorization_did, perplexity_did)
from contaudit.analysis.families import FamilyResult, family_did
from contaudit.analysis.panel import PanelResult, panel_did
from contaudit.analysis.results import SCHEMA_VERSION, load_results, summary, summary_line
from contaudit.statistics import ConfidenceInterval, hedges_g, holm, minimum_detectable_effect
from contaudit.analysis.verdict import (CONTAMINATED, INCONCLUSIVE, INVALID_DESIGN, NO_EVIDENCE, SUSPECT,
                                        DesignCheck, Verdict, decide, gate)

__all__ = [
    "analyze", "ReferenceScores", "pair_scores", "read_scores", "write_results",
    "ConfidenceInterval", "CorrelationResult", "DiDResult", "ItemOrderResult", "difference_in_means",
    "dose_response", "hedges_g", "holm", "item_order_mde", "item_order_test", "memorization_did",
    "minimum_detectable_effect", "perplexity_did", "FamilyResult", "family_did", "PanelResult", "panel_did",
    "SCHEMA_VERSION", "load_results", "summary", "summary_line",
    "CONTAMINATED", "INCONCLUSIVE", "INVALID_DESIGN", "NO_EVIDENCE", "SUSPECT", "DesignCheck", "Verdict", "decide",
    "gate",
]
