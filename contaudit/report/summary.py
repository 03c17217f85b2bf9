"""``report.json``: the report's numbers without the per-item data, for dashboards and CI."""

from __future__ import annotations

from contaudit.analysis.results import summary, summary_line


def render_json(results: dict) -> dict:
    """Summary, one-line summary, primary tests, design checks, supporting evidence and counts."""
    return {
        **summary(results),
        "line": summary_line(results),
        "reasons": results["verdict"]["reasons"],
        "perplexity_did": results["perplexity_did"],
        "memorization_did": results["memorization_did"],
        "design_checks": results["design_checks"],
        "supporting": results["supporting"],
        "data": results["data"],
        "warnings": results.get("warnings", []),
        "protocol": {k: v for k, v in results["protocol"].items() if k != "analysis"},
    }
