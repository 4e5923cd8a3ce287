"""Routes for operators: health, readiness, metrics, the model list and the API document."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field

from rmserve import metrics
from rmserve.engine.servable import ModelInfo, Servable
from rmserve.http.model_route import model_route
from rmserve.http.openapi import DOCUMENT_EXTENSION, Route, route
from rmserve.http.state import state

operations = Blueprint("operations", __name__)


class EnsembleCard(BaseModel):
    members: dict[str, int] = Field(description="member model -> the version it serves")
    k: float = Field(description="conservative = mean - k * std")
    reward: str = Field(description="what single-number protocols return: mean, conservative or min")
    disagreement: dict[str, float] | None = Field(
        description="quantiles of the members' std on the calibration responses; p99 is the high_disagreement cut"
    )
    calibration: str | None


class ModelCard(BaseModel):
    name: str
    version: int | None = Field(description="null for an ensemble")
    sha256: str | None = Field(description="of model.onnx; null for an ensemble")
    max_length: int | None = Field(description="null for an ensemble (each member cuts to its own)")
    input_format: str = Field(
        description="how the model lays text out: transcript, pair or chat_template (an ensemble: its first member's, "
        "which reads request text; each member lays it out in its own)"
    )
    normalization: dict[str, float] | None = Field(description="null for an ensemble (members' scores are normalized)")
    evaluation: dict[str, Any] = Field(description="held-out accuracy (an ensemble: of each member and combination)")
    quantization: str | None
    max_batch_tokens: int | None = Field(
        None,
        description="padded tokens per inference run, as served: RMSERVE_MAX_BATCH_TOKENS, else the manifest's "
        "serving.max_batch_tokens, else 1024; null for an ensemble (each member runs with its own)",
    )
    runtime: str | None = Field(
        None, description="what runs its graph: onnxruntime or openvino-bf16 (RMSERVE_RUNTIME); null for an ensemble"
    )
    default: bool
    ensemble: EnsembleCard | None = Field(None, description="members, k and reward of an ensemble; null for a model")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@route(operations, Route("/healthz", "get", "Liveness: the process answers.", authenticated=False))
def healthz() -> Any:
    """The process is alive (it may still be loading models)."""
    return jsonify({"status": "alive"})


@route(
    operations,
    Route(
        "/readyz", "get", "Readiness: models loaded and warmed; 503 while draining.", errors=(503,), authenticated=False
    ),
)
def readyz() -> Any:
    """200 with models loaded and warmed; 503 while draining (a loading worker answers nothing yet)."""
    app_state = state()
    reason = app_state.scoring.not_ready_reason()
    if reason is None:
        body: dict[str, Any] = {"status": "ready", "models": sorted(app_state.registry.models)}
        if app_state.registry.skipped:
            body["skipped"] = app_state.registry.skipped  # in the repository, but no version loads
        return jsonify(body)
    response = jsonify({"status": "not_ready", "reason": reason})
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


@route(operations, Route("/metrics", "get", "Prometheus metrics.", plain_response="text/plain", authenticated=False))
def prometheus_metrics() -> Response:
    state().scoring.not_ready_reason()  # brings rmserve_ready up to date
    state().registry.publish_telemetry()
    body, content_type = metrics.exposition(state().settings.metrics_dir)
    return Response(body, content_type=content_type)


@route(
    operations,
    Route(
        "/v1/models",
        "get",
        "Loaded models: version, sha256, normalization, evaluation.",
        response=ModelList,
        errors=(401, 503),
    ),
)
def list_models() -> Any:
    scoring = state().scoring
    cards = [model_card(info, info.name == scoring.default) for info in scoring.models()]
    return jsonify(ModelList(data=cards).model_dump())


@model_route(
    operations,
    "/v1/models/<name>",
    "One loaded model or ensemble: version, normalization, evaluation; an ensemble's members, k and reward.",
    ModelCard,
)
def get_model(served: Servable) -> ModelCard:
    info = served.metadata()
    return model_card(info, info.name == state().scoring.default)


def model_card(info: ModelInfo, default: bool) -> ModelCard:
    ensemble = None
    if info.ensemble is not None:
        spec = info.ensemble.spec
        ensemble = EnsembleCard(
            members=info.ensemble.member_versions,
            k=spec.k,
            reward=spec.reward,
            disagreement=None if spec.disagreement is None else spec.disagreement.model_dump(),
            calibration=spec.calibration,
        )
    return ModelCard(
        name=info.name,
        version=info.version,
        sha256=info.sha256,
        max_length=info.max_length,
        input_format=info.input_format,
        normalization=None if info.normalization is None else info.normalization.model_dump(),
        evaluation=info.evaluation,
        quantization=info.quantization,
        max_batch_tokens=info.max_batch_tokens,
        runtime=info.runtime,
        default=default,
        ensemble=ensemble,
    )


@route(operations, Route("/openapi.json", "get", "This document.", authenticated=False))
def openapi() -> Any:
    return jsonify(current_app.extensions[DOCUMENT_EXTENSION])
