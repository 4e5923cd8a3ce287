"""The template every scoring route follows, so none can skip a step or a guard.

A request is read through the shared reader (size limit, pre-scan, JSON), parsed into the
protocol's body, laid out as exchanges in the model's input format, scored through the scoring
service with the request's deadline and `?reward=`, and answered. A protocol says only what
differs: its body and answer schemas, how its body names the model, lays out its exchanges and
becomes its answer, and (the Open Inference Protocol) where the JSON ends and binary data begins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import numpy as np
from flask import Blueprint, Response, request
from pydantic import BaseModel

from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import REWARDS
from rmserve.core.formats import InputFormat
from rmserve.engine.servable import REWARD_FIELD, Scored, Servable
from rmserve.http.openapi import SCORING_ERRORS, Route, route
from rmserve.http.request import deadline, read_json
from rmserve.http.state import state
from rmserve.protocols.inputs import Limits
from rmserve.protocols.schemas import parse

Body = TypeVar("Body")

# Every scoring route takes it: `?reward=conservative` switches a trainer's reward by URL.
REWARD_QUERY = (
    (
        REWARD_FIELD,
        f"for an ensemble, which combination of its members' scores is the reward ({', '.join(REWARDS)}); "
        "default: the ensemble's own `reward`. A 422 for a single model",
    ),
)


class ScoringRoute(ABC, Generic[Body]):
    """One protocol's scoring endpoint: `register` it, and Flask calls it for each request."""

    path: ClassVar[str]
    summary: ClassVar[str]
    request_schema: ClassVar[type[BaseModel]]  # what the body parses into (and the OpenAPI document shows)
    response_schema: ClassVar[type[BaseModel]]
    query: ClassVar[tuple[tuple[str, str], ...]] = ()  # the protocol's own URL parameters, besides `reward`

    def register(self, blueprint: Blueprint, endpoint: str) -> None:
        """Serve this route on `blueprint`, with its OpenAPI entry: the scoring errors and `?reward=` included."""
        spec = Route(
            self.path,
            "post",
            self.summary,
            self.request_schema,
            self.response_schema,
            SCORING_ERRORS,
            query=(*self.query, *REWARD_QUERY),
        )
        route(blueprint, spec, endpoint)(self)

    def __call__(self, **path: str) -> Response:
        app_state = state()
        settings = app_state.settings
        document, attached = read_json(settings, self.split)
        body = self.parse(document, attached)
        limits = Limits(settings.max_items, settings.max_text_chars)
        served, scored = app_state.scoring.score(
            self.model_name(body, path),
            lambda input_format: self.exchanges(body, input_format, limits),
            deadline(settings),
            request.args.get(REWARD_FIELD),
        )
        return self.answer(body, served, scored)

    def split(self, raw: bytes) -> tuple[bytes, bytes]:
        """The body's JSON document and the binary data after it: all JSON, but in the Open Inference Protocol."""
        return raw, b""

    def parse(self, document: Any, attached: bytes) -> Body:
        """The decoded JSON as the protocol's body, or a 422 naming the field."""
        return cast(Body, parse(self.request_schema, document))

    @abstractmethod
    def model_name(self, body: Body, path: Mapping[str, str]) -> str | None:
        """The model the request names (None: the default model)."""

    @abstractmethod
    def exchanges(self, body: Body, input_format: InputFormat, limits: Limits) -> Sequence[Exchange]:
        """The body's items as exchanges, read in the model's input format, within `limits`."""

    @abstractmethod
    def answer(self, body: Body, served: Servable, scored: Scored) -> Response: ...


class NamesModel(Protocol):
    """A request body whose `model` field names the model (None: the default model)."""

    @property
    def model(self) -> str | None: ...


Named = TypeVar("Named", bound=NamesModel)


class BodyNamedRoute(ScoringRoute[Named]):
    """A scoring route whose body names the model in its `model` field."""

    def model_name(self, body: Named, path: Mapping[str, str]) -> str | None:
        return body.model


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| cannot overflow; /v1/rank and /classify apply it."""
    return 0.5 * (1.0 + np.tanh(values / 2.0))
