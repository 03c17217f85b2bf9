"""The scoring engine: per-item likelihood metrics and verbatim completion of one model.

``score(model, data, out, ...)`` is what ``contaudit score`` runs; see
``docs/scoring.md`` for the output format and the definitions of every metric.
``open_model`` loads a model once to score several files (``prepare_job``) with it.
"""

from contaudit.scoring.engine import (DEFAULT_BATCH_TOKENS, ModelSession, ScoreJob, ScoreResult, ScoreSettings, Skip,
                                      open_model, prepare_job, score)
from contaudit.models import ModelError

__all__ = ["DEFAULT_BATCH_TOKENS", "ModelError", "ModelSession", "ScoreJob", "ScoreResult", "ScoreSettings", "Skip",
           "open_model", "prepare_job", "score"]
