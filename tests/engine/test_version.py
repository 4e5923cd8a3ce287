"""A model version's rows for the batcher: raw scores, embedding distances where it measures them, and
a failed row (never a NaN answer) where its graph gives a non-finite number."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rmserve.engine.batcher import FailedRow
from rmserve.engine.version import ItemScore, load_version
from tests.conftest import EMBEDDING_WIDTH

ROWS = 3
INPUT_IDS = np.ones((ROWS, 2), dtype=np.int64)
MASK = np.ones((ROWS, 2), dtype=np.int64)


class NanInTheMiddle:
    """A session whose second row's score, or embedding, is NaN."""

    embedding_output = "embedding"

    def __init__(self, nan_embedding: bool = False) -> None:
        self.nan_embedding = nan_embedding

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return np.array([1.0, np.nan, 3.0])

    def score_and_embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings = np.zeros((ROWS, EMBEDDING_WIDTH))
        if self.nan_embedding:
            embeddings[1] = np.nan
            return np.array([1.0, 2.0, 3.0]), embeddings
        return self(input_ids, attention_mask), embeddings


def test_a_non_finite_score_fails_its_row_alone(tiny_repository: Path) -> None:
    version = dataclasses.replace(load_version(tiny_repository / "tiny" / "1", 1), scorer=NanInTheMiddle())
    first, middle, last = version.score_batch(INPUT_IDS, MASK)
    assert (first, last) == (ItemScore(1.0), ItemScore(3.0))  # no distance: the version measures none
    assert isinstance(middle, FailedRow) and middle.reason == "non_finite" and "non-finite" in middle.message
    assert version.distances([ItemScore(1.0)]) is None


def test_the_version_measures_each_rows_distance_and_fails_a_non_finite_one(embedding_repository: Path) -> None:
    loaded = load_version(embedding_repository / "tiny" / "1", 1)
    assert loaded.embedding is not None
    expected = loaded.embedding.distances(np.zeros((1, EMBEDDING_WIDTH)))[0]
    for scorer in (NanInTheMiddle(), NanInTheMiddle(nan_embedding=True)):
        version = dataclasses.replace(loaded, scorer=scorer)
        first, middle, last = version.score_batch(INPUT_IDS, MASK)
        assert (first, last) == (ItemScore(1.0, expected), ItemScore(3.0, expected))
        assert isinstance(middle, FailedRow) and middle.reason == "non_finite"
        assert isinstance(first, ItemScore) and isinstance(last, ItemScore)
        distances = version.distances([first, last])
        assert distances is not None and distances.tolist() == [expected, expected]
