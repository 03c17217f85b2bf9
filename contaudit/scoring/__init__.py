"""The scoring engine: per-item likelihood metrics and verbatim completion of one model.

``score(model, data, out, ...)`` is what ``contaudit score`` runs; see
``docs/scoring.md`` for the output format and the definitions of every metric.
"""

from contaudit.scoring.engine import DEFAULT_BATCH_TOKENS, ScoreResult, ScoreSettings, Skip, score
from contaudit.models import ModelError

__all__ = ["DEFAULT_BATCH_TOKENS", "ModelError", "ScoreResult", "ScoreSettings", "Skip", "score"]
