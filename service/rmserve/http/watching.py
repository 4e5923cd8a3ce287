"""Routes for watching a model during RL: `/v1/models/<name>/stats` and `/v1/models/<name>/review`.

Both answer from the worker that takes the request: each worker keeps its own window and its
own review buffer (README "Watching for reward hacking").
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from flask import Blueprint
from pydantic import BaseModel, Field

from rmserve.engine.servable import Servable
from rmserve.http.model_route import model_route

watching = Blueprint("watching", __name__)


class Drift(BaseModel):
    median_shift: float = Field(description="(served median - training median) / training std, raw scores")
    p99_shift: float = Field(description="(served p99 - training p99) / training std, raw scores")
    ks: float = Field(description="largest gap between served and training CDFs at the stored training quantiles")


class ModelStats(BaseModel):
    model: str
    version: int | None = Field(description="null for an ensemble")
    worker_pid: int = Field(description="the worker whose window this is; each worker keeps its own")
    window: int = Field(description="capacity of the rolling window (RMSERVE_TELEMETRY_WINDOW)")
    items: int = Field(description="items in the window now")
    scored: int = Field(description="items this worker scored with this model since it started")
    flags_checked: list[str]
    score_quantiles: dict[str, float] | None = Field(description="normalized scores over the window")
    length_score_correlation: float | None = Field(
        description="Spearman correlation of response length (tokens) and score; null below 30 items"
    )
    flag_rates: dict[str, float]
    duplicate_rate: float = Field(description="share of items whose response text came earlier in the window")
    drift: Drift | None = Field(
        description="against the manifest's training statistics; null without them (and for an ensemble)"
    )
    training_stats: dict[str, Any] | None = Field(description="the manifest's training statistics")
    mean_disagreement: float | None = Field(
        None,
        description="an ensemble's mean std across members over the window (its calibration quantiles are in "
        "/v1/models/<name>); null for a single model",
    )


class ReviewRecords(BaseModel):
    model: str
    version: int | None
    worker_pid: int
    records: list[dict[str, Any]] = Field(
        description='ranking records {"prompt", "responses" (model order, best first), "model_scores", "flags"} '
        '(an ensemble\'s also "disagreement", the std across members per response), the most disagreed-on first, '
        "then the most recent; people re-order responses, then `rmserve train` reads them"
    )


@model_route(
    watching,
    "/v1/models/<name>/stats",
    "Drift telemetry over this worker's rolling window: score quantiles, length-score correlation, "
    "flag and duplicate rates, distance from training; an ensemble's mean disagreement.",
    ModelStats,
)
def model_stats(served: Servable) -> ModelStats:
    stats = served.stats()
    window = stats.window
    return ModelStats(
        model=served.name,
        version=served.served_version,
        worker_pid=os.getpid(),
        window=window.capacity,
        items=window.items,
        scored=window.scored,
        flags_checked=list(stats.flags_checked),
        score_quantiles=window.score_quantiles,
        length_score_correlation=window.length_score_correlation,
        flag_rates=window.flag_rates,
        duplicate_rate=window.duplicate_rate,
        drift=None if window.drift is None else Drift(**dataclasses.asdict(window.drift)),
        training_stats=None if stats.training_stats is None else stats.training_stats.model_dump(),
        mean_disagreement=window.mean_disagreement,
    )


@model_route(
    watching,
    "/v1/models/<name>/review",
    "The review buffer (opt-in, RMSERVE_REVIEW_PROMPTS): recent flagged or extreme groups as ranking records.",
    ReviewRecords,
)
def model_review(served: Servable) -> ReviewRecords:
    records = served.review()
    return ReviewRecords(model=served.name, version=served.served_version, worker_pid=os.getpid(), records=records)
