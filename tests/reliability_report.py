"""Measured outcomes of the reliability scenarios, recorded by the tests themselves.

A test calls `record(scenario, tried, outcome)` with what it measured. Only when asked
(`pytest --reliability-report docs/reliability.json`, as `make reliability` runs it) do the rows
recorded in this session replace their earlier versions in that file; a plain test run writes
nothing. The docs' reliability page is generated from the file (`make docs`), never by hand.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

_recorded: dict[str, dict[str, str]] = {}


def record(scenario: str, tried: str, outcome: str, test: str = "") -> None:
    """Keep one row: the scenario, what the test did, and what it measured."""
    test = test or os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    measured = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    _recorded[scenario] = {"tried": tried, "outcome": outcome, "test": test, "measured": measured}


def write(results: Path) -> None:
    """Merge this session's rows into `results` (rows of tests that did not run keep their last measurement)."""
    if not _recorded:
        return
    rows = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}
    rows.update(_recorded)
    results.write_text(json.dumps(dict(sorted(rows.items())), indent=2) + "\n", encoding="utf-8")
