"""Which scoring requests a worker takes on: a slot each, and their bodies' bytes within a budget.

- slots (`RMSERVE_THREADS`): scoring requests in progress. gunicorn runs `PROBE_THREADS` more
  threads than slots, so probes always find a thread while every slot waits on the model.
  Request threads mostly wait on the batcher, so slots are many: RL trainers send one request
  per sample, dozens to hundreds at once, and must queue at the model, not be refused at the door.
- body bytes (`RMSERVE_MAX_INFLIGHT_BODY_BYTES`): reading, scanning and parsing a body takes many
  times its size in memory, so the bytes of the bodies in progress are what bounds a worker's
  memory under many large requests. A declared length is reserved before the body is read, so a
  refused request costs a 429 and nothing else; a chunked body declares nothing, so its bytes are
  charged as they arrive (charging the largest allowed size up front let two slow uploads lock
  everyone else out).

Under `rmserve serve`, the worker's event loop (rmserve.http.worker) receives every body before a
thread sees the request: it charges and releases the bytes itself, and `admit` takes only the slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rmserve.config import Settings
from rmserve.errors import QueueFull


class Admission:
    """Thread-safe; `admit` a request before its body is read, `leave` when it is answered."""

    def __init__(self, settings: Settings, retry_after_s: Callable[[], int]):
        self.slots = settings.threads
        self.body_budget = settings.max_inflight_body_bytes
        self.max_body_bytes = settings.max_body_bytes
        self.retry_after_s = retry_after_s  # asked only for a refusal: an admitted request never pays for it
        self.bodies_received_by_server = False
        self._lock = threading.Lock()
        self._requests = 0
        self._body_bytes = 0

    def receive_bodies_in_server(self) -> None:
        """From now on the server charges body bytes (`charge`, `release`) and `admit` reserves none."""
        self.bodies_received_by_server = True

    def admit(self, declared_bytes: int | None) -> int:
        """Take a slot and reserve the body's declared bytes (returned, for `leave`), or raise QueueFull at once."""
        charged = 0
        if declared_bytes is not None and not self.bodies_received_by_server:
            charged = min(declared_bytes, self.max_body_bytes)
        with self._lock:
            if self._requests >= self.slots:
                refusal = f"all {self.slots} scoring slots of this worker are busy (RMSERVE_THREADS)"
            elif self._body_bytes + charged > self.body_budget:
                refusal = self._over_budget(charged)
            else:
                self._requests += 1
                self._body_bytes += charged
                return charged
        raise QueueFull(refusal, self.retry_after_s())

    def charge(self, more_bytes: int) -> None:
        """Count `more_bytes` of a body in progress (as they arrive), or raise QueueFull."""
        with self._lock:
            if self._body_bytes + more_bytes <= self.body_budget:
                self._body_bytes += more_bytes
                return
            refusal = self._over_budget(more_bytes)
        raise QueueFull(refusal, self.retry_after_s())

    def release(self, charged: int) -> None:
        """Give back body bytes `charge` counted for a request that is over (or never reached a route)."""
        with self._lock:
            self._body_bytes -= charged

    def leave(self, charged: int) -> None:
        with self._lock:
            self._requests -= 1
            self._body_bytes -= charged

    @property
    def in_progress(self) -> tuple[int, int]:
        """(requests, body bytes) admitted and not yet answered."""
        with self._lock:
            return self._requests, self._body_bytes

    def _over_budget(self, needed: int) -> str:
        return (
            f"the bodies in progress hold {self._body_bytes} of the {self.body_budget} bytes this worker "
            f"reads at once and this one needs {needed} more (RMSERVE_MAX_INFLIGHT_BODY_BYTES)"
        )
