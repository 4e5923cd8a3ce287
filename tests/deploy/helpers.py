"""What the deploy tests share: where the deploy files are, the alert rules and the dashboard's queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "rmserve.json"
# Grafana's template variables, replaced by values Prometheus accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "rmserve", "$instance": ".*", "$model": ".*"}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows left out."""
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def grafana_to_promql(expr: str) -> str:
    """A panel's query as Prometheus runs it once Grafana has filled in its variables."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr
