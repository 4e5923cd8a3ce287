"""The Flask app factory: the composition root that wires settings, models, the HTTP edge and the protocols.

Under gunicorn, `create_app()` runs in each worker before it accepts a connection, so no
worker ever answers while its models are still loading, and a model that cannot load stops
the server at start-up with the reason in the log.
"""

from __future__ import annotations

import logging

from flask import Flask

from rmserve import metrics
from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from rmserve.http import codec, error_handlers, middleware
from rmserve.http.openapi import attach_document
from rmserve.http.operations import operations
from rmserve.http.state import EXTENSION, AppState
from rmserve.http.watching import watching
from rmserve.labels.database import database_url
from rmserve.labels.queue_metrics import publish
from rmserve.labels.review_sink import ReviewSink
from rmserve.labels.store import LabelStore
from rmserve.protocols.classify import classify
from rmserve.protocols.label_page import labelling
from rmserve.protocols.native import native
from rmserve.protocols.oip import oip
from rmserve.protocols.openrlhf import openrlhf

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, registry: ModelRegistry | None = None, api_keys: frozenset[str] | None = None
) -> Flask:
    """Build the app; with no `registry`, load and warm the repository's models first; with no `api_keys`, read
    them from the settings (under gunicorn the master reads them once, for every worker)."""
    settings = settings or Settings.from_env()
    if registry is None:
        registry = ModelRegistry.load(settings).start()
        log.info("serving %s (default %s)", ", ".join(registry.models), registry.default)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    codec.install(app)
    keys = settings.all_api_keys() if api_keys is None else api_keys
    app_state = AppState(settings=settings, api_keys=keys, registry=registry)
    app.extensions[EXTENSION] = app_state
    middleware.install(app)
    error_handlers.register(app)
    for blueprint in (native, openrlhf, classify, oip, operations, watching):
        app.register_blueprint(blueprint)
    if settings.labelling:
        _start_labelling(app_state)
        app.register_blueprint(labelling)
    attach_document(app)
    metrics.READY.set(1)
    return app


def _start_labelling(app_state: AppState) -> None:
    """Open the label store (migrating it) and send every review buffer's groups to it."""
    settings = app_state.settings
    store = LabelStore(database_url(settings), settings.label_lease_s)
    app_state.labels = store
    app_state.review_sink = sink = ReviewSink(store, settings.label_orderings)
    for name, served in app_state.registry.models.items():
        if served.review_buffer is not None:
            served.review_buffer.on_group = sink.for_model(name)
    publish(store)
