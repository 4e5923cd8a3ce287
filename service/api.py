"""The scoring routes: `/v1/score` and `/v1/rank`."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from flask import Blueprint, g, jsonify, request

from service.app import state
from service.errors import InvalidField, MalformedJSON
from service.inputs import Pairs, group_pairs, score_request_pairs
from service.registry import Scored, ServedModel
from service.schemas import RankRequest, RankResponse, ScoreRequest, ScoreResponse, parse

api = Blueprint("api", __name__)

TIMEOUT_HEADER = "X-Timeout-Ms"
TIE_TOLERANCE = 1e-6


def sigmoid(values: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written with tanh so large |x| cannot overflow."""
    return 0.5 * (1.0 + np.tanh(values / 2.0))


def read_json() -> Any:
    """The request body as JSON, whatever Content-Type the client sent (curl's default included)."""
    try:
        return json.loads(request.get_data(cache=False))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedJSON(f"request body is not valid JSON: {error}") from None


def deadline() -> float:
    """Monotonic time by which the request must be scored: `X-Timeout-Ms`, or the default."""
    settings = state().settings
    header = request.headers.get(TIMEOUT_HEADER)
    if header is None:
        return time.monotonic() + settings.request_timeout_s
    try:
        timeout_ms = float(header)
    except ValueError:
        timeout_ms = float("nan")
    if not timeout_ms > 0:
        raise InvalidField(TIMEOUT_HEADER, f"must be a positive number of milliseconds, got {header!r}")
    return time.monotonic() + min(timeout_ms / 1000.0, settings.max_timeout_s)


def score_pairs(model: ServedModel, pairs: Pairs) -> Scored:
    return model.score(pairs.prompts, pairs.responses, deadline())


def score_fields(model: ServedModel, scored: Scored) -> dict[str, Any]:
    return {
        "model": model.name,
        "version": model.version.manifest.version,
        "scores": scored.scores.tolist(),
        "raw_scores": scored.raw_scores.tolist(),
        "truncated": scored.truncated,
        "tokens": scored.tokens,
        "request_id": g.request_id,
    }


@api.post("/v1/score")
def score() -> Any:
    body = parse(ScoreRequest, read_json()).root
    model = state().registry.get(body.model)
    pairs = score_request_pairs(body, model.version.format, state().settings)
    scored = score_pairs(model, pairs)
    return jsonify(ScoreResponse(**score_fields(model, scored)).model_dump())


@api.post("/v1/rank")
def rank() -> Any:
    body = parse(RankRequest, read_json())
    model = state().registry.get(body.model)
    pairs = group_pairs(body.prompt, body.responses, model.version.format, state().settings)
    scored = score_pairs(model, pairs)
    raw = scored.raw_scores  # [k]
    spread = raw.std()
    # Differences below float32 resolution are ties, not a spread to standardize.
    tied = spread <= TIE_TOLERANCE * max(1.0, float(np.abs(raw).max()))
    z_scores = np.zeros_like(raw) if tied else (raw - raw.mean()) / spread
    # pairwise[i, j] = sigmoid(r_i - r_j): the model's P(response i preferred over j)
    pairwise = sigmoid(raw[:, None] - raw[None, :])
    ranking = sorted(range(len(raw)), key=lambda index: -raw[index])
    return jsonify(
        RankResponse(
            **score_fields(model, scored),
            ranking=ranking,
            z_scores=z_scores.tolist(),
            pairwise=pairwise.tolist(),
        ).model_dump()
    )
