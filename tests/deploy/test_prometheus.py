"""A real Prometheus (Debian's package) scraping a live `rmserve serve`, checked through its HTTP API.

Uses the shipped deploy/prometheus/prometheus.yml and alerts.yml, pointed at the test server and
scraping every second, and the queries of the shipped Grafana dashboard.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bench.live_server import RunningServer, answers_200, free_port, running_server, wait_until
from tests.deploy.helpers import PROMETHEUS_DIR, alert_rules, dashboard_panels, grafana_to_promql

pytestmark = pytest.mark.slow


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.base_url}/api/v1/query", params={"query": promql}, timeout=10)
        assert response.status_code == 200, f"{promql}: {response.text}"
        return response.json()["data"]["result"]

    def value(self, promql: str) -> float:
        """The single value of an instant query; 0 while it has no result yet."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    def rules(self) -> list[dict[str, Any]]:
        groups = requests.get(f"{self.base_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


@pytest.fixture
def server(tiny_repository: Path, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tiny_repository, tmp_path / "rmserve.log") as running:
        yield running


@pytest.fixture
def prometheus(server: RunningServer, tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (.ci/install-tools.sh installs Debian's package)")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [server.base_url.removeprefix("http://")]}]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))

    address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = f"http://{address}/-/ready"
        wait_until(lambda: answers_200(ready) or process.poll() is not None, 60, "Prometheus to be ready")
        assert process.poll() is None, log_path.read_text()
        yield Prometheus(f"http://{address}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_prometheus_scrapes_rmserve_and_sees_scoring_traffic(server: RunningServer, prometheus: Prometheus) -> None:
    wait_until(lambda: prometheus.value('up{job="rmserve"}') == 1, 60, "the rmserve target to be up")
    assert prometheus.value('rmserve_ready{job="rmserve"}') == 1
    scored_before = prometheus.value('sum(rmserve_items_scored_total{job="rmserve"})')

    for prompt in ("How do I bake bread?", "What is the capital of France?", "Tell me a joke."):
        response = requests.post(
            f"{server.base_url}/v1/score",
            timeout=30,
            json={"prompt": prompt, "responses": ["Sure, here it is.", "No.", "I can't."]},
        )
        assert response.status_code == 200, response.text

    wait_until(
        lambda: prometheus.value('sum(rmserve_items_scored_total{job="rmserve"})') >= scored_before + 9,
        60,
        "Prometheus to see 9 more items scored",
    )
    assert prometheus.value('sum(rmserve_requests_total{job="rmserve", endpoint="/v1/score", status="200"})') >= 3
    assert prometheus.value('sum(rmserve_tokens_scored_total{job="rmserve"})') > 0
    assert prometheus.value('sum(rmserve_inference_seconds_count{job="rmserve"})') >= 1
    (model_info,) = prometheus.query('rmserve_model_info{job="rmserve"}')
    assert model_info["metric"]["model"] == "tiny"


def test_alert_rules_load_evaluate_and_stay_quiet_on_a_healthy_server(prometheus: Prometheus) -> None:
    alert_names = {rule["alert"] for rule in alert_rules()}
    wait_until(lambda: prometheus.value('up{job="rmserve"}') == 1, 60, "the rmserve target to be up")
    assert {rule["name"] for rule in prometheus.rules()} == alert_names
    # Until the first scrape, "no replica is up" is true and RmserveUnavailable may be pending.
    wait_until(
        lambda: all(rule["health"] == "ok" and rule["state"] == "inactive" for rule in prometheus.rules()),
        60,
        "every alert rule evaluated without error and inactive",
    )


def test_every_dashboard_query_runs_and_the_throughput_panel_shows_traffic(
    server: RunningServer, prometheus: Prometheus
) -> None:
    def score() -> None:
        response = requests.post(
            f"{server.base_url}/v1/score", timeout=30, json={"prompt": "Hello", "responses": ["Hi there.", "Go away."]}
        )
        assert response.status_code == 200, response.text

    # A rate needs two samples of a series: one scored request creates it, the next ones move it.
    score()
    wait_until(
        lambda: prometheus.value('sum(rmserve_items_scored_total{job="rmserve"})') >= 2,
        60,
        "Prometheus to scrape the first scored items",
    )
    for _ in range(3):
        score()

    panels = {panel["title"]: panel for panel in dashboard_panels()}
    for panel in panels.values():
        for target in panel["targets"]:
            prometheus.query(grafana_to_promql(target["expr"]))  # fails on a query Prometheus rejects
    (throughput,) = panels["Items scored / s"]["targets"]
    wait_until(
        lambda: prometheus.value(grafana_to_promql(throughput["expr"])) > 0,
        60,
        "the 'Items scored / s' panel to show traffic",
    )
