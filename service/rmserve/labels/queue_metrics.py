"""The label store's counts as the `rmserve_label_tasks` gauge, set after a worker changes the store."""

from __future__ import annotations

from rmserve import metrics
from rmserve.labels.store import LabelStore


def publish(store: LabelStore) -> None:
    counts = store.counts()
    for state, value in (("queued", counts.queued), ("leased", counts.leased), ("done", counts.done)):
        metrics.LABEL_TASKS.labels(state).set(value)
