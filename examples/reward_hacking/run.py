"""One GRPO run of the policy against a live `rmserve serve`, paid by `RewardClient(...).as_reward_func()`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets import Dataset  # type: ignore[import-untyped]
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
from trl.trainer.grpo_config import GRPOConfig
from trl.trainer.grpo_trainer import GRPOTrainer

from bench.live_server import running_server
from examples.reward_hacking.prompts import Question
from examples.reward_hacking.recorder import RecordingReward
from examples.reward_hacking.repository import Roles
from examples.reward_hacking.signals import StepRecord
from rmserve.client import RewardClient

RewardKind = Literal["single", "conservative"]


@dataclass(frozen=True)
class RunConfig:
    """The RL loop's knobs: the same for both runs."""

    steps: int = 160
    prompts_per_step: int = 4
    num_generations: int = 8  # a GRPO group per prompt
    max_completion_length: int = 32
    learning_rate: float = 4e-4
    beta: float = 0.0  # no KL penalty: nothing holds the policy near what it was
    temperature: float = 1.0
    telemetry_window: int = 256  # items per model in the server's window: 8 steps of 32 completions


def run_grpo(
    reward: RewardKind,
    policy: GPT2LMHeadModel,
    tokenizer: PreTrainedTokenizerFast,
    questions: list[Question],
    config: RunConfig,
    roles: Roles,
    seed: int,
    repository: Path,
    workdir: Path,
) -> list[StepRecord]:
    """Train a copy of `policy` for `config.steps` steps; the record of every step."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"RMSERVE_TELEMETRY_WINDOW": str(config.telemetry_window), "RMSERVE_DEFAULT_MODEL": roles.proxy}
    with running_server(repository.resolve(), workdir / f"server-{reward}.log", env=env) as server:
        url = server.base_url
        if reward == "single":
            paid, monitor = RewardClient(url, model=roles.proxy), RewardClient(url, model=roles.ensemble)
            watched = roles.proxy
        else:
            paid = RewardClient(url, model=roles.ensemble, reward="conservative")
            monitor, watched = RewardClient(url, model=roles.proxy), roles.ensemble
        recorder = RecordingReward(paid, RewardClient(url, model=roles.gold), monitor, watched)
        trainer = GRPOTrainer(
            model=copy.deepcopy(policy),
            reward_funcs=[recorder],
            args=grpo_config(config, seed, workdir / f"trainer-{reward}"),
            train_dataset=Dataset.from_dict(
                {
                    "prompt": [[{"role": "user", "content": question.text}] for question in questions],
                    "line": [question.line for question in questions],  # TRL hands extra columns to the reward
                }
            ),
            processing_class=tokenizer,
        )
        trainer.train()
    return recorder.steps


def grpo_config(config: RunConfig, seed: int, output_dir: Path) -> GRPOConfig:
    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=config.steps,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        learning_rate=config.learning_rate,
        beta=config.beta,
        temperature=config.temperature,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=seed,
        disable_tqdm=True,
    )
