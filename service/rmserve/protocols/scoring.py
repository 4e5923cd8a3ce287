"""The step every scoring route shares between parsing its body and building its answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from flask import request

from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import REWARDS, Reward
from rmserve.core.formats import InputFormat
from rmserve.engine.registry import Served
from rmserve.engine.served_ensemble import ServedEnsemble
from rmserve.engine.served_model import Scored
from rmserve.errors import InvalidField
from rmserve.http.request import deadline
from rmserve.http.state import state

Body = TypeVar("Body")
# A protocol's pure function from its parsed body to the exchanges to score, in the model's format.
ToExchanges = Callable[[Body, InputFormat, Settings], Sequence[Exchange]]

REWARD_PARAMETER = "reward"
# Every scoring route takes it: `?reward=conservative` switches a trainer's reward by URL.
REWARD_QUERY = (
    (
        REWARD_PARAMETER,
        f"for an ensemble, which combination of its members' scores is the reward ({', '.join(REWARDS)}); "
        "default: the ensemble's own `reward`. A 422 for a single model",
    ),
)


def score_request(model_name: str | None, body: Body, to_exchanges: ToExchanges[Body]) -> tuple[Served, Scored]:
    """Pick the model (the default without a name), lay the body out as its exchanges, and score them
    within the request's deadline (`X-Timeout-Ms`, or the default), with the `?reward=` of the URL."""
    app_state = state()
    model = app_state.registry.get(model_name)
    reward = requested_reward(model, request.args.get(REWARD_PARAMETER))
    exchanges = to_exchanges(body, model.input_format, app_state.settings)
    if isinstance(model, ServedEnsemble):
        return model, model.score(exchanges, deadline(), reward)
    return model, model.score(exchanges, deadline())


def requested_reward(model: Served, reward: str | None) -> Reward | None:
    """`?reward=mean|conservative|min` for an ensemble; anything else is a 422 naming `reward`."""
    if reward is None:
        return None
    if not isinstance(model, ServedEnsemble):
        raise InvalidField(REWARD_PARAMETER, f"{model.name!r} is a single model, not an ensemble: it has one score")
    for known in REWARDS:
        if reward == known:
            return known
    raise InvalidField(REWARD_PARAMETER, f"must be one of {', '.join(REWARDS)}, got {reward!r}")


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| cannot overflow."""
    return 0.5 * (1.0 + np.tanh(values / 2.0))
