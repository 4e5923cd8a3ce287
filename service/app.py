"""The Flask app factory: settings, models, request hooks, blueprints, error handlers."""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from flask import Flask, Response, current_app, g, request

from service import errors, metrics
from service.config import Settings
from service.errors import NotReady, Unauthorized
from service.registry import ModelRegistry

log = logging.getLogger(__name__)

# Probes and scrapes answer without a key, so Kubernetes and Prometheus need none.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
REQUEST_ID_HEADER = "X-Request-ID"


@dataclass
class AppState:
    """What the request handlers share: settings, the models once loaded, and the lifecycle."""

    settings: Settings
    api_keys: frozenset[str]
    registry: ModelRegistry | None = None
    load_failure: str | None = None
    draining: bool = False
    loaded: threading.Event = field(default_factory=threading.Event)

    def require_registry(self) -> ModelRegistry:
        if self.draining:
            raise NotReady("server is draining; retry on another replica")
        if self.registry is None:
            raise NotReady(self.load_failure or "models are still loading")
        return self.registry

    @property
    def ready(self) -> bool:
        return self.registry is not None and not self.draining

    def load(self) -> None:
        """Load and warm the models (in a background thread, so /healthz answers meanwhile)."""
        try:
            self.registry = ModelRegistry.load(self.settings).start()
        except Exception as error:
            self.load_failure = f"cannot serve: {error}"
            log.critical(self.load_failure)
        else:
            metrics.READY.set(1)
            log.info("ready: serving %s (default %s)", ", ".join(self.registry.models), self.registry.default)
        finally:
            self.loaded.set()

    def drain(self, timeout: float) -> None:
        """Stop taking requests and finish the queued ones (SIGTERM)."""
        self.draining = True
        metrics.READY.set(0)
        if self.registry is not None:
            self.registry.stop(timeout)


def state() -> AppState:
    return current_app.extensions["rmserve"]


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> Flask:
    """Build the app; with no `registry`, models load from the repository in the background."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app_state = AppState(settings=settings, api_keys=settings.all_api_keys(), registry=registry)
    app.extensions["rmserve"] = app_state
    metrics.READY.set(0)
    if registry is None:
        threading.Thread(target=app_state.load, name="model-loader", daemon=True).start()
    else:
        app_state.loaded.set()
        metrics.READY.set(1)

    app.before_request(_start_request)
    app.before_request(_authenticate)
    app.after_request(_finish_request)
    errors.register(app)

    from service.api import api
    from service.operations import operations

    app.register_blueprint(api)
    app.register_blueprint(operations)
    return app


def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex


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
