"""The error -> HTTP response map: every exception becomes `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

from rmserve import metrics
from rmserve.errors import ServiceError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None


class ErrorBody(BaseModel):
    """The body of every error answer (documented in the OpenAPI document)."""

    error: ErrorDetail


def error_response(error: ServiceError) -> Response:
    metrics.FAILURES.labels(error.code).inc()
    response = jsonify(error.document())
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def _http_exception_response(error: HTTPException) -> Response:
    """Werkzeug's own errors (unknown route, wrong method, body too large) in our error shape."""
    code = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}.get(error.code or 500, "http_error")
    metrics.FAILURES.labels(code).inc()
    response = jsonify({"error": {"code": code, "message": error.description, "field": None}})
    response.status_code = error.code or 500
    valid_methods = getattr(error, "valid_methods", None)
    if valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
    return response


def _unexpected_response(error: Exception) -> Response:
    """A bug: the traceback goes to the log, the client gets 500 `internal_error` and the request ID."""
    request_id = g.get("request_id", "")
    log.exception("unexpected error answering request %s", request_id, exc_info=error)
    return error_response(ServiceError(f"internal error; the server log has the details under request ID {request_id}"))


def register(app: Flask) -> None:
    """Turn every exception into the one error body."""
    app.register_error_handler(ServiceError, error_response)
    app.register_error_handler(HTTPException, _http_exception_response)
    app.register_error_handler(Exception, _unexpected_response)
