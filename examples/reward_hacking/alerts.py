"""When the shipped alert rules fire on the recorded telemetry: promtool's rule unit tests, one eval per step.

Each step's `/metrics` scrape becomes one sample of a promtool input series, one minute apart: a
GRPO step of a real policy takes a minute or more, so the rules' `for: 10m` and `offset 30m` read as
10 and 30 steps here. Every step is tested to raise no alert; promtool's failures name the steps
where an alert fired instead, and its labels (`signal`) which rule.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from examples.reward_hacking.signals import StepRecord

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
ALERT = "RmserveRewardHackingSuspected"
PROMTOOL = "promtool"
SCRAPE_LABELS = {"job": "rmserve", "instance": "demo"}  # what Prometheus would add to the scraped series
FAILURE = re.compile(r"alertname: (\S+), time: (\d+)m,(.*?)(?=\n\s*alertname: |\Z)", re.DOTALL)
SIGNAL = re.compile(r'signal="([^"]+)"')


@dataclass(frozen=True)
class Firing:
    """The first step at which the alert fired, and which of its rules (`signal`) did."""

    step: int
    signals: list[str]


def input_series(steps: Sequence[StepRecord]) -> list[dict[str, str]]:
    """promtool input series: one per gauge, its value after each step (`_` where a step had none)."""
    series: dict[str, list[str]] = {}
    for index, record in enumerate(steps):
        for sample in record.samples:
            labels = {**sample.labels, **SCRAPE_LABELS}
            selector = (
                sample.name + "{" + ", ".join(f'{name}="{value}"' for name, value in sorted(labels.items())) + "}"
            )
            series.setdefault(selector, ["_"] * len(steps))[index] = repr(sample.value)
    return [{"series": selector, "values": " ".join(values)} for selector, values in sorted(series.items())]


def unit_test(steps: Sequence[StepRecord], rules: Path = RULES) -> dict[str, object]:
    """A rule unit-test file asking, at every step, that the alert stay quiet."""
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "the recorded run",
                "interval": "1m",
                "input_series": input_series(steps),
                "alert_rule_test": [
                    {"eval_time": f"{index}m", "alertname": ALERT, "exp_alerts": []} for index in range(len(steps))
                ],
            }
        ],
    }


def first_firing(steps: Sequence[StepRecord], rules: Path = RULES, promtool: str = PROMTOOL) -> Firing | None:
    """The first step where `RmserveRewardHackingSuspected` fires on the recorded series, or None if it never does."""
    with tempfile.TemporaryDirectory(prefix="reward-hacking-alerts-") as scratch:
        test_file = Path(scratch) / "recorded.test.yml"
        test_file.write_text(json.dumps(unit_test(steps, rules), indent=1), encoding="utf-8")  # JSON is YAML
        command = [promtool, "test", "rules", str(test_file)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
        return None
    output = result.stdout + result.stderr
    firings = sorted(
        (int(minutes), SIGNAL.findall(detail))
        for alertname, minutes, detail in FAILURE.findall(output)
        if alertname == ALERT
    )
    if not firings:  # promtool failed for another reason (a broken rule file, a bad series): never read as "quiet"
        raise RuntimeError(f"promtool test rules failed:\n{output}")
    minutes, signals = firings[0]
    return Firing(step=minutes + 1, signals=sorted(set(signals)))  # the sample at minute i follows step i + 1
