"""What watching for reward hacking costs, and how often flags fire on held-out texts.

`python -m bench.watching` (from the project root) prints, for BENCHMARKS.md:
- scoring throughput of the default model in process with drift telemetry on and off, on the same
  requests, interleaved round by round (the ratio is the number; absolutes move on a shared machine),
  and the telemetry's own time per item, measured alone;
- each flag's rate on the held-out lines 1801-2312 (touched once, to report this number).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from rmserve.engine.served import ServedModel
from rmserve.training.data import LineRange, read_comparisons

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-test.jsonl.gz"
REPOSITORY = ROOT / "models" / "repository"
GROUP = 8  # responses per request, as GRPO sends a group


def pairs(lines: LineRange) -> tuple[list[str], list[str]]:
    comparisons = read_comparisons(DATA, lines)
    return [c.prompt for c in comparisons for _ in c.responses], [r for c in comparisons for r in c.responses]


def items_per_second(model: ServedModel, prompts: list[str], responses: list[str]) -> float:
    start = time.perf_counter()
    for offset in range(0, len(prompts), GROUP):
        model.score(prompts[offset : offset + GROUP], responses[offset : offset + GROUP], time.monotonic() + 300)
    return len(prompts) / (time.perf_counter() - start)


def telemetry_cost(rounds: int = 6) -> None:
    prompts, responses = pairs(LineRange(1, 200))  # training lines
    settings = Settings.from_env({}, model_repository=REPOSITORY, models=("hh-harmless",))
    on = ModelRegistry.load(settings).start()
    off = ModelRegistry.load(settings.replace(telemetry_window=0)).start()
    try:
        on_model, off_model = on.get("hh-harmless"), off.get("hh-harmless")
        items_per_second(on_model, prompts, responses)  # warm both
        items_per_second(off_model, prompts, responses)
        ratios, on_rates, off_rates = [], [], []
        for index in range(rounds):
            first, second = (on_model, off_model) if index % 2 == 0 else (off_model, on_model)
            rates = {id(first): items_per_second(first, prompts, responses)}
            rates[id(second)] = items_per_second(second, prompts, responses)
            on_rates.append(rates[id(on_model)])
            off_rates.append(rates[id(off_model)])
            ratios.append(rates[id(on_model)] / rates[id(off_model)])
        assert on_model.telemetry is not None
        telemetry = on_model.telemetry
        flags = on_model.flag_rules.columns(np.zeros(GROUP), [10] * GROUP, [False] * GROUP)
        raw, lengths, texts = np.zeros(GROUP), [10] * GROUP, responses[:GROUP]
        calls = 20_000
        start = time.perf_counter()
        for _ in range(calls):
            telemetry.observe(raw, lengths, flags, texts)
            telemetry.maybe_publish()
        per_item_us = (time.perf_counter() - start) / (calls * GROUP) * 1e6
        start = time.perf_counter()
        for _ in range(20):
            telemetry.publish()
        publish_ms = (time.perf_counter() - start) / 20 * 1e3
    finally:
        on.stop(5)
        off.stop(5)
    print(f"| telemetry on | {statistics.median(on_rates):.0f} items/s |")
    print(f"| telemetry off | {statistics.median(off_rates):.0f} items/s |")
    print(
        f"| on / off, median of {rounds} interleaved rounds | {statistics.median(ratios):.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f}) |"
    )
    print(f"| telemetry alone: observe + throttled publish | {per_item_us:.2f} us per item |")
    print(f"| one refresh of the gauges (window {telemetry.capacity}, at most once a second) | {publish_ms:.2f} ms |")


def held_out_flag_rates() -> None:
    prompts, responses = pairs(LineRange(1801, 2312))
    settings = Settings.from_env({}, model_repository=REPOSITORY, models=("hh-harmless",), telemetry_window=0)
    registry = ModelRegistry.load(settings).start()
    try:
        model = registry.get("hh-harmless")
        columns: dict[str, list[bool]] = {name: [] for name in model.flag_rules.names}
        any_flag: list[bool] = []
        for offset in range(0, len(prompts), 64):
            scored = model.score(prompts[offset : offset + 64], responses[offset : offset + 64], time.monotonic() + 300)
            for name, column in scored.flag_columns.items():
                columns[name].extend(column.tolist())
            training_flags = [set(flags) - {"truncated"} for flags in scored.flags]
            any_flag.extend(bool(flags) for flags in training_flags)
    finally:
        registry.stop(5)
    print(f"| held-out lines 1801-2312, {len(prompts)} responses | rate |")
    for name, column in columns.items():
        print(f"| {name} | {np.mean(column):.2%} |")
    print(f"| any training-range flag | {np.mean(any_flag):.2%} |")


if __name__ == "__main__":
    telemetry_cost()
    held_out_flag_rates()
