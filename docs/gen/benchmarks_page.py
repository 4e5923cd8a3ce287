"""The benchmarks page: its prose (docs/benchmarks.md) with the newest `make bench` run's tables put in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import markdown

MARKER = "<!-- generated: the newest run's tables -->"
PLOT = "img/bench-http.png"  # in the built site, beside benchmarks.md


def newest_run(results: Path) -> tuple[Path, dict[str, Any]]:
    """The run in `results` (bench/results/*.json) measured last."""
    runs = {path: json.loads(path.read_text(encoding="utf-8")) for path in results.glob("*.json")}
    if not runs:
        raise FileNotFoundError(f"no benchmark results in {results}: `make bench` writes them")
    path = max(runs, key=lambda run: runs[run]["date"])
    return path, runs[path]


def render(prose: str, path: Path, result: dict[str, Any]) -> str:
    """The prose with its one marker replaced by the run's tables and plot."""
    if prose.count(MARKER) != 1:
        raise ValueError(f"docs/benchmarks.md must hold the line {MARKER!r} exactly once")
    tables = (
        f"`make bench` wrote this run to `bench/results/{path.name}`; the tables are its own report "
        f"(`bench/report.py`).\n\n{markdown(result)}\n"
        f"![items/s and p99 latency against concurrent clients, per server and traffic shape]({PLOT})\n"
    )
    return prose.replace(MARKER, tables)
