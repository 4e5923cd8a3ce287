"""The review buffer: opt-in, bounded, keeps the groups to doubt, and exports what `rmserve train` reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flask import Flask

from rmserve.core.conversation import Turn
from rmserve.engine.review import MAX_RESPONSES, ReviewBuffer
from rmserve.training.data import read_comparisons
from tests.engine.test_flags import best_token

Flags = list[list[str]]


def observe(buffer: ReviewBuffer, prompt: str, responses: list[str], scores: list[float], flags: Flags) -> None:
    buffer.observe([prompt] * len(responses), responses, np.array(scores), flags)


def test_only_doubtful_prompts_enter_then_collect_their_later_responses() -> None:
    buffer = ReviewBuffer(capacity=2)
    observe(buffer, "calm", ["a", "b"], [0.1, -0.2], [[], ["truncated"]])  # truncation alone is no doubt
    assert buffer.records() == []
    observe(buffer, "gamed", ["x"], [0.5], [["score_above_training_range"]])
    assert buffer.records() == []  # one response: nothing to rank yet
    observe(buffer, "gamed", ["y"], [0.0], [[]])  # later responses to a prompt under review join it
    observe(buffer, "extreme", ["p", "q"], [3.5, 0.0], [[], []])  # |z| >= 3
    assert [record["prompt"] for record in buffer.records()] == ["extreme", "gamed"]
    assert buffer.records()[1] == {
        "prompt": "gamed",
        "responses": ["x", "y"],
        "model_scores": [0.5, 0.0],
        "flags": [["score_above_training_range"], []],
    }
    observe(buffer, "third", ["m", "n"], [0.0, 0.0], [["length_outside_training"], []])
    assert [record["prompt"] for record in buffer.records()] == ["third", "extreme"]  # capacity 2: "gamed" left


def test_an_ensembles_groups_are_kept_and_listed_by_how_much_its_members_disagree() -> None:
    buffer = ReviewBuffer(capacity=2)

    def observe_std(prompt: str, stds: list[float]) -> None:
        flags = [["high_disagreement"], []]
        buffer.observe([prompt] * 2, ["a", "b"], np.zeros(2), flags, np.array(stds))

    observe_std("wide", [2.0, 0.1])
    observe_std("narrow", [0.5, 0.1])
    assert [record["prompt"] for record in buffer.records()] == ["wide", "narrow"]  # though "wide" is older
    observe_std("widest", [3.0, 0.2])
    assert [record["prompt"] for record in buffer.records()] == ["widest", "wide"]  # the least disagreed-on left
    assert buffer.records()[0]["disagreement"] == [3.0, 0.2]


def test_a_group_keeps_a_bounded_number_of_distinct_responses() -> None:
    buffer = ReviewBuffer(capacity=1)
    responses = [f"r{index}" for index in range(20)] + ["r0"] * 5
    observe(buffer, "p", responses, [4.0] * len(responses), [[]] * len(responses))
    assert len(buffer.records()[0]["responses"]) == MAX_RESPONSES


def test_review_route_exports_records_that_training_reads(
    make_app: Callable[..., Flask], stats_repository: Path, tmp_path: Path
) -> None:
    assert make_app().test_client().get("/v1/models/tiny/review").get_json()["error"]["code"] == "not_enabled"
    client = make_app(model_repository=stats_repository, review_prompts=8).test_client()
    gamed = best_token(stats_repository) * 8
    body = {"prompt": "Hi?", "responses": [gamed, "Paris is the capital of France.", "Knead and bake."]}
    assert client.post("/v1/score", json=body).status_code == 200
    client.post("/v1/score", json={"prompt": "Calm?", "responses": ["I'm sorry, I can't help with that."] * 2})
    records = client.get("/v1/models/tiny/review").get_json()["records"]
    assert [record["prompt"] for record in records] == ["Hi?"]  # as the client wrote it
    assert records[0]["responses"][0] == gamed  # the model's favourite first: people re-order
    exported = tmp_path / "review.jsonl"
    exported.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    (comparison,) = read_comparisons(exported)
    assert (comparison.prompt, comparison.prompt_text) == ((Turn("user", "Hi?"),), "Hi?")  # read as the server did
    assert list(comparison.responses) == records[0]["responses"]
