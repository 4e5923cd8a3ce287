"""The review buffer's groups, sent to the label store from a thread of their own, so scoring never waits on it.

Each worker's buffer sees part of the traffic; in the store, the groups of one model and prompt merge into
one task (`LabelStore.offer`), which every worker and replica then serves at /label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from rmserve import metrics
from rmserve.labels.queue_metrics import publish
from rmserve.labels.store import LabelStore
from rmserve.labels.tasks import REVIEW_SOURCE, NewTask

log = logging.getLogger(__name__)
MAX_WAITING = 4096  # groups waiting to be written; the newest version of a group replaces the one waiting


class ReviewSink:
    """Coalesces review groups by key and writes them on its own thread; `close` writes what waits."""

    def __init__(self, store: LabelStore, wanted: int):
        self.store = store
        self.wanted = wanted
        self._waiting: dict[str, NewTask] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="rmserve-review-sink", daemon=True)
        self._thread.start()

    def for_model(self, model: str) -> Callable[[dict[str, Any]], None]:
        """What a model's review buffer calls with each group it changed (a ranking record)."""

        def offer(record: dict[str, Any]) -> None:
            spread = [std for std in record.get("disagreement", []) if std is not None]
            task = NewTask(
                record["prompt"], tuple(record["responses"]), self.wanted, REVIEW_SOURCE + model, max(spread, default=0)
            )
            with self._lock:
                if task.key not in self._waiting and len(self._waiting) >= MAX_WAITING:
                    metrics.LABEL_REVIEW_DROPPED.labels("full").inc()
                    return
                self._waiting[task.key] = task
                self._lock.notify()

        return offer

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._waiting or self._closed)
                batch, self._waiting = list(self._waiting.values()), {}
                closed = self._closed
            if batch:
                self._write(batch)
            if closed:
                return

    def _write(self, batch: list[NewTask]) -> None:
        written = 0
        try:
            for task in batch:
                self.store.offer(task)
                written += 1
            publish(self.store)
        except Exception:  # the store is down: these groups are lost, scoring goes on
            metrics.LABEL_REVIEW_DROPPED.labels("error").inc(len(batch) - written)
            log.exception("could not send %d review groups to the label store", len(batch) - written)
