"""The protocol-neutral scoring service every scoring route and `rmserve score` go through.

Like KServe's DataPlane or TEI's core, it knows no HTTP: every call says which model, which
exchanges (built from the model's input format), by when (a monotonic deadline) and which reward,
explicitly. It also answers whether the process may take traffic, and what the models are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rmserve import metrics
from rmserve.core.conversation import Exchange
from rmserve.core.formats import InputFormat
from rmserve.engine.registry import ModelRegistry
from rmserve.engine.request_cost import MemoryBudget, request_bytes
from rmserve.engine.servable import ModelInfo, Scored, Servable
from rmserve.errors import NotReady

# Lays a request out as the exchanges to score, in the input format of the model that scores them.
BuildExchanges = Callable[[InputFormat], Sequence[Exchange]]


class ScoringService:
    """The models of one process (its registry) and whether it is draining; thread-safe to call."""

    def __init__(self, registry: ModelRegistry, memory_budget_bytes: int):
        self.registry = registry
        self.draining = False
        self.memory = MemoryBudget(memory_budget_bytes)  # RMSERVE_MAX_INFLIGHT_MEMORY_BYTES

    def model(self, name: str | None) -> Servable:
        """The servable called `name` (the default model for None), or ModelNotFound (404)."""
        return self.registry.get(name)

    def score(
        self, model: str | None, exchanges: BuildExchanges, deadline: float, reward: str | None = None
    ) -> tuple[Servable, Scored]:
        """Score with `model` (None: the default) what `exchanges` lays out in its input format, by `deadline`
        (monotonic s); `reward` picks an ensemble's combination (a 422 naming `reward` for a single model)."""
        served = self.registry.get(model)
        choice = served.reward_choice(reward)  # checked before the body is laid out, so it is the error reported
        laid_out = exchanges(served.input_format)
        # Held while the request is scored: a body's size says little about the memory its items take.
        cost = request_bytes(laid_out, served.max_lengths)
        with self.memory.reserve(cost, lambda: max(1, math.ceil(self.registry.seconds_to_drain()))):
            return served, served.score(laid_out, deadline, choice)

    def models(self) -> list[ModelInfo]:
        """Every servable's metadata, in the order the registry lists them."""
        return [served.metadata() for served in self.registry.models.values()]

    @property
    def default(self) -> str:
        return self.registry.default

    def not_ready_reason(self) -> str | None:
        """Why this process must not get traffic now (None: ready); keeps `rmserve_ready` in step."""
        reason = None
        if self.draining:
            reason = "draining"
        elif unhealthy := self.registry.unhealthy():
            reason = f"batcher not running for {', '.join(unhealthy)}"
        metrics.READY.set(0 if reason else 1)
        return reason

    def require_ready(self) -> None:
        """NotReady (503) while the process may not take traffic."""
        reason = self.not_ready_reason()
        if reason is not None:
            raise NotReady(reason)

    def start_draining(self) -> None:
        """From now on the process is not ready: `rmserve_ready` is 0 and readiness answers 503."""
        self.draining = True
        metrics.READY.set(0)

    def drain(self, timeout: float | None = None) -> None:
        """Stop the batchers once the work they accepted is done."""
        self.start_draining()
        self.registry.stop(timeout)
