"""Every Prometheus metric, declared once. Correct under several gunicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set (rmserve.gunicorn_conf does it), each worker writes its
values to files there and `/metrics` aggregates them; gauges declare how to combine.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
RATIO_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SCORE_BUCKETS = (-4.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0)

REQUESTS = Counter("rmserve_requests_total", "HTTP requests by endpoint and status.", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "rmserve_request_duration_seconds", "HTTP request latency.", ["endpoint"], buckets=LATENCY_BUCKETS
)
QUEUE_ITEMS = Gauge("rmserve_queue_items", "Items waiting to be scored.", ["model"], multiprocess_mode="livesum")
QUEUE_TOKENS = Gauge("rmserve_queue_tokens", "Tokens waiting to be scored.", ["model"], multiprocess_mode="livesum")
QUEUE_WAIT_SECONDS = Histogram(
    "rmserve_queue_wait_seconds", "Time an item waits before its batch runs.", ["model"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("rmserve_batch_size", "Items per inference call.", ["model"], buckets=BATCH_SIZE_BUCKETS)
BATCH_PADDED_TOKENS = Histogram(
    "rmserve_batch_padded_tokens", "Padded tokens (rows x width) per inference call.", ["model"], buckets=TOKEN_BUCKETS
)
PADDING_EFFICIENCY = Histogram(
    "rmserve_padding_efficiency", "Real tokens / padded tokens per inference call.", ["model"], buckets=RATIO_BUCKETS
)
INFERENCE_SECONDS = Histogram(
    "rmserve_inference_seconds", "ONNX Runtime time per inference call.", ["model"], buckets=LATENCY_BUCKETS
)
ITEMS_SCORED = Counter("rmserve_items_scored_total", "Items scored.", ["model"])
TOKENS_SCORED = Counter("rmserve_tokens_scored_total", "Real (unpadded) tokens scored.", ["model"])
SCORES = Histogram("rmserve_score", "Distribution of normalized scores served.", ["model"], buckets=SCORE_BUCKETS)
TRUNCATIONS = Counter("rmserve_truncations_total", "Items cut to the model's max_length.", ["model"])
FAILURES = Counter("rmserve_failures_total", "Failed requests, by reason (the error code).", ["reason"])
UNFINISHED_REQUESTS = Counter(
    "rmserve_unfinished_requests_total",
    "Requests whose connection closed before they were received whole: too slow (header_timeout, body_timeout: "
    "answered 408) or the client left mid-request (client_closed).",
    ["reason"],
)
ITEMS_FAILED = Counter("rmserve_items_failed_total", "Accepted items never scored, by reason.", ["model", "reason"])
BATCHER_RESTARTS = Counter(
    "rmserve_batcher_restarts_total", "Crashes of a model's batcher loop, each followed by a restart.", ["model"]
)
REPOSITORY_REFUSED = Gauge(
    "rmserve_repository_refused",
    "Repository entries refused at load (value 1): a version that fails verification (invalid_version), "
    "a model with no valid version (no_valid_version), an ensemble with a bad ensemble.json or a member that is "
    "missing, unloadable or an ensemble (invalid_ensemble), a directory that is not a model (not_a_model).",
    ["entry", "reason"],
    multiprocess_mode="max",
)
MODEL_INFO = Gauge(
    "rmserve_model_info",
    "Loaded model versions (value 1); an ensemble's version is `ensemble`, its sha256 that of ensemble.json.",
    ["model", "version", "sha256"],
    multiprocess_mode="max",
)
# Drift telemetry (rmserve.engine.telemetry): each worker keeps its own rolling window of the items
# it scored, a sample of the same traffic. Rates, which alerts compare with a ceiling, show the worst
# live worker (livemax); signed summaries show the worker that refreshed last (livemostrecent),
# since the max of several workers' medians or correlations is biased; item counts add up (livesum).
WINDOW_ITEMS = Gauge(
    "rmserve_window_items",
    "Items in the drift-telemetry windows, summed over workers.",
    ["model"],
    multiprocess_mode="livesum",
)
WINDOW_SCORE = Gauge(
    "rmserve_window_score",
    "Normalized score quantiles over the rolling window.",
    ["model", "quantile"],
    multiprocess_mode="livemostrecent",
)
WINDOW_LENGTH_SCORE_CORRELATION = Gauge(
    "rmserve_window_length_score_correlation",
    "Spearman rank correlation of response length (tokens) and score over the rolling window.",
    ["model"],
    multiprocess_mode="livemostrecent",
)
WINDOW_FLAG_RATE = Gauge(
    "rmserve_window_flag_rate",
    "Share of the rolling window's items that raised each flag.",
    ["model", "flag"],
    multiprocess_mode="livemax",
)
WINDOW_DUPLICATE_RATE = Gauge(
    "rmserve_window_duplicate_rate",
    "Share of the rolling window's items whose response text already came earlier in the window.",
    ["model"],
    multiprocess_mode="livemax",
)
WINDOW_SCORE_DRIFT = Gauge(
    "rmserve_window_score_drift",
    "Served raw scores against the training responses': median_shift and p99_shift in training-std units, "
    "ks the largest gap between the two cumulative distributions at the stored training quantiles.",
    ["model", "statistic"],
    multiprocess_mode="livemostrecent",
)
# An ensemble's mean disagreement is this over rmserve_window_items: both add up over workers, so the
# ratio is the mean over every worker's window, exactly (a max or most recent of means would not be).
WINDOW_TOTAL_DISAGREEMENT = Gauge(
    "rmserve_window_total_disagreement",
    "An ensemble's std across members, summed over the items of the rolling windows (divide by "
    "rmserve_window_items for the mean disagreement).",
    ["model"],
    multiprocess_mode="livesum",
)
# The label store (rmserve.labels) is shared by every worker and replica: its counts are the database's, set by
# the worker that changed it last (livemostrecent); answers count per worker and add up.
LABEL_TASKS = Gauge(
    "rmserve_label_tasks",
    "Label-store tasks by state: queued (waiting for a labeller), leased (someone is ordering it), done.",
    ["state"],
    multiprocess_mode="livemostrecent",
)
LABEL_ANSWERS = Counter(
    "rmserve_label_answers_total",
    "Answers saved at /label, by outcome: ordered or skipped; rate() * 3600 is orderings per hour.",
    ["outcome"],
)
LABEL_REVIEW_DROPPED = Counter(
    "rmserve_label_review_dropped_total",
    "Review groups not sent to the label store: too many waiting (full) or the store failed (error).",
    ["reason"],
)
READY = Gauge("rmserve_ready", "1 when models are loaded and warmed, 0 while draining.", multiprocess_mode="livemin")


def exposition(multiprocess_dir: Path | None) -> tuple[bytes, str]:
    """The text `/metrics` serves: this process alone, or every worker in multiprocess mode."""
    if multiprocess_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def register_model(name: str, version: int, sha256: str) -> None:
    """Create a model's series at zero when it loads, so the first real increment shows in rate()."""
    for metric in (
        QUEUE_ITEMS,
        QUEUE_TOKENS,
        QUEUE_WAIT_SECONDS,
        BATCH_SIZE,
        BATCH_PADDED_TOKENS,
        PADDING_EFFICIENCY,
        INFERENCE_SECONDS,
        ITEMS_SCORED,
        TOKENS_SCORED,
        SCORES,
        TRUNCATIONS,
        BATCHER_RESTARTS,
    ):
        metric.labels(name)
    for reason in ("deadline_exceeded", "cancelled", "inference_failed", "non_finite", "batcher_crashed"):
        ITEMS_FAILED.labels(name, reason)
    MODEL_INFO.labels(name, str(version), sha256).set(1)


def register_ensemble(name: str, sha256: str) -> None:
    """An ensemble's series: its score histogram at zero, and its info line (version "ensemble", sha256 of its file)."""
    SCORES.labels(name)
    MODEL_INFO.labels(name, "ensemble", sha256).set(1)
