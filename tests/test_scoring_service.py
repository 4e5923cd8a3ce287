"""The scoring service with explicit arguments, no HTTP in sight: what every route and `rmserve score` call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.core.formats import InputFormat
from rmserve.engine.registry import ModelRegistry
from rmserve.errors import InvalidField, ModelNotFound, NotReady
from rmserve.protocols.inputs import Limits, group_exchanges
from rmserve.scoring_service import ScoringService

PROMPT, RESPONSES = "How do I bake bread?", ["Knead and bake.", "no"]
LIMITS = Limits(max_items=8, max_text_chars=1000)


@pytest.fixture
def scoring(tiny_repository: Path) -> Iterator[ScoringService]:
    settings = Settings.from_env({}, model_repository=tiny_repository)
    service = ScoringService(ModelRegistry.load(settings).start(), settings.max_inflight_memory_bytes)
    yield service
    service.drain(timeout=5)


def bread(input_format: InputFormat) -> list[Exchange]:
    return group_exchanges(PROMPT, RESPONSES, input_format, LIMITS)


def test_scores_what_the_http_route_scores(scoring: ScoringService, client: FlaskClient) -> None:
    served, scored = scoring.score(None, bread, time.monotonic() + 10)
    online = client.post("/v1/score", json={"prompt": PROMPT, "responses": RESPONSES}).get_json()
    assert (served.name, served.served_version) == (online["model"], online["version"]) == ("tiny", 1)
    assert scored.scores.tolist() == pytest.approx(online["scores"], rel=1e-6)


def test_a_reward_choice_for_a_single_model_is_refused_before_its_exchanges_are_built(
    scoring: ScoringService,
) -> None:
    def never(input_format: InputFormat) -> list[Exchange]:
        raise AssertionError("the exchanges were built")

    with pytest.raises(InvalidField) as error:
        scoring.score("tiny", never, time.monotonic() + 10, reward="mean")
    assert error.value.field == "reward" and "single model" in error.value.message
    with pytest.raises(ModelNotFound):
        scoring.score("nosuch", never, time.monotonic() + 10)


def test_readiness_says_why_not(scoring: ScoringService) -> None:
    assert scoring.not_ready_reason() is None
    scoring.registry.get("tiny").batchers[0].stop(timeout=5)  # as if its thread had died
    assert scoring.not_ready_reason() == "batcher not running for tiny"
    scoring.start_draining()
    with pytest.raises(NotReady, match="draining"):
        scoring.require_ready()
