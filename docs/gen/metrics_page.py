"""The metrics page: every Prometheus metric `rmserve.metrics` declares, with its type, labels and help."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from docs.gen.tables import code, table
from rmserve import metrics

INTRO = """# Metrics

`GET /metrics` serves these in the Prometheus text format (with API keys configured, it needs a key
only when `RMSERVE_PROTECT_METRICS` is set). Under several gunicorn workers each worker writes its
own values and `/metrics` combines them: counters and histograms add up, each gauge as its
column "across workers" says. A histogram comes as the series `NAME_bucket` (one per bucket),
`NAME_sum` and `NAME_count`; counters and histograms also show `NAME_created`, the time a series
started (prometheus_client's own). A model's series exist at zero from the moment it loads.

This table is generated from `rmserve/metrics.py`, where every metric is declared once.

"""

# How prometheus_client combines a gauge over worker processes (`multiprocess_mode`).
ACROSS_WORKERS = {
    "livesum": "sum over live workers",
    "livemax": "largest of live workers",
    "livemin": "smallest of live workers",
    "livemostrecent": "the live worker that set it last",
    "max": "largest of all workers, exited ones included",
    "min": "smallest of all workers, exited ones included",
    "sum": "sum over all workers, exited ones included",
    "mostrecent": "the worker that set it last",
    "all": "one series per worker (label `pid`)",
}


def declared() -> list[MetricWrapperBase]:
    """The metrics in the order `rmserve.metrics` declares them."""
    return [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]


def family(metric: MetricWrapperBase) -> Metric:
    """The metric's name, type and help, as a scrape describes it."""
    (described,) = metric.describe()
    return described


def scraped_name(metric: MetricWrapperBase) -> str:
    """The name a scrape shows: a counter's ends in `_total` (a histogram's series add `_bucket`, `_sum`, `_count`)."""
    return code(f"{family(metric).name}_total" if isinstance(metric, Counter) else family(metric).name)


def combined(metric: MetricWrapperBase) -> str:
    if isinstance(metric, Gauge):
        return ACROSS_WORKERS[metric._multiprocess_mode]
    return "sum over workers"


def help_text(metric: MetricWrapperBase) -> str:
    documentation = family(metric).documentation
    if isinstance(metric, Histogram):
        bounds = ", ".join(f"{bound:g}" for bound in metric._upper_bounds[:-1])  # the last is +Inf
        return f"{documentation} Buckets: {bounds}."
    return documentation


def render() -> str:
    rows = [
        (
            scraped_name(metric),
            family(metric).type,
            ", ".join(code(label) for label in metric._labelnames) or "none",
            combined(metric),
            help_text(metric),
        )
        for metric in declared()
    ]
    return INTRO + table(("metric", "type", "labels", "across workers", "what it measures"), rows)
