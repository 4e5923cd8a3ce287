"""Routes for operators: health, readiness, metrics, the model list and the API document."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field

from rmserve import metrics
from rmserve.http.openapi import DOCUMENT_EXTENSION, Route, route
from rmserve.http.state import state

operations = Blueprint("operations", __name__)


class ModelCard(BaseModel):
    name: str
    version: int
    sha256: str
    max_length: int
    input_format: str = Field(description="how the model lays text out: transcript, pair or chat_template")
    normalization: dict[str, float]
    evaluation: dict[str, Any]
    quantization: str | None
    default: bool


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
    reason = app_state.not_ready_reason()
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
    state().not_ready_reason()  # brings rmserve_ready up to date
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
    registry = state().registry
    cards = []
    for name, served in registry.models.items():
        manifest = served.version.manifest
        cards.append(
            ModelCard(
                name=name,
                version=manifest.version,
                sha256=manifest.sha256,
                max_length=manifest.max_length,
                input_format=served.version.format.style,
                normalization=manifest.normalization.model_dump(),
                evaluation=manifest.evaluation.model_dump(),
                quantization=manifest.quantization,
                default=name == registry.default,
            )
        )
    return jsonify(ModelList(data=cards).model_dump())


@route(operations, Route("/openapi.json", "get", "This document.", authenticated=False))
def openapi() -> Any:
    return jsonify(current_app.extensions[DOCUMENT_EXTENSION])
