"""What request handlers share: settings, the loaded models, and whether the process is draining.

Routes fetch it with `state()`; this module imports no route, so nothing imports in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from rmserve import metrics
from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from rmserve.http.admission import Admission

EXTENSION = "rmserve"


@dataclass
class AppState:
    settings: Settings
    api_keys: frozenset[str]
    registry: ModelRegistry
    draining: bool = False
    admission: Admission = field(init=False)  # scoring slots and the body-bytes budget

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings)

    def not_ready_reason(self) -> str | None:
        """Why this worker must not get traffic now (None: ready); keeps `rmserve_ready` in step."""
        reason = None
        if self.draining:
            reason = "draining"
        elif unhealthy := self.registry.unhealthy():
            reason = f"batcher not running for {', '.join(unhealthy)}"
        metrics.READY.set(0 if reason else 1)
        return reason

    def start_draining(self) -> None:
        """SIGTERM: from now on /readyz answers 503 and `rmserve_ready` is 0."""
        self.draining = True
        metrics.READY.set(0)

    def drain(self, timeout: float) -> None:
        """Stop the batchers once accepted work is done (gunicorn's worker_exit, after SIGTERM)."""
        self.start_draining()
        self.registry.stop(timeout)


def state() -> AppState:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
