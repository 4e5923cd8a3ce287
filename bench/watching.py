"""What watching for reward hacking costs on its own, and how often each flag fires on held-out texts.

`python -m bench.watching` (from the project root) prints, for docs/benchmarks.md:
- the drift telemetry's own time, measured alone on hh-harmless: observing a GRPO group of real
  scores and flags, per item, and one refresh of the gauges. What telemetry costs end to end is
  `make bench`'s "rmserve, telemetry off" variant over HTTP, beside rmserve point by point; this
  module no longer measures throughput;
- each flag's rate over every response of the held-out lines 1801-2312, for every model and
  ensemble the repository serves by default, and the rate of any flag but `truncated` (read once,
  to report them; nothing is tuned on them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.in_process import DATA, DEADLINE_S, GROUP, REPOSITORY, serving
from bench.texts import prompt_of
from rmserve.config import Settings
from rmserve.core.conversation import Exchange
from rmserve.engine.flags import TRUNCATED
from rmserve.engine.servable import Servable
from rmserve.protocols.inputs import Limits, group_exchanges
from rmserve.training.data import LineRange, read_comparisons

HELD_OUT = LineRange(1801, 2312)
TIMING_LINES = LineRange(1, 4)  # training lines: their 8 responses are the group the telemetry observes
MODEL = "hh-harmless"
CHUNK = 64  # responses per scoring call (flags do not depend on how items are grouped)
NOT_CHECKED = "-"


@dataclass(frozen=True)
class FlagRates:
    """How often one served model's flags fired over the responses of a preference file."""

    responses: int
    rates: dict[str, float]  # flag -> share of responses raising it, for every flag the model checks
    any_but_truncated: float  # share of responses raising any flag other than `truncated`


@dataclass(frozen=True)
class TelemetryCost:
    """The drift telemetry's own time, without scoring around it."""

    per_item_us: float  # observe + throttled publish, per item of a GRPO group
    publish_ms: float  # one refresh of the gauges over a full window
    window: int  # items in the window


def response_exchanges(model: Servable, data: Path, lines: LineRange | None, settings: Settings) -> list[Exchange]:
    """Every response of the file's comparisons with its own prompt, as `/v1/score`'s group form reads them."""
    input_format = model.input_format
    limits = Limits(settings.max_items, settings.max_text_chars)
    return [
        exchange
        for comparison in read_comparisons(data, lines, input_format.layouts)
        for exchange in group_exchanges(prompt_of(comparison), comparison.responses, input_format, limits)
    ]


def flag_rates(model: Servable, exchanges: Sequence[Exchange]) -> FlagRates:
    """Score every exchange through the served path and count each flag the model checks."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in model.flag_names}
    for start in range(0, len(exchanges), CHUNK):
        scored = model.score(exchanges[start : start + CHUNK], time.monotonic() + DEADLINE_S)
        for name, column in scored.flag_columns.items():
            parts[name].append(column)
    columns = {name: np.concatenate(chunks) for name, chunks in parts.items()}  # flag -> bool [responses]
    beyond_truncation = np.any([column for name, column in columns.items() if name != TRUNCATED], axis=0)
    return FlagRates(
        len(exchanges),
        {name: float(column.mean()) for name, column in columns.items()},
        float(beyond_truncation.mean()),
    )


def held_out_flag_rates(repository: Path, data: Path, lines: LineRange | None = HELD_OUT) -> dict[str, FlagRates]:
    """Each flag's rate over every response of `lines`, for every model and ensemble `repository` serves by default."""
    settings = Settings.from_env({}, model_repository=repository, telemetry_window=0)
    with serving(settings) as registry:
        return {
            name: flag_rates(model, response_exchanges(model, data, lines, settings))
            for name, model in registry.models.items()
        }


def telemetry_cost(
    repository: Path, model_name: str, data: Path, lines: LineRange | None = TIMING_LINES, calls: int = 20_000
) -> TelemetryCost:
    """Time the telemetry of `model_name` alone: `calls` observations of one scored group, then gauge refreshes."""
    settings = Settings.from_env({}, model_repository=repository, models=(model_name,))
    with serving(settings) as registry:
        model = registry.get(model_name)
        exchanges = response_exchanges(model, data, lines, settings)[:GROUP]
        scored = model.score(exchanges, time.monotonic() + DEADLINE_S)
    telemetry = model.telemetry
    assert telemetry is not None, "telemetry is on by default"
    responses = [exchange.response for exchange in exchanges]
    disagreement = None if scored.ensemble is None else scored.ensemble.std
    start = time.perf_counter()
    for _ in range(calls):
        telemetry.observe(scored.raw_scores, scored.response_tokens, scored.flag_columns, responses, disagreement)
        telemetry.maybe_publish()
    per_item_us = (time.perf_counter() - start) / (calls * len(exchanges)) * 1e6
    refreshes = 20
    start = time.perf_counter()
    for _ in range(refreshes):
        telemetry.publish()
    publish_ms = (time.perf_counter() - start) / refreshes * 1e3
    return TelemetryCost(per_item_us, publish_ms, telemetry.capacity)


def rates_table(rates: dict[str, FlagRates]) -> str:
    """One column per model, one row per flag any of them checks (`-` where a model does not check it)."""
    flags = list(dict.fromkeys(flag for model in rates.values() for flag in model.rates))
    rows = [
        f"| flag | {' | '.join(rates)} |",
        f"|---|{'---|' * len(rates)}",
        f"| responses | {' | '.join(str(model.responses) for model in rates.values())} |",
    ]
    for flag in flags:
        cells = (percent(model.rates[flag]) if flag in model.rates else NOT_CHECKED for model in rates.values())
        rows.append(f"| `{flag}` | {' | '.join(cells)} |")
    rows.append(f"| any flag but `truncated` | {' | '.join(percent(m.any_but_truncated) for m in rates.values())} |")
    return "\n".join(rows)


def cost_table(cost: TelemetryCost, model_name: str) -> str:
    return "\n".join(
        [
            "| | |",
            "|---|---|",
            f"| {model_name}'s telemetry alone: observe + throttled publish | {cost.per_item_us:.2f} µs per item |",
            f"| one refresh of the gauges (window {cost.window}) | {cost.publish_ms:.2f} ms |",
        ]
    )


def percent(share: float) -> str:
    return f"{100 * share:.2f} %"


if __name__ == "__main__":
    print(cost_table(telemetry_cost(REPOSITORY, MODEL, DATA), MODEL))
    print()
    print(f"Held-out lines {HELD_OUT.first}-{HELD_OUT.last}, every response:\n")
    print(rates_table(held_out_flag_rates(REPOSITORY, DATA)))
