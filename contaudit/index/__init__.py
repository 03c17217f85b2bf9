"""Corpus index: exact n-gram and near-duplicate evidence for every benchmark item."""

from contaudit.index.build import (
    IndexConfig,
    IndexSummary,
    build_index,
    build_indexes,
    classify,
)
from contaudit.index.store import CorpusIndex, load_index

__all__ = ["CorpusIndex", "IndexConfig", "IndexSummary", "build_index", "build_indexes", "classify", "load_index"]
