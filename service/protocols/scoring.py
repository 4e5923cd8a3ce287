"""The step every scoring route shares between parsing its body and building its answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.formats import InputFormat
from rmserve.engine.registry import Scored, ServedModel
from rmserve.http.request import deadline
from rmserve.http.state import state

Body = TypeVar("Body")
# A protocol's pure function from its parsed body to the exchanges to score, in the model's format.
ToExchanges = Callable[[Body, InputFormat, Settings], Sequence[Exchange]]


def score_request(model_name: str | None, body: Body, to_exchanges: ToExchanges[Body]) -> tuple[ServedModel, Scored]:
    """Pick the model (the default without a name), lay the body out as its exchanges, and score them
    within the request's deadline (`X-Timeout-Ms`, or the default)."""
    app_state = state()
    model = app_state.registry.get(model_name)
    exchanges = to_exchanges(body, model.version.format, app_state.settings)
    return model, model.score(exchanges, deadline())


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| cannot overflow."""
    return 0.5 * (1.0 + np.tanh(values / 2.0))
