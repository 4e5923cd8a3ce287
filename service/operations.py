"""Routes for operators: health, readiness, metrics, the model list and the API document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from service import metrics
from service.app import state
from service.openapi import openapi_document
from service.schemas import ModelCard, ModelList

operations = Blueprint("operations", __name__)


@operations.get("/healthz")
def healthz() -> Any:
    """The process is alive (it may still be loading models)."""
    return jsonify({"status": "alive"})


@operations.get("/readyz")
def readyz() -> Any:
    """200 with models loaded and warmed; 503 while draining (a loading worker answers nothing yet)."""
    app_state = state()
    if app_state.ready:
        return jsonify({"status": "ready", "models": sorted(app_state.registry.models)})
    response = jsonify({"status": "not_ready", "reason": "draining"})
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


@operations.get("/metrics")
def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition(state().settings.metrics_dir)
    return Response(body, content_type=content_type)


@operations.get("/v1/models")
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
                normalization=manifest.normalization.model_dump(),
                evaluation=manifest.evaluation.model_dump(),
                quantization=manifest.quantization,
                default=name == registry.default,
            )
        )
    return jsonify(ModelList(data=cards).model_dump())


@operations.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())
