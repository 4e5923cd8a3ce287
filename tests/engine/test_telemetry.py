"""Drift telemetry: the rolling window's summaries equal a direct computation, and reach /stats and /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from prometheus_client import REGISTRY
from scipy.stats import spearmanr

from rmserve.config import Settings
from rmserve.core.manifest import Normalization, Quantiles, TrainingStats
from rmserve.engine.telemetry import MIN_ITEMS, Telemetry, rank_correlation

NORMALIZATION = Normalization(mean=1.0, std=2.0)
STATS = TrainingStats(
    responses=1000,
    raw_score=Quantiles.of(np.random.default_rng(0).normal(1.0, 2.0, 1000).tolist()),
    response_tokens=Quantiles.of(np.arange(1, 101).tolist()),
)


def window(capacity: int = 100, stats: TrainingStats | None = STATS) -> Telemetry:
    return Telemetry("m", capacity, ("truncated", "score_above_training_range"), NORMALIZATION, stats)


def feed(telemetry: Telemetry, raw: list[float], lengths: list[int], responses: list[str]) -> None:
    flags = {"truncated": np.zeros(len(raw), dtype=bool), "score_above_training_range": np.array(raw) > 5.0}
    telemetry.observe(np.array(raw), lengths, flags, responses)


def test_window_keeps_the_last_items_and_counts_duplicates_exactly() -> None:
    telemetry = window(capacity=4)
    feed(telemetry, [1.0, 2.0, 3.0], [1, 2, 3], ["a", "b", "a"])
    summary = telemetry.summary()
    assert (summary.items, summary.scored) == (3, 3)
    assert summary.duplicate_rate == pytest.approx(1 / 3)  # the second "a"
    feed(telemetry, [9.0, 9.0, 9.0], [4, 5, 6], ["c", "c", "c"])  # evicts 1.0, 2.0 ("a", "b")
    summary = telemetry.summary()
    assert (summary.items, summary.scored) == (4, 6)
    assert summary.duplicate_rate == pytest.approx(2 / 4)  # window: a c c c -> 2 distinct of 4
    assert summary.flag_rates == {"truncated": 0.0, "score_above_training_range": 0.75}
    assert summary.score_quantiles is not None
    assert summary.score_quantiles["p50"] == pytest.approx(4.0)  # normalized: (9 - 1) / 2


def test_a_request_larger_than_the_window_keeps_its_last_items() -> None:
    telemetry = window(capacity=3)
    feed(telemetry, [1.0, 2.0, 3.0, 4.0, 5.0], [1, 1, 1, 1, 1], ["a", "b", "c", "d", "e"])
    summary = telemetry.summary()
    assert (summary.items, summary.scored, summary.duplicate_rate) == (3, 5, 0.0)
    assert summary.score_quantiles is not None
    assert summary.score_quantiles["p01"] == pytest.approx((3.0 + 0.02 - 1.0) / 2.0)


def test_rank_correlation_is_spearman_with_ties() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 20, 500)  # many ties
    scores = lengths * 0.1 + rng.normal(0, 1, 500)
    spearman, _ = spearmanr(lengths, scores)
    assert rank_correlation(lengths, scores) == pytest.approx(spearman)
    assert rank_correlation(np.ones(10), np.arange(10.0)) is None


def test_correlation_and_drift_wait_for_enough_items_then_measure_the_shift() -> None:
    telemetry = window(capacity=1000)
    feed(telemetry, [1.0] * (MIN_ITEMS - 1), [5] * (MIN_ITEMS - 1), [str(i) for i in range(MIN_ITEMS - 1)])
    assert telemetry.summary().length_score_correlation is None and telemetry.summary().drift is None
    rng = np.random.default_rng(2)
    training_like = rng.normal(1.0, 2.0, 2000)
    fresh = window(capacity=2000)
    feed(fresh, training_like.tolist(), [5] * 2000, [str(i) for i in range(2000)])
    unchanged = fresh.summary().drift
    assert unchanged is not None and unchanged.ks < 0.05 and abs(unchanged.median_shift) < 0.1
    shifted = window(capacity=2000)
    feed(shifted, (training_like + 4.0).tolist(), [5] * 2000, [str(i) for i in range(2000)])  # +2 std
    drift = shifted.summary().drift
    assert drift is not None
    assert drift.median_shift == pytest.approx(2.0, abs=0.15)
    assert drift.ks > 0.5
    assert window(stats=None).summary().drift is None


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_stats_route_and_gauges_show_the_window(make_app: Callable[..., Flask], stats_repository: Path) -> None:
    client = make_app(model_repository=stats_repository).test_client()
    responses = [f"answer number {index % 10}" for index in range(60)]  # 10 distinct, each six times
    assert client.post("/v1/score", json={"prompt": "Hi?", "responses": responses}).status_code == 200
    stats = client.get("/v1/models/tiny/stats").get_json()
    assert (stats["items"], stats["window"]) == (60, 4096)
    assert stats["duplicate_rate"] == pytest.approx(50 / 60)
    assert stats["flags_checked"] == [
        "truncated",
        "injected_turn",
        "no_prompt",
        "score_above_training_range",
        "length_outside_training",
    ]
    assert set(stats["score_quantiles"]) == {"p01", "p05", "p50", "p95", "p99"}
    assert stats["drift"] is not None and stats["training_stats"]["responses"] == 10
    client.get("/metrics")  # a scrape refreshes this worker's gauges
    assert gauge("rmserve_window_duplicate_rate", model="tiny") == pytest.approx(50 / 60)
    assert gauge("rmserve_window_items", model="tiny") == 60
    assert gauge("rmserve_window_flag_rate", model="tiny", flag="truncated") == 0.0


def test_stats_of_an_unknown_model_or_with_telemetry_off_is_404(make_app: Callable[..., Flask]) -> None:
    assert make_app().test_client().get("/v1/models/nope/stats").get_json()["error"]["code"] == "model_not_found"
    off = make_app(telemetry_window=0).test_client().get("/v1/models/tiny/stats")
    assert (off.status_code, off.get_json()["error"]["code"]) == (404, "not_enabled")


def test_settings_turn_telemetry_and_the_review_buffer_on_and_off() -> None:
    defaults = Settings.from_env({})
    assert (defaults.telemetry_window, defaults.review_prompts) == (4096, 0)  # telemetry on, texts not retained
    chosen = Settings.from_env({"RMSERVE_TELEMETRY_WINDOW": "0", "RMSERVE_REVIEW_PROMPTS": "128"})
    assert (chosen.telemetry_window, chosen.review_prompts) == (0, 128)
    with pytest.raises(ValueError, match=r"RMSERVE_TELEMETRY_WINDOW must be 0 \(off\) or positive"):
        Settings.from_env({"RMSERVE_TELEMETRY_WINDOW": "-1"})
