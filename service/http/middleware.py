"""What runs around every request: its ID, the API key check, and the request metrics."""

from __future__ import annotations

import hmac
import time
import uuid

from flask import Flask, Response, g, request

from rmserve import metrics
from rmserve.errors import Unauthorized
from rmserve.http.state import state

# Probes and scrapes answer without a key, so Kubernetes and Prometheus need none.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/v2/health/live", "/v2/health/ready"})
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 200


def install(app: Flask) -> None:
    app.before_request(_start_request)
    app.before_request(_authenticate)
    app.after_request(_finish_request)


def _start_request() -> None:
    g.started = time.perf_counter()
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # Echo a caller's ID only if it is a sane header value; otherwise make one.
    g.request_id = given if 0 < len(given) <= MAX_REQUEST_ID and given.isprintable() else uuid.uuid4().hex


def _authenticate() -> None:
    keys = state().api_keys
    if not keys or request.path in OPEN_PATHS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    # Compare against every key in constant time, so timing reveals nothing about any key.
    if not any([hmac.compare_digest(token.encode(), key.encode()) for key in keys]):  # noqa: C419 (all, not short-circuit)
        raise Unauthorized("invalid API key")


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
    if "started" in g:
        metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - g.started)
    return response
