"""A real TRL GRPOTrainer run on CPU, rewarded by a live rmserve through `RewardClient.as_reward_func()`.

The policy is a tiny random-init Llama with a tokenizer trained in the test (examples/trl_grpo.py
builds both), so nothing is downloaded; the server is the real `rmserve serve` on a free port.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.live_server import RunningServer, running_server
from rmserve.client import RewardClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl_grpo.py"
NUM_GENERATIONS = 4
STEPS = 2


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trl_grpo_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live_server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("trl-server") / "server.log"
    with running_server(tiny_repository, log_path) as server:
        yield server


class RecordingReward:
    """The client's reward function, unchanged, with every call and answer kept for the assertions."""

    def __init__(self, reward_func: Any):
        self.reward_func = reward_func
        self.__name__ = reward_func.__name__
        self.calls: list[tuple[list[Any], list[Any], list[float]]] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = self.reward_func(prompts=prompts, completions=completions, **kwargs)
        self.calls.append((list(prompts), list(completions), rewards))
        return rewards


# ~5 s of training, but importing TRL and transformers takes 15-25 s more on a shared 2-core machine.
@pytest.mark.slow
@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_grpo_trains_with_one_finite_reward_per_completion(live_server, tmp_path, conversational):
    example = load_example()
    reward = RecordingReward(RewardClient(live_server.base_url, timeout=30, retries=2).as_reward_func())
    trainer = example.build_trainer(
        reward,
        policy=None,
        output_dir=tmp_path,
        steps=STEPS,
        conversational=conversational,
        num_generations=NUM_GENERATIONS,
        max_completion_length=8,
    )
    trainer.train()

    assert trainer.state.global_step == STEPS
    assert len(reward.calls) == STEPS
    for prompts, completions, rewards in reward.calls:
        assert len(prompts) == len(completions) == len(rewards) == NUM_GENERATIONS
        assert all(isinstance(value, float) and math.isfinite(value) for value in rewards)
        if conversational:
            assert isinstance(prompts[0], list) and completions[0][-1]["role"] == "assistant"
        else:
            assert isinstance(prompts[0], str) and isinstance(completions[0], str)
    logged = [entry["rewards/rmserve/mean"] for entry in trainer.state.log_history if "rewards/rmserve/mean" in entry]
    assert len(logged) == STEPS and all(math.isfinite(value) for value in logged)


def test_client_scores_match_the_server_for_rank_and_models(live_server):
    """The client against the real server: score, rank and models agree with each other."""
    with RewardClient(live_server.base_url) as client:
        responses = ["Knead, rise, bake.", "I can't help with that.", "Paris."]
        scores = client.score(["How do I bake bread?"] * 3, responses)
        ranking = client.rank("How do I bake bread?", responses)
        assert ranking.scores == pytest.approx(scores)
        assert [scores[index] for index in ranking.ranking] == sorted(scores, reverse=True)
        (card,) = client.models()
        assert card["name"] == "tiny" and card["default"] is True
