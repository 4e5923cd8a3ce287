"""Simulated RL runs gaming the served model, scored through a live `rmserve serve`: the signals rise, /stats
and /metrics show it, the alert fires on the resulting series (promtool), and the review buffer exports it.

Two scenarios: short, duplicated refusals against hh-harmless, and ever longer, padded, repeated answers
against a model that likes length (bench/length_model.py, built here in a temporary repository).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.drift import DATA, HARMLESS, LENGTH_LOVING, Round, Scenario, gaming_rounds, run, server_env
from bench.live_server import RunningServer, running_server, wait_until
from rmserve.client import RewardClient
from rmserve.training.data import read_comparisons
from tests.deploy.helpers import alert_rules
from tests.deploy.test_deploy import run as run_tool
from tests.deploy.test_deploy import tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data"),
]
ALERT = "RmserveRewardHackingSuspected"
ROUND_MINUTES = 15  # each round's gauges stand for three 5-minute scrapes in the promtool series


@dataclass(frozen=True)
class Expected:
    """How a scenario's signals must move, round over round."""

    scenario: Scenario
    rising: tuple[str, ...]  # never fall from one round to the next
    final: dict[str, float]  # above these in the last round
    correlation_rises_for: int  # rounds over which |length-score correlation| keeps rising


EXPECTED = [
    # |rho| grows while refusals still vary in length, and stays high once they no longer do.
    Expected(
        HARMLESS,
        ("duplicate_rate", "score_above_training_range", "median_shift"),
        {"duplicate_rate": 0.5, "score_above_training_range": 0.3, "median_shift": 1.5},
        correlation_rises_for=4,
    ),
    Expected(
        LENGTH_LOVING,
        ("duplicate_rate", "score_above_training_range", "length_outside_training", "median_shift"),
        {"duplicate_rate": 0.5, "score_above_training_range": 0.3, "length_outside_training": 0.3, "median_shift": 1.5},
        correlation_rises_for=5,
    ),
]


def signals(stats: dict[str, Any]) -> dict[str, float]:
    """The numbers of one /stats answer the scenarios watch, flat."""
    rates = stats["flag_rates"]
    return {
        "length_score_correlation": abs(stats["length_score_correlation"]),
        "duplicate_rate": stats["duplicate_rate"],
        "score_above_training_range": rates["score_above_training_range"],
        "length_outside_training": rates["length_outside_training"],
        "median_shift": stats["drift"]["median_shift"],
        "ks": stats["drift"]["ks"],
    }


@pytest.fixture(scope="module", params=EXPECTED, ids=lambda expected: expected.scenario.model)
def expected(request: pytest.FixtureRequest) -> Expected:
    return request.param


@pytest.fixture(scope="module")
def scenario(expected: Expected) -> Scenario:
    return expected.scenario


@pytest.fixture(scope="module")
def rounds(scenario: Scenario) -> list[Round]:
    return gaming_rounds(scenario.policy)


@pytest.fixture(scope="module")
def server(
    scenario: Scenario, rounds: list[Round], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    scratch = tmp_path_factory.mktemp(scenario.model)
    env = {**server_env(scenario, rounds), "RMSERVE_REVIEW_PROMPTS": "64"}
    with running_server(scenario.repository(scratch), scratch / "rmserve.log", env=env) as running:
        yield running


def window_gauges(base_url: str) -> dict[str, float]:
    """The rmserve_window_* samples of /metrics, keyed by name and labels as promtool writes a series."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("rmserve_window_"):
                labels = ", ".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
                samples[f'{sample.name}{{job="rmserve", instance="a:8000", {labels}}}'] = sample.value
    return samples


@pytest.fixture(scope="module")
def drift(
    server: RunningServer, scenario: Scenario, rounds: list[Round]
) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """(/stats, /metrics window gauges) after each round."""
    observed = []
    for batch in rounds:
        (stats,) = run(server.base_url, [batch], scenario.model)
        observed.append((stats, window_gauges(server.base_url)))
    return observed


def test_signals_rise_round_over_round(
    drift: list[tuple[dict[str, Any], dict[str, float]]], expected: Expected, rounds: list[Round]
) -> None:
    assert all(stats["items"] == len(rounds[0].responses) for stats, _ in drift)
    each = [signals(stats) for stats, _ in drift]
    series = {name: [entry[name] for entry in each] for name in each[0]}
    # Round 0 writes like the training data: flags at about their built-in 1%, no drift.
    healthy = each[0]
    assert healthy["score_above_training_range"] < 0.05 and healthy["length_outside_training"] < 0.05
    assert healthy["duplicate_rate"] < 0.1 and abs(healthy["median_shift"]) < 0.3 and healthy["ks"] < 0.1
    # The gamed rounds: every rate and the shift grow each round.
    for name in expected.rising:
        assert series[name] == sorted(series[name]), name
    for name, floor in expected.final.items():
        assert series[name][-1] > floor, name
    rho = series["length_score_correlation"]
    rising = rho[: expected.correlation_rises_for]
    assert rising == sorted(rising) and rising[-1] > rho[0] + 0.3 and min(rho[1:]) > 0.5


def test_metrics_carry_the_same_numbers_as_stats(
    drift: list[tuple[dict[str, Any], dict[str, float]]], scenario: Scenario
) -> None:
    stats, gauges = drift[-1]
    labels = f'job="rmserve", instance="a:8000", model="{scenario.model}"'
    assert gauges[f"rmserve_window_duplicate_rate{{{labels}}}"] == pytest.approx(stats["duplicate_rate"])
    for flag in ("score_above_training_range", "length_outside_training"):
        name = f'rmserve_window_flag_rate{{job="rmserve", instance="a:8000", flag="{flag}", model="{scenario.model}"}}'
        assert gauges[name] == pytest.approx(stats["flag_rates"][flag])
    correlation = gauges[f"rmserve_window_length_score_correlation{{{labels}}}"]
    assert correlation == pytest.approx(stats["length_score_correlation"])


def promtool_test(series: list[dict[str, float]], expected: list[dict[str, Any]], eval_minutes: int) -> dict[str, Any]:
    """A promtool rule test: each entry of `series` holds for ROUND_MINUTES, scraped every 5 minutes."""
    names = series[0].keys()
    repeat = ROUND_MINUTES // 5
    values = {name: " ".join(str(round(entry[name], 4)) for entry in series for _ in range(repeat)) for name in names}
    return {
        "interval": "5m",
        "input_series": [{"series": name, "values": text} for name, text in values.items()],
        "alert_rule_test": [{"eval_time": f"{eval_minutes}m", "alertname": ALERT, "exp_alerts": expected}],
    }


def test_the_alert_fires_on_the_gamed_series_and_not_on_the_healthy_one(
    drift: list[tuple[dict[str, Any], dict[str, float]]], scenario: Scenario, tmp_path: Path
) -> None:
    promtool = tool("promtool")
    # The shipped rules without their annotations (promtool compares those exactly; alerts.test.yml does).
    rules = [{key: value for key, value in rule.items() if key != "annotations"} for rule in alert_rules()]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "drift", "rules": rules}]}))
    series = [entry[1] for entry in drift]
    fired = [
        {"exp_labels": {"severity": "warning", "signal": signal, "job": "rmserve", "model": scenario.model}}
        for signal in ("length_score_correlation", "duplicate_responses", "score_above_training_range")
    ]
    end_of_round_3 = 3 * ROUND_MINUTES + ROUND_MINUTES - 5
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            promtool_test(series, fired, end_of_round_3),
            promtool_test([series[0]] * len(series), [], end_of_round_3),
        ],
    }
    (tmp_path / "drift.test.yml").write_text(yaml.safe_dump(tests, width=10_000))
    run_tool(promtool, "test", "rules", "drift.test.yml", cwd=tmp_path)


def test_rmserve_review_exports_the_gamed_groups_for_training(
    server: RunningServer, rounds: list[Round], tmp_path: Path
) -> None:
    exported = tmp_path / "review.jsonl"
    rmserve = Path(sys.executable).with_name("rmserve")
    subprocess.run([str(rmserve), "review", server.base_url, "-o", str(exported)], check=True, timeout=60)
    comparisons = read_comparisons(exported)
    assert comparisons and all(len(comparison.responses) >= 2 for comparison in comparisons)
    prompts = set(rounds[0].prompts)
    assert {comparison.prompt_text for comparison in comparisons} <= prompts


def test_client_reads_stats_and_review(server: RunningServer, scenario: Scenario) -> None:
    with RewardClient(server.base_url) as client:
        assert client.stats()["model"] == scenario.model
        assert client.review(scenario.model) == client.review()


def window_items(base_url: str) -> float:
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    (family,) = [family for family in text_string_to_metric_families(text) if family.name == "rmserve_window_items"]
    return sum(sample.value for sample in family.samples if sample.labels["model"] == "tiny")


def test_two_workers_keep_their_own_windows_and_metrics_add_them_up(tiny_repository: Path, tmp_path: Path) -> None:
    env = {"RMSERVE_WORKERS": "2", "RMSERVE_EXECUTORS": "1"}
    with running_server(tiny_repository, tmp_path / "rmserve.log", env=env) as two:
        scored = 0

        def score_one() -> None:  # a new connection each time, so both workers get some
            nonlocal scored
            body = {"prompt": "Hi?", "responses": [f"answer {scored}", "same"]}
            requests.post(f"{two.base_url}/v1/score", json=body, timeout=30).raise_for_status()
            scored += 2

        for _ in range(20):
            score_one()
        windows: dict[int, dict[str, Any]] = {}

        def both_answered() -> bool:
            stats = requests.get(f"{two.base_url}/v1/models/tiny/stats", timeout=10).json()
            windows[stats["worker_pid"]] = stats
            return len(windows) == 2

        wait_until(both_answered, 60, "/stats from both workers", poll_s=0.05)
        assert sum(stats["items"] for stats in windows.values()) == scored
        # Each worker's gauges lag its window by at most PUBLISH_INTERVAL_S; the scrape sums both.
        wait_until(lambda: score_one() or window_items(two.base_url) == scored, 60, "summed window gauges")
