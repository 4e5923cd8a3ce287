"""What a reward model must beat: length heuristics and a bag-of-words pairwise classifier.

If a model scores no better than "the shorter response wins" or than TF-IDF n-grams with
logistic regression, it has learned surface features, not preferences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from rmserve.training.data import Comparison, pairs
from rmserve.training.evaluate import pairwise_accuracy

REGULARISATION_GRID = (0.1, 0.3, 1.0, 3.0)
FOLDS = 4


def length_scores(comparisons: Sequence[Comparison], sign: float) -> list[np.ndarray]:
    """Score = ±characters in the response (sign -1: shorter wins)."""
    return [sign * np.array([len(r) for r in c.responses], dtype=np.float64) for c in comparisons]


class BagOfWords:
    """TF-IDF word 1-2-grams + character 2-5-grams of the response; pairwise logistic regression.

    The regularisation strength is picked by cross-validation on the training pairs only.
    """

    def __init__(self) -> None:
        self.vectorizers = [
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ]
        self.weights = np.zeros(0)
        self.strength = 0.0

    def fit(self, comparisons: Sequence[Comparison]) -> BagOfWords:
        for vectorizer in self.vectorizers:
            vectorizer.fit([response for c in comparisons for response in c.responses])
        better, worse = self._pair_rows(comparisons)
        differences = (better - worse).tocsr()
        folds = np.arange(_rows(differences)) % FOLDS
        cv_accuracy = {
            strength: np.mean(
                [
                    np.mean(differences[folds == fold] @ pairwise_weights(differences[folds != fold], strength) > 0)
                    for fold in range(FOLDS)
                ]
            )
            for strength in REGULARISATION_GRID
        }
        self.strength = max(cv_accuracy, key=cv_accuracy.__getitem__)
        self.weights = pairwise_weights(differences, self.strength)
        return self

    def scores(self, comparisons: Sequence[Comparison]) -> list[np.ndarray]:
        return [self._features(list(c.responses)) @ self.weights for c in comparisons]

    def _features(self, texts: list[str]) -> sp.csr_matrix:
        # scipy is untyped: hstack of matrices is a matrix, which pyright cannot infer
        return cast(sp.csr_matrix, sp.hstack([vectorizer.transform(texts) for vectorizer in self.vectorizers]).tocsr())

    def _pair_rows(self, comparisons: Sequence[Comparison]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        implied = pairs(comparisons)
        return self._features([better for better, _ in implied]), self._features([worse for _, worse in implied])


def pairwise_weights(differences: sp.csr_matrix, strength: float) -> np.ndarray:
    """Logistic regression on better-minus-worse rows, each also mirrored as a negative example."""
    features = sp.vstack([differences, -differences])
    pairs_count = _rows(differences)
    labels = np.r_[np.ones(pairs_count), np.zeros(pairs_count)]
    classifier = LogisticRegression(C=strength, fit_intercept=False, max_iter=5000).fit(features, labels)
    return np.asarray(classifier.coef_[0], dtype=np.float64)


def _rows(matrix: sp.csr_matrix) -> int:
    """The row count (scipy is untyped: pyright reads its `shape` as None)."""
    return cast("tuple[int, int]", matrix.shape)[0]


def baseline_accuracies(train: Sequence[Comparison], held_out: Sequence[Comparison]) -> dict[str, float]:
    """Pairwise accuracy of each baseline on `held_out`; the bag of words learns from `train`."""
    return {
        "shorter_wins": pairwise_accuracy(length_scores(held_out, -1.0)),
        "longer_wins": pairwise_accuracy(length_scores(held_out, +1.0)),
        "bag_of_words": pairwise_accuracy(BagOfWords().fit(train).scores(held_out)),
    }
