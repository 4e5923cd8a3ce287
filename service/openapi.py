"""The OpenAPI 3.1 document, built from the same pydantic schemas that parse requests."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import schemas

VERSION = "0.1.0"
REF = "#/components/schemas/{model}"

ERRORS = {
    400: "Malformed JSON",
    401: "Missing or wrong API key (only when keys are configured)",
    404: "Unknown model",
    413: "Body or item count over the limit",
    422: "A field is wrong or a list is empty; `error.field` names it",
    429: "Queue full; retry after `Retry-After` seconds",
    500: "The model failed on an item",
    503: "Not ready (loading) or draining",
    504: "The request's deadline (X-Timeout-Ms) passed before it was scored",
}


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    plain_response: str | None = None  # content type of a non-JSON answer
    authenticated: bool = True


SCORING_ERRORS = (400, 401, 404, 413, 422, 429, 500, 503, 504)

ROUTES: list[Route] = [
    Route("/v1/score", "post", "Score prompt-response pairs (items form or group form).",
          schemas.ScoreRequest, schemas.ScoreResponse, SCORING_ERRORS),
    Route("/v1/rank", "post", "Rank a group of responses to one prompt, with z-scores and pairwise preferences.",
          schemas.RankRequest, schemas.RankResponse, SCORING_ERRORS),
    Route("/v1/models", "get", "Loaded models: version, sha256, normalization, evaluation.",
          None, schemas.ModelList, (401, 503)),
    Route("/healthz", "get", "Liveness: the process answers.", authenticated=False),
    Route("/readyz", "get", "Readiness: models loaded and warmed; 503 while draining.",
          errors=(503,), authenticated=False),
    Route("/metrics", "get", "Prometheus metrics.", plain_response="text/plain", authenticated=False),
    Route("/openapi.json", "get", "This document.", authenticated=False),
]


def register_route(route: Route) -> None:
    """Add a route defined in another module (compatibility endpoints) to the document."""
    ROUTES.append(route)
    openapi_document.cache_clear()


@cache
def openapi_document() -> dict[str, Any]:
    models = {schemas.ErrorBody}
    for route in ROUTES:
        models.update(model for model in (route.request, route.response) if model is not None)
    _, definitions = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda model: model.__name__)], ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "rmserve", "version": VERSION, "description": "Reward-model scoring for RL trainers."},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": route.summary, "responses": {"200": _ok(route)}}
    operation["parameters"] = [
        {"name": "X-Request-ID", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Echoed back; generated when absent."},
    ]
    if route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=route.request.__name__)}}},
        }
        operation["parameters"].append(
            {"name": "X-Timeout-Ms", "in": "header", "required": False,
             "schema": {"type": "number", "exclusiveMinimum": 0}, "description": "Deadline for this request."}
        )
    error_schema = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    for status in route.errors:
        operation["responses"][str(status)] = {"description": ERRORS[status], "content": error_schema}
    operation["security"] = [{"bearer": []}, {}] if route.authenticated else []
    return operation


def _ok(route: Route) -> dict[str, Any]:
    if route.plain_response is not None:
        return {"description": "OK", "content": {route.plain_response: {"schema": {"type": "string"}}}}
    if route.response is None:
        return {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": REF.format(model=route.response.__name__)}}},
    }
