"""Corpus index: exact n-gram and near-duplicate evidence for every benchmark item."""

from contaudit.index.build import IndexConfig, IndexSummary, build_index, classify
from contaudit.index.store import CorpusIndex, load_index

__all__ = ["IndexConfig", "IndexSummary", "CorpusIndex", "build_index", "classify", "load_index"]
