"""Where a one-item request's time goes, step by step (`python -m bench.request_cost`; BENCHMARKS.md).

Each step of the request path is timed on its own over the same held-out items, in this process,
with Prometheus in multiprocess mode as under gunicorn. The model's run is shown for scale.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="rmserve-cost-"))  # before metrics load

import orjson

from rmserve import metrics
from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.core.tokenizer import pad_batch
from rmserve.protocols.native import ScoreRequest, request_exchanges, score_answer
from rmserve.protocols.schemas import parse
from rmserve.training.data import LineRange, read_comparisons

DATA = Path("../shared/data/hh-rlhf-harmless-test.jsonl.gz")
REPEATS = 1000


def per_call_us(step: Callable[[int], Any], count: int) -> float:
    for index in range(min(count, 50)):
        step(index)
    started = time.perf_counter()
    for index in range(REPEATS):
        step(index % count)
    return (time.perf_counter() - started) / REPEATS * 1e6


def main() -> int:
    settings = Settings.from_env(
        {}, model_repository=Path("models/repository"), models=("hh-harmless",), executors=1, inference_threads=1
    )
    app = create_app(settings)
    client = app.test_client()
    model = app.extensions["rmserve"].registry.get(None)
    comparisons = read_comparisons(DATA, LineRange(1801, 2000), model.version.format.transcript)
    raw_bodies = [
        json.dumps({"items": [{"prompt": comparison.prompt, "response": comparison.responses[0]}]}).encode()
        for comparison in comparisons
    ]
    count = len(raw_bodies)
    decoded = [orjson.loads(body) for body in raw_bodies]
    parsed = [parse(ScoreRequest, body).root for body in decoded]
    exchanges = [request_exchanges(body, model.version.format, settings) for body in parsed]
    input_format = model.version.format
    encodings = [input_format.encode(items) for items in exchanges]
    padded = [pad_batch([encoding[0].input_ids], model.version.manifest.tokens.pad_id) for encoding in encodings]
    scored = model.score(exchanges[0], time.monotonic() + 60)
    answer = score_answer(model.name, 1, scored, "request-id").model_dump()
    histogram = metrics.SCORES.labels(model.name)

    def fresh_prompt(index: int) -> None:
        model.version.format.encoder.tokenizer.encode(comparisons[index].prompt, add_special_tokens=False)

    def future_round_trip(index: int) -> None:
        future: Future[float] = Future()
        future.set_running_or_notify_cancel()
        future.set_result(1.0)
        future.result()

    steps: list[tuple[str, Callable[[int], Any]]] = [
        ("JSON decode, stdlib json", lambda i: json.loads(raw_bodies[i])),
        ("JSON decode, orjson (served)", lambda i: orjson.loads(raw_bodies[i])),
        ("validation (pydantic)", lambda i: parse(ScoreRequest, decoded[i])),
        ("exchanges and limits", lambda i: request_exchanges(parsed[i], model.version.format, settings)),
        ("tokenize a prompt not seen before", fresh_prompt),
        (
            "tokenize prompt (cached) + response (served)",
            lambda i: input_format.encode(exchanges[i]),
        ),
        ("future: create, resolve, wait", future_round_trip),
        ("one histogram observation (multiprocess)", lambda i: histogram.observe(0.5)),
        ("answer object (pydantic model_dump)", lambda i: score_answer(model.name, 1, scored, "id").model_dump()),
        ("JSON encode answer, stdlib json", lambda i: json.dumps(answer)),
        ("JSON encode answer, orjson (served)", lambda i: orjson.dumps(answer)),
        ("ONNX Runtime run, 1 item, 1 thread (for scale)", lambda i: model.version.scorer(*padded[i])),
        (
            "engine: tokenize + queue + run + wait (ServedModel.score)",
            lambda i: model.score(exchanges[i], time.monotonic() + 60),
        ),
        (
            "whole request, Flask test client (no sockets, no gunicorn)",
            lambda i: client.post("/v1/score", data=raw_bodies[i], content_type="application/json"),
        ),
    ]
    print("| step | µs per request |\n|---|---|")
    for label, step in steps:
        print(f"| {label} | {per_call_us(step, count):.1f} |")
    app.extensions["rmserve"].registry.stop(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
