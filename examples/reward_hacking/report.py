"""report.json: configuration, seeds, versions, and per run its alert step, gold peak and steps."""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from examples.reward_hacking.signals import StepRecord

SMOOTHING_STEPS = 10  # gold and proxy are means over a few dozen completions: peaks are read off a trailing mean


@dataclass(frozen=True)
class RunReport:
    """One run: what paid the policy, when the alert fired, when gold peaked, and every step."""

    reward: str  # single | conservative
    seed: int
    alert_step: int | None  # first step at which RmserveRewardHackingSuspected fired; None: never
    alert_signals: list[str]  # the rules (`signal` label) firing then
    gold_peak_step: int  # step of the highest trailing mean of gold
    wall_time_s: float
    steps: list[StepRecord]


@dataclass(frozen=True)
class Report:
    config: dict[str, Any]
    seeds: list[int]
    versions: dict[str, str]
    wall_time_s: float
    runs: list[RunReport]


def trailing_mean(values: Sequence[float], window: int = SMOOTHING_STEPS) -> list[float]:
    """Mean of each value and the `window - 1` before it (fewer at the start)."""
    return [statistics.fmean(values[max(0, index + 1 - window) : index + 1]) for index in range(len(values))]


def peak_step(steps: Sequence[StepRecord]) -> int:
    """The step whose trailing mean of gold is highest."""
    smoothed = trailing_mean([record.gold for record in steps])
    return steps[max(range(len(steps)), key=smoothed.__getitem__)].step


def versions() -> dict[str, str]:
    promtool = subprocess.run(["promtool", "--version"], capture_output=True, text=True, check=False)
    return {
        "python": platform.python_version(),
        **{package: version(package) for package in ("rmserve", "torch", "transformers", "trl", "onnxruntime")},
        "promtool": (promtool.stdout or promtool.stderr).split("\n", 1)[0],
    }


def write_report(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    compact = json.dumps(dataclasses.asdict(report), separators=(",", ":"))  # every step's gauges: ~1 MB a seed
    path.write_text(compact + "\n", encoding="utf-8")
