"""The demo's alert step is what promtool says the shipped rules do on the recorded gauges, one step a minute."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.reward_hacking.alerts import first_firing
from examples.reward_hacking.signals import Sample, StepRecord
from tests.deploy.test_deploy import tool

MODEL = "hh-harmless"


def recorded(flag_rates: list[float], items: int = 256) -> list[StepRecord]:
    """Steps whose scrape showed `score_above_training_range` at each rate, over a full window."""
    return [
        StepRecord(
            step=index + 1,
            proxy=0.0,
            gold=0.0,
            flag_rates={},
            ood_distance=None,
            disagreement=None,
            completion_tokens=0.0,
            duplicate_rate=0.0,
            length_score_correlation=None,
            stats={},
            samples=[
                Sample("rmserve_window_items", {"model": MODEL}, items),
                Sample("rmserve_window_flag_rate", {"model": MODEL, "flag": "score_above_training_range"}, rate),
            ],
        )
        for index, rate in enumerate(flag_rates)
    ]


def test_a_healthy_run_raises_no_alert() -> None:
    assert first_firing(recorded([0.01] * 30), promtool=tool("promtool")) is None


def test_the_alert_fires_after_its_ten_minutes_of_steps_above_the_cut() -> None:
    # Above 10% from step 6 (minute 5): pending then, firing 10 minutes later, at the scrape after step 16.
    firing = first_firing(recorded([0.01] * 5 + [0.5] * 25), promtool=tool("promtool"))
    assert firing is not None
    assert firing.step == 16
    assert firing.signals == ["score_above_training_range"]


def test_a_window_too_small_to_judge_raises_nothing() -> None:
    assert first_firing(recorded([0.5] * 30, items=100), promtool=tool("promtool")) is None


def test_promtool_failing_for_another_reason_is_an_error_not_a_quiet_run(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text("groups: [{name: x, rules: [{alert: A, expr: 'sum('}]}]\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="promtool test rules failed"):
        first_firing(recorded([0.01] * 5), rules=broken, promtool=tool("promtool"))
