"""Drift telemetry: a rolling window of the last items one model scored in this process.

`ServedModel.score` feeds it whole requests. A request's columns are only queued (a list
append: a one-sample request must not pay a dozen numpy calls); every `FOLD_ITEMS` items, and
before any summary, the queue is folded into the ring buffer in one vectorised write, so memory
stays bounded by the window plus `FOLD_ITEMS`. Summaries (quantiles, the
length-score rank correlation, flag and duplicate rates, the distance from training's score
distribution, an ensemble's mean disagreement) are computed when read: by
`GET /v1/models/<name>/stats`, at a `/metrics` scrape, and at most once per
`PUBLISH_INTERVAL_S` after scoring, for the Prometheus gauges.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rmserve import metrics
from rmserve.core.manifest import Manifest, Normalization, TrainingStats

# Fewer items than this in the window: correlation and drift are unknown, not noise passed off as signal.
MIN_ITEMS = 30
FOLD_ITEMS = 256  # queued items folded into the window at once
PUBLISH_INTERVAL_S = 1.0
SCORE_QUANTILES = {"p01": 0.01, "p05": 0.05, "p50": 0.5, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class Drift:
    """How far the window's raw scores moved from the training responses', in training-std units."""

    median_shift: float  # (served median - training median) / training std
    p99_shift: float  # (served p99 - training p99) / training std
    ks: float  # max over training quantiles q_p of |share of served scores <= q_p - p|, 0..1


@dataclass(frozen=True)
class WindowSummary:
    capacity: int
    items: int  # in the window now
    scored: int  # since the process started
    score_quantiles: dict[str, float] | None  # normalized scores
    length_score_correlation: float | None  # Spearman, response length in tokens vs score
    flag_rates: dict[str, float]
    duplicate_rate: float  # share of the window's items whose response text came earlier in the window
    drift: Drift | None  # None without the manifest's training statistics
    mean_disagreement: float | None = None  # an ensemble's mean std across members; None for a single model


class Telemetry:
    """The window of one model in one process; thread-safe (request threads feed it)."""

    def __init__(
        self,
        model: str,
        capacity: int,
        flag_names: Sequence[str],
        normalization: Normalization,
        stats: TrainingStats | None,
        disagreement: bool = False,
    ):
        self.model = model
        self.capacity = capacity
        self.flag_names = tuple(flag_names)
        self.normalization = normalization
        self.stats = stats
        self._raw = np.zeros(capacity, dtype=np.float64)
        self._lengths = np.zeros(capacity, dtype=np.int64)
        self._flags = np.zeros((capacity, len(self.flag_names)), dtype=bool)
        # An ensemble's std across members per item; None for a single model.
        self._disagreement = np.zeros(capacity, dtype=np.float64) if disagreement else None
        self._digests: list[int] = [0] * capacity
        self._seen: dict[int, int] = {}  # response digest -> occurrences in the window
        self._cursor = 0
        self._items = 0
        self._scored = 0
        self._published = -math.inf
        self._lock = threading.Lock()
        # Requests observed but not yet in the window: (raw, lengths, flag columns, digests, disagreement).
        self._queued: list[tuple[np.ndarray, Sequence[int], list[np.ndarray], list[int], np.ndarray | None]] = []
        self._queued_items = 0

    def observe(
        self,
        raw_scores: np.ndarray,
        response_tokens: Sequence[int],
        flag_columns: Mapping[str, np.ndarray],
        responses: Sequence[str],
        disagreement: np.ndarray | None = None,
    ) -> None:
        """Add one request's items (all [items], in request order); the oldest items leave the window."""
        columns = [flag_columns[name] for name in self.flag_names]
        digests = [hash(response) for response in responses]
        with self._lock:
            self._queued.append((raw_scores, response_tokens, columns, digests, disagreement))
            self._queued_items += len(digests)
            if self._queued_items >= FOLD_ITEMS:
                self._fold()

    def _fold(self) -> None:
        """Write the queued requests into the ring buffer (caller holds the lock)."""
        if not self._queued:
            return
        queued, self._queued, self._queued_items = self._queued, [], 0
        raw_scores = np.concatenate([entry[0] for entry in queued])
        total = len(raw_scores)
        keep = slice(max(0, total - self.capacity), None)  # more than the window: its last items
        lengths = np.concatenate([np.asarray(entry[1], dtype=np.int64) for entry in queued])[keep]
        flags = np.column_stack(
            [np.concatenate([entry[2][index] for entry in queued]) for index in range(len(self.flag_names))]
        )[keep]  # [items, flags]
        digests = [digest for entry in queued for digest in entry[3]][keep]
        positions = (self._cursor + np.arange(len(digests))) % self.capacity
        self._raw[positions] = raw_scores[keep]
        self._lengths[positions] = lengths
        self._flags[positions] = flags
        if self._disagreement is not None:
            # A request without disagreement (never an ensemble's) leaves those positions as they were.
            disagreement = np.concatenate(
                [entry[4] if entry[4] is not None else np.full(len(entry[3]), np.nan) for entry in queued]
            )[keep]
            known = ~np.isnan(disagreement)
            self._disagreement[positions[known]] = disagreement[known]
        seen = self._seen
        for position, digest in zip(positions.tolist(), digests, strict=True):
            if self._items == self.capacity:
                evicted = self._digests[position]
                remaining = seen[evicted] - 1
                if remaining:
                    seen[evicted] = remaining
                else:
                    del seen[evicted]
            else:
                self._items += 1
            self._digests[position] = digest
            seen[digest] = seen.get(digest, 0) + 1
        self._cursor = (self._cursor + len(digests)) % self.capacity
        self._scored += total

    def summary(self) -> WindowSummary:
        with self._lock:
            self._fold()
            items = self._items
            raw, lengths, flags = self._raw[:items].copy(), self._lengths[:items].copy(), self._flags[:items].copy()
            distinct, scored = len(self._seen), self._scored
            disagreement = None if self._disagreement is None else self._disagreement[:items].copy()
        flag_rates = {
            name: float(flags[:, index].mean()) if items else 0.0 for index, name in enumerate(self.flag_names)
        }
        enough = items >= MIN_ITEMS
        quantiles = None
        if items:
            points = np.quantile(
                (raw - self.normalization.mean) / self.normalization.std, list(SCORE_QUANTILES.values())
            )
            quantiles = dict(zip(SCORE_QUANTILES, points.tolist(), strict=True))
        return WindowSummary(
            capacity=self.capacity,
            items=items,
            scored=scored,
            score_quantiles=quantiles,
            length_score_correlation=rank_correlation(lengths, raw) if enough else None,
            flag_rates=flag_rates,
            duplicate_rate=1.0 - distinct / items if items else 0.0,
            drift=self._drift(raw) if enough and self.stats is not None else None,
            mean_disagreement=float(disagreement.mean()) if disagreement is not None and items else None,
        )

    def _drift(self, raw: np.ndarray) -> Drift:
        assert self.stats is not None
        training, std = self.stats.raw_score, self.normalization.std
        served_p50, served_p99 = np.quantile(raw, [0.5, 0.99]).tolist()
        interior = [(p, value) for p, value in training.grid() if 0.0 < p < 1.0]
        ks = max(abs(float(np.mean(raw <= value)) - p) for p, value in interior)
        return Drift((served_p50 - training.p50) / std, (served_p99 - training.p99) / std, ks)

    def maybe_publish(self, now: float | None = None) -> None:
        """Refresh the gauges if the last refresh is older than PUBLISH_INTERVAL_S."""
        now = time.monotonic() if now is None else now
        if now - self._published >= PUBLISH_INTERVAL_S:
            self._published = now
            self.publish()

    def publish(self) -> None:
        """Set this process's gauges from a fresh summary (NaN where a value is unknown)."""
        summary = self.summary()
        model = self.model
        metrics.WINDOW_ITEMS.labels(model).set(summary.items)
        for name, value in (summary.score_quantiles or dict.fromkeys(SCORE_QUANTILES, math.nan)).items():
            metrics.WINDOW_SCORE.labels(model, name).set(value)
        correlation = summary.length_score_correlation
        metrics.WINDOW_LENGTH_SCORE_CORRELATION.labels(model).set(math.nan if correlation is None else correlation)
        for name, rate in summary.flag_rates.items():
            metrics.WINDOW_FLAG_RATE.labels(model, name).set(rate)
        metrics.WINDOW_DUPLICATE_RATE.labels(model).set(summary.duplicate_rate)
        if summary.mean_disagreement is not None:
            metrics.WINDOW_TOTAL_DISAGREEMENT.labels(model).set(summary.mean_disagreement * summary.items)
        if summary.drift is not None:
            for statistic in ("median_shift", "p99_shift", "ks"):
                metrics.WINDOW_SCORE_DRIFT.labels(model, statistic).set(getattr(summary.drift, statistic))


def telemetry_for(manifest: Manifest, flag_names: Sequence[str], capacity: int) -> Telemetry | None:
    """The window of one model version, or None when telemetry is off (capacity 0)."""
    if not capacity:
        return None
    return Telemetry(manifest.name, capacity, flag_names, manifest.normalization, manifest.training_stats)


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho with average ranks for ties; None when either side is constant."""
    rank_x, rank_y = average_ranks(x), average_ranks(y)
    spread = rank_x.std() * rank_y.std()
    if spread == 0.0:
        return None
    return float(np.mean((rank_x - rank_x.mean()) * (rank_y - rank_y.mean())) / spread)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]
