"""Routes that speak other trainers' reward-server protocols, so they work unchanged (SPEC §3).

- `POST /get_reward`: OpenRLHF's remote reward model (`--remote_rm_url http://host:8000/get_reward`).
- `POST /classify`: vLLM's classification API, which veRL's reward loop posts a chat-formatted text to.

Both score through the same pairs, limits, batcher and normalization as `/v1/score`; the reward
each returns is the normalized score `/v1/score` calls `scores`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from service.api import read_json, score_pairs, sigmoid
from service.app import state
from service.inputs import prefixed_pairs, transcript_pairs
from service.openapi import SCORING_ERRORS, Route, register_route
from service.schemas import parse

compat = Blueprint("compat", __name__)

# What vLLM reports as the label of a single-output classifier whose config names no labels.
LABEL = "LABEL_0"


class Lenient(BaseModel):
    """Trainers add fields of their own (`labels`, `add_special_tokens`, `priority`): ignored, as their servers do."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class GetRewardRequest(Lenient):
    """OpenRLHF's remote reward model request."""

    model: str | None = Field(None, description="model to score with; also `?model=` in the URL; default model if absent")
    query: list[str] = Field(description="full texts, prompt + response, as the policy's tokenizer decoded them")
    prompts: list[str] | None = Field(
        None, description="the prompt of each query; each query must start with its prompt, the rest is the response"
    )
    labels: list[Any] | None = Field(None, description="accepted and ignored: a reward model needs no reference answer")


class GetRewardResponse(BaseModel):
    rewards: list[float] = Field(description="one normalized score per query (what /v1/score calls `scores`)")
    scores: list[float] = Field(description="the same numbers as `rewards`")
    extra_logs: dict[str, list[float]] = Field(
        description="per-query numbers OpenRLHF logs: rm_raw_score, rm_truncated (0/1), rm_tokens"
    )


class ClassifyRequest(Lenient):
    """vLLM's classification request, as veRL's reward loop sends it."""

    model: str | None = None
    input: str | list[str] = Field(description="full chat-formatted texts; each is split at its last assistant turn")
    use_activation: bool | None = Field(None, description="sigmoid the score (default true, as in vLLM)")
    activation: bool | None = Field(None, description="vLLM's older name for use_activation (older veRL sends it)")

    @field_validator("input", mode="before")
    @classmethod
    def _text_or_texts(cls, value: Any) -> Any:
        # Checked up front so an error says `input`, not the name of a union member pydantic tried.
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(text, str) for text in value)):
            return value
        raise PydanticCustomError("text_or_texts", "must be a string or a list of strings")

    @property
    def sigmoid(self) -> bool:
        for choice in (self.use_activation, self.activation):
            if choice is not None:
                return choice
        return True


class ClassifyData(BaseModel):
    index: int
    label: str
    probs: list[float] = Field(description="[the normalized score], or [sigmoid of it] with use_activation")
    num_classes: int = 1


class ClassifyUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0
    prompt_tokens_details: None = None


class ClassifyResponse(BaseModel):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ClassifyData]
    usage: ClassifyUsage


@compat.post("/get_reward")
def get_reward() -> Any:
    body = parse(GetRewardRequest, read_json())
    model = state().registry.get(body.model or request.args.get("model"))
    settings, input_format = state().settings, model.version.format
    if body.prompts is None:
        pairs = transcript_pairs(body.query, "query", input_format, settings)
    else:
        pairs = prefixed_pairs(body.query, body.prompts, "query", input_format, settings)
    scored = score_pairs(model, pairs)
    rewards = scored.scores.tolist()
    # OpenRLHF turns every extra_logs value into a tensor and averages it: floats only, one per query.
    extra_logs = {
        "rm_raw_score": scored.raw_scores.tolist(),
        "rm_truncated": [float(truncated) for truncated in scored.truncated],
        "rm_tokens": [float(tokens) for tokens in scored.tokens],
    }
    return jsonify(GetRewardResponse(rewards=rewards, scores=rewards, extra_logs=extra_logs).model_dump())


@compat.post("/classify")
def classify() -> Any:
    body = parse(ClassifyRequest, read_json())
    model = state().registry.get(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    pairs = transcript_pairs(texts, "input", model.version.format, state().settings, indexed=isinstance(body.input, list))
    scored = score_pairs(model, pairs)
    values = scored.scores  # [items]
    if body.sigmoid:
        values = sigmoid(values)
    tokens = sum(scored.tokens)
    return jsonify(
        ClassifyResponse(
            id=f"classify-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model.name,
            data=[ClassifyData(index=index, label=LABEL, probs=[value]) for index, value in enumerate(values.tolist())],
            usage=ClassifyUsage(prompt_tokens=tokens, total_tokens=tokens),
        ).model_dump()
    )


register_route(Route("/get_reward", "post", "OpenRLHF remote reward model: one reward per full text in `query`.",
                     GetRewardRequest, GetRewardResponse, SCORING_ERRORS))
register_route(Route("/classify", "post", "vLLM-style classification (veRL): one score per chat-formatted text.",
                     ClassifyRequest, ClassifyResponse, SCORING_ERRORS))
