"""What serving an ensemble costs next to one of its members, in process.

`python -m bench.ensemble [MEMBER ...]` (from the project root; default: the two committed models,
hh-harmless and hh-harmless-int8) builds a scratch repository of links to the members plus an
`ensemble.json` calibrated by `rmserve ensemble` on training lines 1-1800, then scores the same
GRPO-sized requests (8 responses to a prompt, training lines 1-200) with the first member alone and
with the ensemble, interleaved round by round (the ratio is the number; absolutes move on a shared
machine). It prints, for docs/benchmarks.md, the calibration's disagreement quantiles and both rates.
Held-out data is not read.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.in_process import DATA, DEADLINE_S, GROUP, REPOSITORY, serving
from bench.texts import prompt_of
from rmserve.config import Settings
from rmserve.engine.servable import Servable
from rmserve.protocols.inputs import Limits, group_exchanges
from rmserve.training.data import LineRange, read_comparisons
from rmserve.training.ensemble_build import build_ensemble

MEMBERS = ("hh-harmless", "hh-harmless-int8")
ENSEMBLE = "bench-ensemble"
ROUNDS = 6


def items_per_second(model: Servable, groups: list[tuple[str, list[str]]], settings: Settings) -> float:
    limits = Limits(settings.max_items, settings.max_text_chars)
    start = time.perf_counter()
    for prompt, responses in groups:
        model.score(group_exchanges(prompt, responses, model.input_format, limits), time.monotonic() + DEADLINE_S)
    return sum(len(responses) for _, responses in groups) / (time.perf_counter() - start)


def main(members: tuple[str, ...] = MEMBERS) -> None:
    comparisons = read_comparisons(DATA, LineRange(1, 200))
    responses = [(prompt_of(c), r) for c in comparisons for r in c.responses]
    groups = [
        (responses[start][0], [response for _, response in responses[start : start + GROUP]])
        for start in range(0, len(responses), GROUP)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch)
        for member in members:
            (repository / member).symlink_to(REPOSITORY / member)
        spec = build_ensemble(repository, ENSEMBLE, members, 1.0, "conservative", (DATA, LineRange(1, 1800)))
        settings = Settings.from_env({}, model_repository=repository, models=(ENSEMBLE,))
        with serving(settings) as registry:
            single, ensemble = registry.get(members[0]), registry.get(ENSEMBLE)
            items_per_second(single, groups, settings)  # warm both
            items_per_second(ensemble, groups, settings)
            single_rates, ensemble_rates, ratios = [], [], []
            for index in range(ROUNDS):
                order = (single, ensemble) if index % 2 == 0 else (ensemble, single)
                rates = {model.name: items_per_second(model, groups, settings) for model in order}
                single_rates.append(rates[single.name])
                ensemble_rates.append(rates[ENSEMBLE])
                ratios.append(rates[ENSEMBLE] / rates[single.name])
    assert spec.disagreement is not None
    quantiles = spec.disagreement
    print(
        f"| calibration std across {', '.join(members)} (lines 1-1800) | p50 {quantiles.p50:.4f}, "
        f"p99 {quantiles.p99:.4f}, max {quantiles.max:.4f} |"
    )
    print(f"| {members[0]} alone | {statistics.median(single_rates):.0f} items/s |")
    print(f"| the ensemble of {len(members)} | {statistics.median(ensemble_rates):.0f} items/s |")
    print(
        f"| ensemble / alone, median of {ROUNDS} interleaved rounds | {statistics.median(ratios):.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f}) |"
    )


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or MEMBERS)
