"""`rmserve eval --report`: the numbers behind the pictures, checked on cases small enough to count by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rmserve.core.conversation import Turn
from rmserve.core.manifest import Normalization
from rmserve.training.data import Comparison
from rmserve.training.eval_report import JSON_FILE, PNG_FILE, report_numbers, write_report

UNIT = Normalization(mean=0.0, std=1.0)


def pair(better: str, worse: str) -> Comparison:
    return Comparison((Turn("user", "prompt"),), (better, worse))


def test_accuracy_by_length_sits_beside_shorter_wins() -> None:
    # Four pairs, mean lengths 1.5, 2.5, 10.5, 20.5 chars; two buckets of the report's five hold them.
    comparisons = [pair("a", "bb"), pair("ccc", "dd"), pair("e" * 10, "f" * 11), pair("g" * 20, "h" * 21)]
    raw = [np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([2.0, 2.0]), np.array([3.0, 1.0])]
    numbers = report_numbers(comparisons, raw, UNIT)
    assert numbers["pairs"] == 4
    assert numbers["pairwise_accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    buckets = numbers["accuracy_by_length"]
    assert sum(bucket["pairs"] for bucket in buckets) == 4
    assert [bucket["model_accuracy"] for bucket in buckets] == [1.0, 0.0, 0.5, 1.0]
    assert [bucket["shorter_wins_accuracy"] for bucket in buckets] == [1.0, 0.0, 1.0, 1.0]


def test_distributions_use_normalized_scores() -> None:
    raw = [np.array([3.0, 1.0]), np.array([5.0, 1.0])]
    numbers = report_numbers([pair("a", "b")] * 2, raw, Normalization(mean=1.0, std=2.0))
    distributions = numbers["score_distributions"]
    assert distributions["better_mean"] == pytest.approx(1.5)  # (3-1)/2 and (5-1)/2
    assert distributions["worse_mean"] == pytest.approx(0.0)
    assert sum(distributions["better_counts"]) == sum(distributions["worse_counts"]) == 2


def test_calibration_counts_each_pair_in_both_orders() -> None:
    margin = np.log(3.0)  # sigmoid = 0.75
    raw = [np.array([margin, 0.0])] * 3 + [np.array([0.0, margin])]  # 3 of 4 pairs ordered as the model says
    calibration = report_numbers([pair("a", "b")] * 4, raw, UNIT)["calibration"]
    by_prediction = {round(b["predicted"], 2): (b["observed"], b["count"]) for b in calibration["bins"]}
    assert by_prediction == {0.25: (0.25, 4), 0.75: (0.75, 4)}  # calibrated: 75% predicted, 75% happened
    assert calibration["expected_calibration_error"] == pytest.approx(0.0)


def test_write_report_writes_a_png_and_the_numbers(tmp_path: Path) -> None:
    raw = [np.array([1.0, 0.0]), np.array([0.2, 0.5]), np.array([2.0, -1.0])]
    numbers = report_numbers([pair("a", "bb"), pair("ccc", "d"), pair("eeee", "ff")], raw, UNIT)
    png, numbers_file = write_report(tmp_path / "report", numbers, "tiny v1 on held_out.jsonl")
    assert (png, numbers_file) == (tmp_path / "report" / PNG_FILE, tmp_path / "report" / JSON_FILE)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(numbers_file.read_text()) == {"title": "tiny v1 on held_out.jsonl", **numbers}
