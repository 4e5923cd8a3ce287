"""vLLM's classification API: `POST /classify`, as veRL's reward loop calls a reward model server.

veRL posts one chat-formatted text with `"use_activation": false` and reads
`data[-1]["probs"][-1]` as the reward. Unknown fields are ignored, as vLLM does. A text in no chat
layout is scored as a response without a prompt, as vLLM scores any text, and flagged `no_prompt`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from rmserve.core.conversation import Exchange
from rmserve.core.formats import InputFormat
from rmserve.engine.servable import Scored, Servable
from rmserve.protocols.inputs import Limits, text_exchanges
from rmserve.protocols.schemas import Lenient
from rmserve.protocols.scoring_route import BodyNamedRoute, sigmoid

classify = Blueprint("classify", __name__)

# What vLLM reports as the label of a single-output classifier whose config names no labels.
LABEL = "LABEL_0"


class ClassifyRequest(Lenient):
    """vLLM's classification request, as veRL's reward loop sends it."""

    model: str | None = None
    input: str | list[str] = Field(
        description="texts: a chat-formatted one (ChatML, Llama 3, Gemma, Mistral, HH) is split at its last "
        "assistant turn; any other is a response without a prompt (flagged no_prompt)"
    )
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
    flags: list[str] = Field(
        default_factory=list, description="rmserve's flags for the item (no_prompt, truncated, ...); vLLM has none"
    )


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


def classify_answer(
    body: ClassifyRequest, model: str, scored: Scored, answer_id: str, created: int
) -> ClassifyResponse:
    values = sigmoid(scored.scores) if body.sigmoid else scored.scores  # [items]
    tokens = sum(scored.tokens)
    return ClassifyResponse(
        id=answer_id,
        created=created,
        model=model,
        data=[
            ClassifyData(index=index, label=LABEL, probs=[value], flags=flags)
            for index, (value, flags) in enumerate(zip(values.tolist(), scored.flags, strict=True))
        ],
        usage=ClassifyUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


class Classify(BodyNamedRoute[ClassifyRequest]):
    path = "/classify"
    summary = "vLLM-style classification (veRL): one score per text, chat-formatted or plain."
    request_schema = ClassifyRequest
    response_schema = ClassifyResponse

    def exchanges(self, body: ClassifyRequest, input_format: InputFormat, limits: Limits) -> list[Exchange]:
        """One text or a list; errors name `input`, or `input[i]` in a list."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        return text_exchanges(texts, "input", input_format, limits, indexed=isinstance(body.input, list))

    def answer(self, body: ClassifyRequest, served: Servable, scored: Scored) -> Response:
        answer = classify_answer(body, served.name, scored, f"classify-{uuid.uuid4().hex}", int(time.time()))
        return jsonify(answer.model_dump())


Classify().register(classify, "classify_texts")
