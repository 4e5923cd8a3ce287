"""OpenRLHF's remote reward model protocol: `POST /get_reward`.

OpenRLHF (`--reward.remote_url http://host:8000/get_reward`) posts the decoded policy texts
and reads `rewards`, `scores` and `extra_logs`, turning every value into a tensor. The reward
is the normalized score `/v1/score` calls `scores` (an ensemble's reward, `?reward=` in the URL
choosing which combination).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, Field

from rmserve.core.conversation import Exchange
from rmserve.core.formats import InputFormat
from rmserve.engine.servable import Scored, Servable
from rmserve.protocols.inputs import Limits, prefixed_exchanges, text_exchanges
from rmserve.protocols.schemas import Lenient
from rmserve.protocols.scoring_route import ScoringRoute

openrlhf = Blueprint("openrlhf", __name__)


class GetRewardRequest(Lenient):
    """OpenRLHF's remote reward model request."""

    model: str | None = Field(
        None, description="model to score with; also `?model=` in the URL; default model if absent"
    )
    query: list[str] = Field(description="full texts, prompt + response, as the policy's tokenizer decoded them")
    prompts: list[str] | None = Field(
        None, description="the prompt of each query; each query must start with its prompt, the rest is the response"
    )
    labels: list[Any] | None = Field(None, description="accepted and ignored: a reward model needs no reference answer")


class GetRewardResponse(BaseModel):
    rewards: list[float] = Field(description="one normalized score per query (what /v1/score calls `scores`)")
    scores: list[float] = Field(description="the same numbers as `rewards`")
    extra_logs: dict[str, list[float]] = Field(
        description="per-query numbers OpenRLHF logs: rm_raw_score, rm_tokens, and rm_<flag> (0/1) for each "
        "flag the model checks: rm_truncated, rm_injected_turn, rm_score_above_training_range, ...; for an "
        "ensemble also rm_mean, rm_std, rm_conservative, rm_min and rm_high_disagreement"
    )


def get_reward_answer(scored: Scored) -> GetRewardResponse:
    rewards = scored.scores.tolist()
    # OpenRLHF turns every extra_logs value into a tensor and averages it: floats only, one per query.
    extra_logs = {
        "rm_raw_score": scored.raw_scores.tolist(),
        "rm_tokens": [float(tokens) for tokens in scored.tokens],
    }
    # One 0/1 column per flag the model checks: rm_truncated, rm_injected_turn, rm_score_above_training_range...
    extra_logs.update({f"rm_{name}": column.astype(float).tolist() for name, column in scored.flag_columns.items()})
    if scored.ensemble is not None:  # an ensemble's combinations: rm_mean, rm_std, rm_conservative, rm_min
        extra_logs.update({f"rm_{name}": values.tolist() for name, values in scored.ensemble.combinations().items()})
    return GetRewardResponse(rewards=rewards, scores=rewards, extra_logs=extra_logs)


class GetReward(ScoringRoute[GetRewardRequest]):
    path = "/get_reward"
    summary = "OpenRLHF remote reward model: one reward per full text in `query`."
    request_schema = GetRewardRequest
    response_schema = GetRewardResponse
    query = (("model", "model to score with (or `model` in the body)"),)

    def model_name(self, body: GetRewardRequest, path: Mapping[str, str]) -> str | None:
        return body.model or request.args.get("model")

    def exchanges(self, body: GetRewardRequest, input_format: InputFormat, limits: Limits) -> list[Exchange]:
        """With `prompts`, each response is what follows its prompt; without, split at the last assistant turn."""
        if body.prompts is None:
            return text_exchanges(body.query, "query", input_format, limits)
        return prefixed_exchanges(body.query, body.prompts, "query", input_format, limits)

    def answer(self, body: GetRewardRequest, served: Servable, scored: Scored) -> Response:
        return jsonify(get_reward_answer(scored).model_dump())


GetReward().register(openrlhf, "get_reward")
