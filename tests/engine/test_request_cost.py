"""Requests are budgeted by the memory scoring them takes (texts, kept tokens), not by their bodies' bytes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from bench.live_server import wait_until
from rmserve.core.conversation import Exchange, Turn
from rmserve.engine.request_cost import MemoryBudget, request_bytes
from rmserve.errors import QueueFull
from tests.http.test_api import error_of, hold_batcher


def group(prompt: str, responses: int) -> list[Exchange]:
    turns = (Turn("user", prompt),)
    return [Exchange(turns, f"answer {index}", f"responses[{index}]", prompt_text=prompt) for index in range(responses)]


def test_a_shared_prompt_counts_once_and_every_model_keeps_ids_of_every_item() -> None:
    long_prompt = "Tell me everything. " * 3000
    one, many = request_bytes(group(long_prompt, 1), [256]), request_bytes(group(long_prompt, 512), [256])
    per_item = (many - one) / 511
    assert 256 * 48 <= per_item < 256 * 48 + 2000  # each more response adds its ids and its text, not the prompt
    assert request_bytes(group(long_prompt, 512), [256, 256, 256]) > 2.5 * many - 2 * one  # three models
    wide = group("Tell me everything. \U0001f600" * 3000, 1)  # an emoji: Python keeps 4 bytes a character
    assert request_bytes(wide, [256]) - one > 2 * 3 * len(long_prompt)  # the text and a model's copy of it


def test_the_budget_refuses_what_does_not_fit_and_lets_a_lone_request_through() -> None:
    budget = MemoryBudget(100)

    def retry_after() -> int:
        return 3

    with budget.reserve(60, retry_after):
        with pytest.raises(QueueFull) as refused:
            with budget.reserve(50, retry_after):
                pass
        assert refused.value.headers == {"Retry-After": "3"}
        with budget.reserve(40, retry_after):
            assert budget.reserved == 100
    assert budget.reserved == 0
    with budget.reserve(1000, retry_after):  # larger than the whole budget, but alone
        assert budget.reserved == 1000
    assert budget.reserved == 0


def test_a_small_body_with_a_costly_layout_is_refused_while_others_are_scored(make_app: Callable[..., Flask]) -> None:
    # 512 responses to one 60k-character prompt: 60 KB of body within every body limit, but 512 items of
    # max_length tokens to keep, where the budget left holds far fewer.
    app = make_app(max_inflight_memory_bytes=4 * 1024 * 1024)
    gate = hold_batcher(app)  # one small request is being scored
    client = app.test_client()
    body = {"prompt": "Tell me everything. " * 3000, "responses": ["ok"] * 512}
    response = client.post("/v1/score", json=body)
    assert response.status_code == 429, response.get_json()
    assert "RMSERVE_MAX_INFLIGHT_MEMORY_BYTES" in error_of(response)["message"]
    assert int(response.headers["Retry-After"]) >= 1
    gate.set()
    scoring = app.extensions["rmserve"].scoring
    wait_until(lambda: scoring.memory.reserved == 0, 10, "the small request to finish")
    alone = client.post("/v1/score", json=body)
    assert alone.status_code == 200, alone.get_json()  # alone, it is scored
