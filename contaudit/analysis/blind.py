"""The blind baseline (Das et al. 2024): can the item text alone tell the test set from the shadow set?

A membership test is only as fair as its split: when members and non-members differ in
time or style, a classifier that never sees the model separates them, and a model-based
test can ride on the same difference. :func:`blind_baseline` measures that difference:
the cross-validated AUC of a multinomial naive Bayes classifier on word counts, with a
permutation p-value (labels shuffled, the whole cross-validation rerun). AUC near 0.5
with a large p says the sets read alike; a high AUC says the shift is there to see, and
only a design that allows for it (a reference panel) gives a valid verdict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import stats

from contaudit.statistics import json_number
from contaudit.errors import InputError


@dataclass
class BlindBaselineResult:
    """Result of :func:`blind_baseline`: ``statistic`` is the cross-validated AUC (test items scored as test)."""

    statistic: float
    pvalue: float
    n: tuple[int, int]
    n_folds: int
    n_permutations: int
    vocabulary: int

    def to_dict(self) -> dict:
        return {"available": True, "auc": json_number(self.statistic), "pvalue": json_number(self.pvalue),
                "n": list(self.n), "n_folds": self.n_folds, "n_permutations": self.n_permutations,
                "vocabulary": self.vocabulary,
                "method": "multinomial naive Bayes on word counts, stratified k-fold cross-validated AUC; "
                          "permutation p-value (Das et al. 2024)"}


def _counts(texts: list[str], max_vocabulary: int):
    """Word counts as a sparse ``(items, vocabulary)`` matrix (the most frequent words by document frequency)."""
    from scipy import sparse

    from contaudit.text import words

    tokens = [words(t) for t in texts]
    df = Counter(w for ws in tokens for w in set(ws))
    vocab = {w: k for k, (w, _) in enumerate(df.most_common(max_vocabulary))}
    rows, cols = [], []
    for i, ws in enumerate(tokens):
        for w in ws:
            if w in vocab:
                rows.append(i)
                cols.append(vocab[w])
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), max(1, len(vocab))))


def _cv_scores(x, y: np.ndarray, folds: np.ndarray, n_folds: int) -> np.ndarray:
    """Held-out naive Bayes log-odds of "test" for every item, each from a model fitted without its fold."""
    xt = x.T.tocsr()  # (V, N): class word totals are matrix-vector products
    onehot = np.zeros((y.size, 2 * n_folds))
    onehot[np.arange(y.size), 2 * folds + y.astype(int)] = 1.0
    held_sums = np.asarray(xt @ onehot).T  # (2 * folds, V): word counts per fold and class
    total = held_sums.reshape(n_folds, 2, -1).sum(axis=0)  # (2, V): per class over every item
    scores = np.empty(y.size)
    vocab = x.shape[1]
    for f in range(n_folds):
        held = folds == f
        train = total - held_sums[2 * f:2 * f + 2]  # (2, V): [not test, test] without fold f
        log_p = np.log((train + 1.0) / (train.sum(axis=1, keepdims=True) + vocab))
        yt = y[~held]
        prior = np.log(max(yt.mean(), 1e-9)) - np.log(max(1 - yt.mean(), 1e-9))
        scores[held] = x[held] @ (log_p[1] - log_p[0]) + prior
    return scores


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    ranks = stats.rankdata(scores)
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def blind_baseline(test_texts, shadow_texts, *, n_folds: int = 5, n_permutations: int = 199,
                   max_vocabulary: int = 5000, rng=None) -> BlindBaselineResult:
    """Cross-validated AUC of a text-only classifier separating test from shadow items.

    Parameters
    ----------
    test_texts, shadow_texts : sequence of str
        The items' texts (at least ``n_folds`` in each set).
    n_folds : int
        Stratified folds of the cross-validation.
    n_permutations : int
        Label permutations for the p-value ``(1 + #{AUC* >= AUC}) / (1 + n_permutations)``
        (one-sided: only separation better than chance is evidence of a shift).
    max_vocabulary : int
        Most frequent words (by document frequency, labels unseen) used as features.
    rng : int, numpy.random.Generator or None

    Examples
    --------
    >>> old = [f"fixed bug {i} in the build" for i in range(20)]
    >>> new = [f"ported crate {i} to rust" for i in range(20)]
    >>> blind_baseline(old, new, rng=0).statistic
    1.0
    """
    test_texts, shadow_texts = list(test_texts), list(shadow_texts)
    if min(len(test_texts), len(shadow_texts)) < n_folds:
        raise InputError(f"the blind baseline needs at least `n_folds` = {n_folds} items in each set; got "
                         f"{len(test_texts)} and {len(shadow_texts)}.")
    if n_folds < 2 or n_permutations < 1:
        raise InputError("`n_folds` must be at least 2 and `n_permutations` at least 1.")
    rng = np.random.default_rng(rng)
    x = _counts(test_texts + shadow_texts, max_vocabulary)
    y = np.r_[np.ones(len(test_texts), bool), np.zeros(len(shadow_texts), bool)]

    def folds_for(labels: np.ndarray) -> np.ndarray:
        folds = np.empty(labels.size, int)
        for value in (True, False):
            idx = np.flatnonzero(labels == value)
            folds[rng.permutation(idx)] = np.arange(idx.size) % n_folds
        return folds

    auc = _auc(_cv_scores(x, y, folds_for(y), n_folds), y)
    null = np.empty(n_permutations)
    for k in range(n_permutations):
        yp = rng.permutation(y)
        null[k] = _auc(_cv_scores(x, yp, folds_for(yp), n_folds), yp)
    pvalue = (1 + int(np.sum(null >= auc))) / (1 + n_permutations)
    return BlindBaselineResult(auc, float(pvalue), (len(test_texts), len(shadow_texts)), n_folds, n_permutations,
                               x.shape[1])
