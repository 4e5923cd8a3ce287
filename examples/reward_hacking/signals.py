"""What one GRPO step's completions looked like to the reward server: the per-step record of the demo."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One gauge sample of the reward model's drift telemetry, as `/metrics` showed it after a step."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Example:
    """One completion of a step, with what the proxy and the gold said of it."""

    prompt_line: int  # the question's line in the data file (its text stays there)
    completion: str
    proxy: float
    gold: float
    flags: list[str]


@dataclass(frozen=True)
class StepRecord:
    """One GRPO step: means over its completions, and the server's window as `/stats` summarised it."""

    step: int
    proxy: float  # mean reward the policy was paid
    gold: float  # mean score of the model the policy never sees
    flag_rates: dict[str, float]  # share of the step's completions raising each flag (reward or monitor answer)
    ood_distance: float | None  # mean embedding distance from the training responses
    disagreement: float | None  # mean std across the ensemble's members
    completion_tokens: float  # mean policy tokens per completion
    duplicate_rate: float  # share of the step's completions repeating another of the same step
    length_score_correlation: float | None  # Spearman of completion tokens and proxy within the step
    stats: dict[str, Any]  # the reward model's `/v1/models/<name>/stats` after the step
    examples: list[Example] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)  # the reward model's rmserve_window_* gauges


def flag_rates(flag_columns: Sequence[Sequence[Sequence[str]]], items: int) -> dict[str, float]:
    """Per flag, the share of items that raised it in any of `flag_columns` (each [items] of flag names)."""
    raised: Counter[str] = Counter()
    for index in range(items):
        raised.update({flag for flags in flag_columns for flag in flags[index]})
    return {flag: count / items for flag, count in sorted(raised.items())}


def mean_or_none(values: Sequence[float] | None) -> float | None:
    return None if not values else statistics.fmean(values)


def duplicate_rate(completions: Sequence[str]) -> float:
    """1 - distinct / all: the same measure as the server's window, within one step."""
    return 1.0 - len(set(completions)) / len(completions) if completions else 0.0
