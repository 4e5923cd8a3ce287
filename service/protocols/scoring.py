"""The step every protocol shares between parsing and answering: exchanges in, scores out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rmserve.core.conversation import Exchange
from rmserve.engine.registry import Scored, ServedModel
from rmserve.http.request import deadline


def score_exchanges(model: ServedModel, exchanges: Sequence[Exchange]) -> Scored:
    """Score within the request's deadline (`X-Timeout-Ms`, or the default)."""
    return model.score(exchanges, deadline())


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| cannot overflow."""
    return 0.5 * (1.0 + np.tanh(values / 2.0))
