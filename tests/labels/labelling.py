"""Helpers of the label tests: the CLI's store in a data directory, files of tasks, and ordering as a labeller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rmserve.labels.store import LabelStore

# Two tasks of a task file: one of three responses, one of two.
KIND_AND_SHORT = (
    {"prompt": "Which is kind?", "responses": ["rude", "kind", "neutral"]},
    {"prompt": "Which is short?", "responses": ["a long answer", "short"]},
)


def store_in(data_dir: Path) -> LabelStore:
    """The SQLite store `rmserve label` uses with RMSERVE_DATA_DIR=data_dir."""
    return LabelStore(f"sqlite:///{data_dir / 'labels.sqlite'}", lease_s=60.0)


def write_lines(path: Path, *records: object) -> Path:
    path.write_text("".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records))
    return path


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def order_as_best_first(store: LabelStore, labeller: str, best_first: list[str]) -> None:
    """Lease the labeller's next task and order it so that `best_first` is the result."""
    lease = store.lease(labeller)
    assert lease is not None
    store.submit(lease.task_id, lease.token, labeller, [lease.responses.index(text) for text in best_first])
