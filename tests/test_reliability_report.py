"""A test session writes the reliability measurements only when asked, and never into the checkout otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# A fast test that records a reliability row (after its assertions).
RECORDING_TEST = "tests/http/test_api.py::test_keys_file_with_only_comments_stops_start_up"
SCENARIO = "Strangers: a keys file of comments"


def pytest_session(*flags: str) -> None:
    """Run one test of this suite in its own pytest session, as `make test` would."""
    session = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", RECORDING_TEST, *flags],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert session.returncode == 0, session.stdout + session.stderr


def reliability_files() -> dict[str, tuple[int, bytes]]:
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in (ROOT / "docs").glob("reliability.*")}


def test_a_test_session_leaves_docs_reliability_alone_unless_asked(tmp_path: Path) -> None:
    before = reliability_files()
    pytest_session()
    assert reliability_files() == before

    asked = tmp_path / "reliability.json"
    pytest_session("--reliability-report", str(asked))
    row = json.loads(asked.read_text(encoding="utf-8"))[SCENARIO]
    assert row["test"] == RECORDING_TEST
    assert reliability_files() == before


def test_asked_the_session_replaces_its_rows_and_keeps_the_others(tmp_path: Path) -> None:
    results = tmp_path / "reliability.json"
    earlier = {"tried": "t", "outcome": "o", "test": "tests/x.py::test_old", "measured": "2026-01-01"}
    results.write_text(json.dumps({"Other scenario": earlier, SCENARIO: earlier}), encoding="utf-8")
    pytest_session("--reliability-report", str(results))
    rows = json.loads(results.read_text(encoding="utf-8"))
    assert rows["Other scenario"] == earlier
    assert rows[SCENARIO]["test"] == RECORDING_TEST and rows[SCENARIO]["measured"] != "2026-01-01"
    assert list(rows) == sorted(rows)
