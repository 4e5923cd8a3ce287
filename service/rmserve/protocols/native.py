"""rmserve's own protocol: `POST /v1/score` (items or group form) and `POST /v1/rank`.

Each route follows the scoring template (`rmserve.protocols.scoring_route`); `score_answer` and
`rank_answer` build the answers from the scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, Discriminator, Field, RootModel, Tag, model_validator
from pydantic_core import PydanticCustomError

from rmserve.core.conversation import Exchange
from rmserve.core.ensemble_spec import Reward
from rmserve.core.formats import InputFormat
from rmserve.engine.servable import Scored, Servable
from rmserve.http.request import request_id
from rmserve.protocols.inputs import Limits, group_exchanges, item_exchanges
from rmserve.protocols.schemas import Item, Strict
from rmserve.protocols.scoring_route import BodyNamedRoute, ScoringRoute, sigmoid

native = Blueprint("native", __name__)

TIE_TOLERANCE = 1e-6


class ItemsRequest(Strict):
    """Items form: any mix of prompt/response pairs and conversations."""

    model: str | None = None
    items: list[Item] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, value: Any) -> Any:
        """`items` beside `prompt`/`responses` is a mix of the two forms, not a typo: say so."""
        if isinstance(value, dict) and value.keys() & set(GroupRequest.model_fields) - {"model"}:
            raise PydanticCustomError(
                "mixed_forms", "send either items or prompt with responses: the two request forms cannot be mixed"
            )
        return value


class GroupRequest(Strict):
    """Group form: one prompt, several responses."""

    model: str | None = None
    prompt: str
    responses: list[str] = Field(min_length=1)


def _request_form(value: Any) -> str:
    return "items_form" if isinstance(value, dict) and "items" in value else "group_form"


class ScoreRequest(
    RootModel[
        Annotated[
            Annotated[ItemsRequest, Tag("items_form")] | Annotated[GroupRequest, Tag("group_form")],
            Discriminator(_request_form),
        ]
    ]
):
    """`/v1/score` takes the items form or the group form."""


class RankRequest(GroupRequest):
    """One prompt and the group of responses to rank."""


class ScoreResponse(BaseModel):
    model: str
    version: int | None = Field(description="the version served; null for an ensemble (see /v1/models)")
    scores: list[float] = Field(
        description="(raw - mean) / std with the manifest's normalization; for an ensemble, its reward"
    )
    raw_scores: list[float] = Field(description="the model's output; for an ensemble, its reward again")
    truncated: list[bool] = Field(
        description="whether the item was cut to the model's max_length (for an ensemble: by any member)"
    )
    tokens: list[int] = Field(description="tokens the model read per item (for an ensemble: the most any member read)")
    injected_turn: list[bool] = Field(
        description="the response writes turn markers of its own (a fake `Human:` turn); scored whole, never split"
    )
    flags: list[list[str]] = Field(
        description="per item, the flags it raised: truncated, injected_turn, and with training statistics "
        "score_above_training_range, length_outside_training and out_of_distribution, for an ensemble the "
        "members' flags and high_disagreement (README: Watching for reward hacking)"
    )
    ood_distances: list[float] | None = Field(
        description="per item, the Mahalanobis distance of its pooled embedding from the training responses' "
        "(out_of_distribution above their p99); null when the version has no embedding statistics"
    )
    # An ensemble's combinations, in item order; absent for a single model.
    reward: Reward | None = Field(None, description="an ensemble's reward: which combination `scores` is")
    mean: list[float] | None = Field(None, description="an ensemble's mean of its members' normalized scores")
    std: list[float] | None = Field(None, description="their standard deviation across members: the disagreement")
    conservative: list[float] | None = Field(None, description="mean - k * std")
    min: list[float] | None = Field(None, description="the lowest member score (the worst case)")
    members: dict[str, list[float]] | None = Field(
        None, description="each member's normalized scores, as its own /v1/score answers them"
    )
    request_id: str


class RankResponse(ScoreResponse):
    ranking: list[int] = Field(description="indices into responses, best first")
    z_scores: list[float] = Field(description="scores standardized within the group")
    pairwise: list[list[float]] = Field(
        description="pairwise[i][j] = P(i preferred over j) = sigmoid(r_i - r_j), r the raw scores (an ensemble's: "
        "its reward)"
    )


def request_exchanges(body: ItemsRequest | GroupRequest, input_format: InputFormat, limits: Limits) -> list[Exchange]:
    if isinstance(body, ItemsRequest):
        return item_exchanges(body.items, input_format, limits)
    return group_exchanges(body.prompt, body.responses, input_format, limits)


def score_answer(model: str, version: int | None, scored: Scored, request_id: str) -> ScoreResponse:
    """The answer to /v1/score; an ensemble's combinations beside `scores` (`reward` says which `scores` is)."""
    combined = scored.ensemble
    ensemble: dict[str, Any] = {}
    if combined is not None:
        ensemble = {name: values.tolist() for name, values in combined.combinations().items()}
        ensemble["reward"] = scored.reward
        ensemble["members"] = {name: scores.tolist() for name, scores in combined.members.items()}
    return ScoreResponse(
        model=model,
        version=version,
        scores=scored.scores.tolist(),
        raw_scores=scored.raw_scores.tolist(),
        truncated=scored.truncated,
        tokens=scored.tokens,
        injected_turn=scored.injected_turn,
        flags=scored.flags,
        ood_distances=None if scored.ood_distances is None else scored.ood_distances.tolist(),
        request_id=request_id,
        **ensemble,
    )


def rank_answer(model: str, version: int | None, scored: Scored, request_id: str) -> RankResponse:
    raw = scored.raw_scores  # [k]
    spread = raw.std()
    # Differences below float32 resolution are ties, not a spread to standardize.
    tied = spread <= TIE_TOLERANCE * max(1.0, float(np.abs(raw).max()))
    z_scores = np.zeros_like(raw) if tied else (raw - raw.mean()) / spread
    # pairwise[i, j] = sigmoid(r_i - r_j): the model's P(response i preferred over j)
    pairwise = sigmoid(raw[:, None] - raw[None, :])
    ranking = sorted(range(len(raw)), key=lambda index: -raw[index])
    return RankResponse(
        **score_answer(model, version, scored, request_id).model_dump(exclude_unset=True),
        ranking=ranking,
        z_scores=z_scores.tolist(),
        pairwise=pairwise.tolist(),
    )


class Score(ScoringRoute[ScoreRequest]):
    path = "/v1/score"
    summary = "Score prompt-response pairs (items form or group form)."
    request_schema = ScoreRequest
    response_schema = ScoreResponse

    def model_name(self, body: ScoreRequest, path: Mapping[str, str]) -> str | None:
        return body.root.model

    def exchanges(self, body: ScoreRequest, input_format: InputFormat, limits: Limits) -> list[Exchange]:
        return request_exchanges(body.root, input_format, limits)

    def answer(self, body: ScoreRequest, served: Servable, scored: Scored) -> Response:
        answer = score_answer(served.name, served.served_version, scored, request_id())
        return jsonify(answer.model_dump(exclude_unset=True))


class Rank(BodyNamedRoute[RankRequest]):
    path = "/v1/rank"
    summary = "Rank a group of responses to one prompt, with z-scores and pairwise preferences."
    request_schema = RankRequest
    response_schema = RankResponse

    def exchanges(self, body: RankRequest, input_format: InputFormat, limits: Limits) -> list[Exchange]:
        return request_exchanges(body, input_format, limits)

    def answer(self, body: RankRequest, served: Servable, scored: Scored) -> Response:
        answer = rank_answer(served.name, served.served_version, scored, request_id())
        return jsonify(answer.model_dump(exclude_unset=True))


Score().register(native, "score")
Rank().register(native, "rank")
