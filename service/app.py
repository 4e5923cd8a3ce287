"""The Flask app factory: settings, models, request hooks, blueprints, error handlers."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request

from service import errors, metrics
from service.config import Settings
from service.errors import Unauthorized
from service.registry import ModelRegistry

log = logging.getLogger(__name__)

# Probes and scrapes answer without a key, so Kubernetes and Prometheus need none.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 200


@dataclass
class AppState:
    """What the request handlers share: settings, the loaded models, and whether we are draining."""

    settings: Settings
    api_keys: frozenset[str]
    registry: ModelRegistry
    draining: bool = False

    @property
    def ready(self) -> bool:
        return not self.draining

    def drain(self, timeout: float) -> None:
        """Stop the batchers once accepted work is done (gunicorn's worker_exit, after SIGTERM)."""
        self.draining = True
        metrics.READY.set(0)
        self.registry.stop(timeout)


def state() -> AppState:
    return current_app.extensions["rmserve"]


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> Flask:
    """Build the app; with no `registry`, load and warm the repository's models first.

    Under gunicorn this runs in each worker before it accepts a connection, so no worker
    ever answers while its models are still loading, and a model that cannot load stops
    the server at start-up with the reason in the log.
    """
    settings = settings or Settings.from_env()
    if registry is None:
        registry = ModelRegistry.load(settings).start()
        log.info("serving %s (default %s)", ", ".join(registry.models), registry.default)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["rmserve"] = AppState(settings=settings, api_keys=settings.all_api_keys(), registry=registry)
    metrics.READY.set(1)

    app.before_request(_start_request)
    app.before_request(_authenticate)
    app.after_request(_finish_request)
    errors.register(app)

    from service.api import api
    from service.compat import compat
    from service.operations import operations

    app.register_blueprint(api)
    app.register_blueprint(compat)
    app.register_blueprint(operations)
    return app


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
    if not any([hmac.compare_digest(token.encode(), key.encode()) for key in keys]):
        raise Unauthorized("invalid API key")


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
    if "started" in g:
        metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - g.started)
    return response
