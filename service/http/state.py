"""What request handlers share: settings, the loaded models, and whether the process is draining.

Routes fetch it with `state()`; this module imports no route, so nothing imports in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from rmserve import metrics
from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry

EXTENSION = "rmserve"


@dataclass
class AppState:
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
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
