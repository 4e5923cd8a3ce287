"""Routes and their OpenAPI 3.1 entries, declared together so the document cannot drift.

A route module declares each view with `@route(blueprint, Route(...))`; the document is
built from the app's own URL map, and an app with an undocumented route fails to start.
Schemas come from the same pydantic models that parse requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from rmserve import __version__
from rmserve.http.error_handlers import ErrorBody

REF = "#/components/schemas/{model}"
DOCUMENT_EXTENSION = "rmserve.openapi"  # where create_app keeps the app's document

ERRORS = {
    400: "Malformed JSON, or a chunked body that did not arrive whole",
    401: "Missing or wrong API key (only when keys are configured)",
    404: "Unknown model",
    409: "The labelling task's lease expired and another labeller holds it now",
    413: "Body or item count over the limit",
    422: "A field is wrong or a list is empty; `error.field` names it",
    429: "Queue full; retry after `Retry-After` seconds",
    500: "The model failed on an item",
    503: "Not ready (loading) or draining",
    504: "The request's deadline (X-Timeout-Ms) passed before it was scored",
}
SCORING_ERRORS = (400, 401, 404, 413, 422, 429, 500, 503, 504)
PATH_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")  # Flask's `<name>` / `<string:name>`


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
    query: tuple[tuple[str, str], ...] = ()  # optional URL query parameters: (name, description)


View = TypeVar("View", bound=Callable[..., Any])

# endpoint ("blueprint.view") -> its entry; filled as route modules are imported
_DOCUMENTED: dict[str, Route] = {}


def route(blueprint: Blueprint, spec: Route, endpoint: str | None = None) -> Callable[[View], View]:
    """Declare a Flask view at `spec.path` and its OpenAPI entry in one step (endpoint: the view's name)."""

    def declare(view: View) -> View:
        name = endpoint or view.__name__
        blueprint.add_url_rule(spec.path, name, view, methods=[spec.method.upper()])
        _DOCUMENTED[f"{blueprint.name}.{name}"] = spec
        return view

    return declare


def attach_document(app: Flask) -> None:
    """Build the document once, when the app is created (an undocumented route stops start-up)."""
    app.extensions[DOCUMENT_EXTENSION] = openapi_document(app)


def openapi_document(app: Flask) -> dict[str, Any]:
    """The document of every route `app` serves; raises if one was declared without an entry."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        if rule.endpoint not in _DOCUMENTED:
            raise LookupError(f"route {rule.rule} ({rule.endpoint}) has no OpenAPI entry: declare it with route()")
        routes.append(_DOCUMENTED[rule.endpoint])
    models: set[type[BaseModel]] = {ErrorBody}
    for spec in routes:
        models.update(model for model in (spec.request, spec.response) if model is not None)
    _, definitions = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda model: model.__name__)], ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for spec in routes:
        paths.setdefault(openapi_path(spec.path), {})[spec.method] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {"title": "rmserve", "version": __version__, "description": "Reward-model scoring for RL trainers."},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `/v2/models/<name>` -> `/v2/models/{name}`."""
    return PATH_PARAMETER.sub(r"{\1}", rule)


def _operation(spec: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": spec.summary, "responses": {"200": _ok(spec)}}
    operation["parameters"] = (
        [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in PATH_PARAMETER.findall(spec.path)
        ]
        + [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}
            for name, description in spec.query
        ]
        + [
            {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "Echoed back; generated when absent.",
            },
        ]
    )
    if spec.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=spec.request.__name__)}}},
        }
        operation["parameters"].append(
            {
                "name": "X-Timeout-Ms",
                "in": "header",
                "required": False,
                "schema": {"type": "number", "exclusiveMinimum": 0},
                "description": "Deadline for this request.",
            }
        )
    error_schema = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    for status in spec.errors:
        operation["responses"][str(status)] = {"description": ERRORS[status], "content": error_schema}
    operation["security"] = [{"bearer": []}, {}] if spec.authenticated else []
    return operation


def _ok(spec: Route) -> dict[str, Any]:
    if spec.plain_response is not None:
        return {"description": "OK", "content": {spec.plain_response: {"schema": {"type": "string"}}}}
    if spec.response is None:
        return {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": REF.format(model=spec.response.__name__)}}},
    }
