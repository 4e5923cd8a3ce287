"""Which scoring requests a worker takes on: a slot each, and their bodies' bytes within a budget.

Both limits hold before the body is read, so a refused request costs a 429 and nothing else:

- slots (`RMSERVE_THREADS`): scoring requests in progress. gunicorn runs `PROBE_THREADS` more
  threads than slots, so probes always find a thread while every slot waits on the model.
  Request threads mostly wait on the batcher, so slots are many: RL trainers send one request
  per sample, dozens to hundreds at once, and must queue at the model, not be refused at the door.
- body bytes (`RMSERVE_MAX_INFLIGHT_BODY_BYTES`): reading, scanning and parsing a body takes many
  times its size in memory, so the bytes of the bodies in progress are what bounds a worker's
  memory under many large requests. A body without a declared length (chunked) may be as large as
  `RMSERVE_MAX_BODY_BYTES`, so it counts as that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rmserve.config import Settings
from rmserve.errors import QueueFull


class Admission:
    """Thread-safe; `admit` a request before its body is read, `leave` when it is answered."""

    def __init__(self, settings: Settings):
        self.slots = settings.threads
        self.body_budget = settings.max_inflight_body_bytes
        self.max_body_bytes = settings.max_body_bytes
        self._lock = threading.Lock()
        self._requests = 0
        self._body_bytes = 0

    def admit(self, declared_bytes: int | None, retry_after_s: Callable[[], int]) -> int:
        """Take a slot and reserve the body's bytes (returned, for `leave`), or raise QueueFull at once.

        `retry_after_s` is asked only for a refusal: an admitted request never pays for the estimate.
        """
        charged = self.max_body_bytes if declared_bytes is None else min(declared_bytes, self.max_body_bytes)
        with self._lock:
            if self._requests >= self.slots:
                refusal = f"all {self.slots} scoring slots of this worker are busy (RMSERVE_THREADS)"
            elif self._body_bytes + charged > self.body_budget:
                refusal = (
                    f"the bodies in progress hold {self._body_bytes} of the {self.body_budget} bytes this worker "
                    f"reads at once and this one needs {charged} (RMSERVE_MAX_INFLIGHT_BODY_BYTES)"
                )
            else:
                self._requests += 1
                self._body_bytes += charged
                return charged
        raise QueueFull(refusal, retry_after_s())

    def leave(self, charged: int) -> None:
        with self._lock:
            self._requests -= 1
            self._body_bytes -= charged

    @property
    def in_progress(self) -> tuple[int, int]:
        """(requests, body bytes) admitted and not yet answered."""
        with self._lock:
            return self._requests, self._body_bytes
