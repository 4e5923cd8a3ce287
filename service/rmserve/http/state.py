"""What request handlers share: settings, the scoring service over the loaded models, and admission.

Routes fetch it with `state()`; this module imports no route, so nothing imports in a circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flask import current_app

from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from rmserve.http.admission import Admission
from rmserve.labels.review_sink import ReviewSink
from rmserve.labels.store import LabelStore
from rmserve.scoring_service import ScoringService

EXTENSION = "rmserve"


@dataclass
class AppState:
    settings: Settings
    api_keys: frozenset[str]
    registry: ModelRegistry
    labels: LabelStore | None = None  # RMSERVE_LABELLING: the /label page's store
    review_sink: ReviewSink | None = None  # and the review buffers' way into it
    scoring: ScoringService = field(init=False)  # every route scores, and asks readiness, through it
    admission: Admission = field(init=False)  # scoring slots and the body-bytes budget

    def __post_init__(self) -> None:
        self.scoring = ScoringService(self.registry, self.settings.max_inflight_memory_bytes)
        self.admission = Admission(self.settings, self.retry_after_s)

    def retry_after_s(self) -> int:
        """What a refused client is told to wait: the time the queued work takes to score, at least 1 s."""
        return max(1, math.ceil(self.registry.seconds_to_drain()))

    def start_draining(self) -> None:
        """SIGTERM: from now on /readyz answers 503 and `rmserve_ready` is 0."""
        self.scoring.start_draining()

    def drain(self, timeout: float) -> None:
        """Stop the batchers once accepted work is done (gunicorn's worker_exit, after SIGTERM)."""
        self.scoring.drain(timeout)
        if self.review_sink is not None:  # the groups still waiting go to the store before the worker exits
            self.review_sink.close(timeout)


def state() -> AppState:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
