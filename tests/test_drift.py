"""A simulated RL run gaming hh-harmless, scored through a live `rmserve serve`: the signals rise, /stats and
/metrics show it, the alert fires on the resulting series (promtool), and the review buffer exports it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.drift import DATA, gaming_rounds, run
from bench.live_server import RunningServer, running_server, wait_until
from rmserve.client import RewardClient
from rmserve.training.data import read_comparisons
from tests.conftest import DEFAULT_REPOSITORY
from tests.helpers_deploy import alert_rules
from tests.test_deploy import run as run_tool
from tests.test_deploy import tool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data"),
]
ROUNDS = gaming_rounds()
ALERT = "RmserveRewardHackingSuspected"
ROUND_MINUTES = 15  # each round's gauges stand for three 5-minute scrapes in the promtool series


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "RMSERVE_MODELS": "hh-harmless",
        "RMSERVE_WORKERS": "1",
        "RMSERVE_TELEMETRY_WINDOW": str(len(ROUNDS[0].responses)),  # the window holds one round
        "RMSERVE_REVIEW_PROMPTS": "64",
    }
    log = tmp_path_factory.mktemp("drift") / "rmserve.log"
    with running_server(DEFAULT_REPOSITORY, log, env=env) as running:
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
def drift(server: RunningServer) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """(/stats, /metrics window gauges) after each round."""
    observed = []
    for batch in ROUNDS:
        (stats,) = run(server.base_url, [batch])
        observed.append((stats, window_gauges(server.base_url)))
    return observed


def test_signals_rise_round_over_round(drift: list[tuple[dict[str, Any], dict[str, float]]]) -> None:
    stats = [entry[0] for entry in drift]
    rho = [abs(entry["length_score_correlation"]) for entry in stats]
    duplicates = [entry["duplicate_rate"] for entry in stats]
    above = [entry["flag_rates"]["score_above_training_range"] for entry in stats]
    shift = [entry["drift"]["median_shift"] for entry in stats]
    assert all(entry["items"] == len(ROUNDS[0].responses) for entry in stats)
    # Round 0 writes like the training data: flags at about their built-in 1%, no drift.
    assert above[0] < 0.05 and duplicates[0] < 0.1 and abs(shift[0]) < 0.3 and stats[0]["drift"]["ks"] < 0.1
    # The gamed rounds: every rate and the shift grow each round.
    assert duplicates == sorted(duplicates) and above == sorted(above) and shift == sorted(shift)
    assert duplicates[-1] > 0.5 and above[-1] > 0.3 and shift[-1] > 1.5
    # |rho| grows while refusals still vary in length, and stays high once they no longer do.
    assert rho[:4] == sorted(rho[:4]) and rho[3] > rho[0] + 0.3 and min(rho[1:]) > 0.5


def test_metrics_carry_the_same_numbers_as_stats(drift: list[tuple[dict[str, Any], dict[str, float]]]) -> None:
    stats, gauges = drift[-1]
    labels = 'job="rmserve", instance="a:8000", model="hh-harmless"'
    assert gauges[f"rmserve_window_duplicate_rate{{{labels}}}"] == pytest.approx(stats["duplicate_rate"])
    flag = 'rmserve_window_flag_rate{job="rmserve", instance="a:8000", flag="score_above_training_range", '
    flag += 'model="hh-harmless"}'
    assert gauges[flag] == pytest.approx(stats["flag_rates"]["score_above_training_range"])
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
    drift: list[tuple[dict[str, Any], dict[str, float]]], tmp_path: Path
) -> None:
    promtool = tool("promtool")
    # The shipped rules without their annotations (promtool compares those exactly; alerts.test.yml does).
    rules = [{key: value for key, value in rule.items() if key != "annotations"} for rule in alert_rules()]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "drift", "rules": rules}]}))
    series = [entry[1] for entry in drift]
    fired = [
        {"exp_labels": {"severity": "warning", "signal": signal, "job": "rmserve", "model": "hh-harmless"}}
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


def test_rmserve_review_exports_the_gamed_groups_for_training(server: RunningServer, tmp_path: Path) -> None:
    exported = tmp_path / "review.jsonl"
    rmserve = Path(sys.executable).with_name("rmserve")
    subprocess.run([str(rmserve), "review", server.base_url, "-o", str(exported)], check=True, timeout=60)
    comparisons = read_comparisons(exported)
    assert comparisons and all(len(comparison.responses) >= 2 for comparison in comparisons)
    prompts = set(ROUNDS[0].prompts)
    assert {comparison.prompt for comparison in comparisons} <= prompts


def test_client_reads_stats_and_review(server: RunningServer) -> None:
    with RewardClient(server.base_url) as client:
        assert client.stats()["model"] == "hh-harmless"
        assert client.review("hh-harmless") == client.review()


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
