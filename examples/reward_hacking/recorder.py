"""The reward function GRPO calls: the client's own, unchanged, and after it the step's record."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from examples.reward_hacking.answers import AnswerLog, column
from examples.reward_hacking.signals import Example, Sample, StepRecord, duplicate_rate, flag_rates, mean_or_none
from rmserve.client import RewardClient, trl_item
from rmserve.engine.telemetry import rank_correlation

EXAMPLES_PER_STEP = 4
WINDOW_GAUGES = "rmserve_window_"


class RecordingReward:
    """`reward.as_reward_func()` for TRL; each call then also scores the completions with the gold and the monitor.

    The policy is paid by the client exactly as a trainer would be. The gold and the monitor are other
    models of the same server; the monitor supplies the signal the reward's answer lacks (an ensemble's
    disagreement for a single model, a single model's embedding distance for an ensemble).
    """

    def __init__(self, reward: RewardClient, gold: RewardClient, monitor: RewardClient, watched: str):
        self.reward_func = reward.as_reward_func()
        self.__name__ = self.reward_func.__name__  # TRL logs rewards under this name
        self.reward, self.gold, self.monitor, self.watched = reward, gold, monitor, watched
        self.reward_answers, self.monitor_answers = AnswerLog(reward), AnswerLog(monitor)
        self.steps: list[StepRecord] = []

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        line: Sequence[int],
        **_: Any,
    ) -> list[float | None]:  # TRL's reward signature (None: no reward for that completion)
        rewards = self.reward_func(prompts, completions)
        items = [trl_item(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)]
        gold = self.gold.score_items(items)
        self.monitor.score_items(items)
        reward_answers, monitor_answers = self.reward_answers.take(), self.monitor_answers.take()
        self.steps.append(self._record(items, line, rewards, gold, reward_answers, monitor_answers, completion_ids))
        paid: list[float | None] = [*rewards]
        return paid

    def _record(
        self,
        items: list[Any],
        lines: Sequence[int],
        rewards: list[float],
        gold: list[float],
        reward: list[dict[str, Any]],
        monitor: list[dict[str, Any]],
        completion_ids: Sequence[Sequence[int]],
    ) -> StepRecord:
        texts = [str(item["messages"][-1]["content"]) for item in items]
        lengths = [len(ids) for ids in completion_ids]
        flags = [flags for flags in (column(reward, "flags"), column(monitor, "flags")) if flags is not None]
        return StepRecord(
            step=len(self.steps) + 1,
            proxy=statistics.fmean(rewards),
            gold=statistics.fmean(gold),
            flag_rates=flag_rates(flags, len(items)),
            ood_distance=mean_or_none(column(reward, "ood_distances") or column(monitor, "ood_distances")),
            disagreement=mean_or_none(column(reward, "std") or column(monitor, "std")),
            completion_tokens=statistics.fmean(lengths),
            duplicate_rate=duplicate_rate(texts),
            length_score_correlation=rank_correlation(np.asarray(lengths), np.asarray(rewards)),
            stats=window_stats(self.reward, self.watched),
            examples=[
                Example(line, text, score, gold_score, item_flags)
                for line, text, score, gold_score, item_flags in zip(
                    lines, texts, rewards, gold, flags[0] if flags else [[]] * len(items), strict=True
                )
            ][:EXAMPLES_PER_STEP],
            samples=window_samples(self.reward.url, self.watched),
        )


def window_samples(url: str, model: str) -> list[Sample]:
    """The `rmserve_window_*` gauges of `model` in the server's `/metrics` now (a scrape refreshes them)."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        if family.name.startswith(WINDOW_GAUGES)
        for sample in family.samples
        if sample.labels.get("model") == model
    ]


def window_stats(client: RewardClient, model: str) -> dict[str, Any]:
    """`/v1/models/<model>/stats` without the manifest's training statistics (the same at every step)."""
    return {key: value for key, value in client.stats(model).items() if key != "training_stats"}
