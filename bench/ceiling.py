"""The in-process ceiling: what ONNX Runtime alone does with the same items on the same cores.

No HTTP, no tokenizing (the items are tokenized beforehand), no queue: the best of
- serial: each request's items as one run, one run at a time, intra-op threads = the CPUs;
- parallel: each item alone, one single-threaded run per CPU side by side;
- batched: items sorted by length in runs of 16 (low padding), one single-threaded run per CPU.

Each way runs `rounds` times, the ways interleaved, and keeps its best round: a ceiling is what
the cores can do, and one round caught in a busy moment of a shared machine would flatter every
server's ratio to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rmserve.core.tokenizer import pad_batch
from rmserve.engine.session import OnnxScorer

Sequences = Sequence[list[int]]
BATCHED_ROWS = 16
ROUNDS = 3


def ceiling(
    model_path: Path, pad_id: int, requests: Sequence[Sequences], cpus: int, rounds: int = ROUNDS
) -> dict[str, float]:
    """Items per second of each way on the same items, its best of `rounds` interleaved rounds."""
    wide = OnnxScorer(model_path, intra_op_threads=cpus)
    narrow = OnnxScorer(model_path, intra_op_threads=1)
    items = [sequence for request in requests for sequence in request]
    by_length = sorted(items, key=len)
    batches = [by_length[start : start + BATCHED_ROWS] for start in range(0, len(by_length), BATCHED_ROWS)]

    def run(scorer: OnnxScorer, units: Sequence[Sequences], threads: int) -> float:
        def score(unit: Sequences) -> None:
            scorer(*pad_batch(unit, pad_id))

        score(units[0])  # warm
        started = time.perf_counter()
        if threads == 1:
            for unit in units:
                score(unit)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(score, units))
        return len(items) / (time.perf_counter() - started)

    ways: dict[str, Callable[[], float]] = {
        "serial": lambda: run(wide, requests, 1),
        "parallel": lambda: run(narrow, [[item] for item in items], cpus),
        "batched": lambda: run(narrow, batches, cpus),
    }
    best = dict.fromkeys(ways, 0.0)
    for _ in range(rounds):
        for name, way in ways.items():
            best[name] = max(best[name], way())
    return best
