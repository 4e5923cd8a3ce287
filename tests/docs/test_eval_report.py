"""The default model's evaluation report the train guide shows (docs/eval-hh-harmless) is what `rmserve eval` writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SHARED_DATA

COMMITTED = ROOT / "docs" / "eval-hh-harmless" / "report.json"
DATA = SHARED_DATA / "hh-rlhf-harmless-test.jsonl.gz"


def rounded(value: Any) -> Any:
    """Floats to 6 significant digits, all the way down (float noise is not a stale report)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


@pytest.mark.slow  # scores the 512 held-out pairs and fits the bag-of-words baseline: ~30 s
@pytest.mark.skipif(not DATA.is_file(), reason="needs the HH-RLHF data in ../shared/data")
def test_the_committed_report_is_what_eval_writes_today(tmp_path: Path) -> None:
    rmserve = Path(sys.executable).with_name("rmserve")
    data = "../shared/data/hh-rlhf-harmless-test.jsonl.gz"  # as the guide names it, from the checkout
    command = [str(rmserve), "eval", "hh-harmless", data, "--lines", "1801-2312", "--report", str(tmp_path)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    fresh = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    assert rounded(committed) == rounded(fresh), "the committed report is stale: regenerate it with `rmserve eval`"
