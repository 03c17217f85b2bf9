"""The completion metrics of the memorization test, declared once.

Scoring writes one field per metric on every probe row (``scoring/completion.py``
computes them); the protocol's ``primary_metric``, the analysis (which runs the test on
each metric), the simulation, ``calibrate`` and the reports read this table, at the time
they run (never a copy made at import). Adding a metric: a row here, its computation in
``scoring/completion.py``, and a test (``tests/test_metrics.py`` adds one to the table and
audits with it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompletionMetric:
    """One completion score of a probe (higher = closer to the corpus's suffix)."""

    name: str  # the score files' field
    unit: str  # per probe, in the token comparison
    binary: bool  # 0/1 per probe: its detectable effect allows for the variance a rise creates
    item_key: str  # per-probe rows of results.json: ``{item_key}_sus`` / ``{item_key}_clean``
    stream: int  # the position of its random stream in the analysis (a new metric takes the next free number,
    #              so the other tests keep their random numbers)
    required: bool = False  # every score file ever written has it; files without the others still analyze
    per_token: bool = False  # a mean over suffix tokens, which the analysis can express per byte


METRICS: dict[str, CompletionMetric] = {m.name: m for m in (
    CompletionMetric("exact_match", "share of probes", binary=True, item_key="exact", stream=1,
                     required=True),
    CompletionMetric("token_match_frac", "share of tokens", binary=False, item_key="frac",
                     stream=2, required=True),
    CompletionMetric("suffix_logprob", "nats/token", binary=False, item_key="logprob",
                     stream=4, per_token=True),
)}
