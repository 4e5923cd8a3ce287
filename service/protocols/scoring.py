"""The step every protocol shares between parsing and answering: text pairs in, scores out."""

from __future__ import annotations

import numpy as np

from rmserve.engine.registry import Scored, ServedModel
from rmserve.http.request import deadline
from rmserve.protocols.inputs import Pairs


def score_pairs(model: ServedModel, pairs: Pairs) -> Scored:
    """Score within the request's deadline (`X-Timeout-Ms`, or the default)."""
    return model.score(pairs.prompts, pairs.responses, deadline())


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| cannot overflow."""
    return 0.5 * (1.0 + np.tanh(values / 2.0))
