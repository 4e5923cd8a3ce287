"""Review groups from every worker's buffer reach the one label store, merged per model and prompt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from flask import Flask

from rmserve.engine.review import ReviewBuffer
from rmserve.labels.review_sink import ReviewSink
from rmserve.labels.store import LabelStore
from rmserve.labels.tasks import NewTask

FLAGGED = ["score_above_training_range"]


def test_two_workers_groups_of_one_prompt_become_one_task(make_store: Callable[..., LabelStore]) -> None:
    store = make_store()
    store.add([NewTask("added by hand", ("x", "y"))])
    sinks = [ReviewSink(make_store(), wanted=2) for _ in range(2)]  # one per worker, each its own connection
    buffers = [ReviewBuffer(capacity=4) for _ in range(2)]
    for buffer, sink in zip(buffers, sinks, strict=True):
        buffer.on_group = sink.for_model("tiny")
    # worker 0 sees two responses to the prompt, worker 1 another two (one the same); members disagree.
    buffers[0].observe(["gamed"] * 2, ["a", "b"], np.zeros(2), [FLAGGED, []], np.array([0.9, 0.1]))
    buffers[1].observe(["gamed"] * 2, ["b", "c"], np.zeros(2), [FLAGGED, []], np.array([0.2, 0.3]))
    buffers[1].observe(["calm"] * 2, ["p", "q"], np.zeros(2), [[], []])  # nothing doubtful: stays out
    for sink in sinks:
        sink.close(timeout=30)
    lease = store.lease("ana")
    assert lease is not None
    assert lease.prompt == "gamed"  # before the hand-added task: it has the members' disagreement
    assert sorted(lease.responses) == ["a", "b", "c"]
    assert store.counts().queued == 1  # the hand-added one


def test_with_labelling_on_every_review_buffer_feeds_the_store(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(labelling=True, review_prompts=8, data_dir=tmp_path / "data")
    app_state = app.extensions["rmserve"]
    buffer = app_state.registry.get("tiny").review_buffer
    buffer.observe(["gamed"] * 2, ["a", "b"], np.array([4.0, 0.0]), [[], []])  # |z| >= 3: doubtful
    app_state.review_sink.close(timeout=30)
    lease = app_state.labels.lease("ana")
    assert lease is not None and lease.prompt == "gamed"
    assert (tmp_path / "data" / "labels.sqlite").is_file()
