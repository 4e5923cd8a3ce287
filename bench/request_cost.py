"""Where a one-item request's time goes, step by step (`python -m bench.request_cost`; docs/benchmarks.md).

Each step of the request path is timed on its own over the same held-out items, in this process,
with Prometheus in multiprocess mode as under gunicorn. The model's run is shown for scale. Where a
step was made cheaper, the way it was done before is timed beside it ("before"). Last, whole
requests go through the WSGI app one at a time, and the CPU they take is split into the request
thread's and everything else's (the executor's run, tokenizers' threads).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="rmserve-cost-"))  # before metrics load
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as rmserve/gunicorn_conf.py serves

import orjson

from bench.texts import prompt_of
from rmserve import metrics
from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.core.tokenizer import pad_batch
from rmserve.http.middleware import ACCESS_LOG
from rmserve.http.scan import MAX_DEPTH, MAX_NUMBER_DIGITS, check_exactly, check_shape
from rmserve.protocols.inputs import Limits
from rmserve.protocols.native import ScoreRequest, request_exchanges, score_answer
from rmserve.protocols.schemas import parse
from rmserve.training.data import LineRange, read_comparisons

DATA = Path("../shared/data/hh-rlhf-harmless-test.jsonl.gz")
REPEATS = 1000


def per_call_us(step: Callable[[int], Any], count: int) -> tuple[float, float]:
    """(wall, CPU of every thread of this process) µs per call; the CPU counts tokenizers' pool threads too."""
    for index in range(min(count, 50)):
        step(index)
    started, cpu = time.perf_counter(), time.process_time()
    for index in range(REPEATS):
        step(index % count)
    return (time.perf_counter() - started) / REPEATS * 1e6, (time.process_time() - cpu) / REPEATS * 1e6


def main() -> int:
    settings = Settings.from_env(
        {}, model_repository=Path("models"), models=("hh-harmless",), executors=1, inference_threads=1
    )
    app = create_app(settings)
    client = app.test_client()
    model = app.extensions["rmserve"].registry.get(None)
    comparisons = read_comparisons(DATA, LineRange(1801, 2000), model.version.format.layouts)
    raw_bodies = [
        json.dumps({"items": [{"prompt": prompt_of(comparison), "response": comparison.responses[0]}]}).encode()
        for comparison in comparisons
    ]
    count = len(raw_bodies)
    decoded = [orjson.loads(body) for body in raw_bodies]
    parsed = [parse(ScoreRequest, body).root for body in decoded]
    limits = Limits(settings.max_items, settings.max_text_chars)
    exchanges = [request_exchanges(body, model.version.format, limits) for body in parsed]
    input_format = model.version.format
    encodings = [input_format.encode(items) for items in exchanges]
    padded = [pad_batch([encoding[0].input_ids], model.version.manifest.tokens.pad_id) for encoding in encodings]
    scored = model.score(exchanges[0], time.monotonic() + 60)
    answer = score_answer(model.name, 1, scored, "request-id").model_dump()
    histogram = metrics.SCORES.labels(model.name)
    pairs = [(prompt_of(comparison), comparison.responses[0]) for comparison in comparisons]

    def fresh_prompt(index: int) -> None:
        model.version.format.encoder.tokenizer.encode(pairs[index][0], add_special_tokens=False)

    access_stream = logging.StreamHandler(io.StringIO())

    def access_line(index: int) -> None:
        ACCESS_LOG.info('%s "%s %s" %d %s %.6fs rid=%s', "127.0.0.1", "POST", "/v1/score", 200, 412, 0.01, "r")

    flag_columns = scored.flag_columns
    telemetry = model.telemetry
    assert telemetry is not None

    def telemetry_observe(index: int) -> None:
        telemetry.observe(scored.raw_scores, scored.response_tokens, flag_columns, [f"response {index}"])

    def future_round_trip(index: int) -> None:
        future: Future[float] = Future()
        future.set_running_or_notify_cancel()
        future.set_result(1.0)
        future.result()

    steps: list[tuple[str, Callable[[int], Any]]] = [
        ("JSON decode, stdlib json", lambda i: json.loads(raw_bodies[i])),
        ("JSON decode, orjson (served)", lambda i: orjson.loads(raw_bodies[i])),
        (
            "shape check of the raw body, exact scan (before: every body)",
            lambda i: check_exactly(raw_bodies[i], settings.max_items, MAX_DEPTH, MAX_NUMBER_DIGITS),
        ),
        ("shape check, byte counts first (served)", lambda i: check_shape(raw_bodies[i], settings.max_items)),
        ("validation (pydantic)", lambda i: parse(ScoreRequest, decoded[i])),
        ("exchanges and limits", lambda i: request_exchanges(parsed[i], model.version.format, limits)),
        ("tokenize a prompt not seen before", fresh_prompt),
        *tokenizer_steps(input_format.encoder.tokenizer, pairs),
        (
            "tokenize, prompt cached + response (served, the pair encoder)",
            lambda i: input_format.encode(exchanges[i]),
        ),
        ("future: create, resolve, wait", future_round_trip),
        ("one histogram observation (multiprocess)", lambda i: histogram.observe(0.5)),
        ("drift telemetry: observe one item (queued, folded per 256; served)", telemetry_observe),
        ("access-log line (RMSERVE_ACCESS_LOG=all; default: errors only)", access_line),
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
    ACCESS_LOG.addHandler(access_stream)
    ACCESS_LOG.propagate = False
    print("| step | µs per request | CPU µs, all threads |\n|---|---|---|")
    for label, step in steps:
        wall, cpu = per_call_us(step, count)
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |")
    ACCESS_LOG.removeHandler(access_stream)
    thread_us, process_us = request_cpu_us(app, raw_bodies)
    print(
        f"\nWhole requests through the WSGI app, one at a time: {thread_us:.0f} µs CPU on the request thread, "
        f"{process_us - thread_us:.0f} µs elsewhere (the executor's run, tokenizers' threads), per request."
    )
    app.extensions["rmserve"].registry.stop(timeout=5)
    return 0


def tokenizer_steps(tokenizer: Any, pairs: list[tuple[str, str]]) -> list[tuple[str, Callable[[int], Any]]]:
    """A request's prompt and response tokenized as before, and as served with and without tokenizers' pool."""

    def two_encode_calls(index: int) -> None:  # before: a call for the prompt, one for the response
        prompt, response = pairs[index]
        tokenizer.encode_batch([prompt], add_special_tokens=False)
        tokenizer.encode_batch([response], add_special_tokens=False)

    def one_fast_call(index: int) -> None:  # served: one call, no character offsets
        tokenizer.encode_batch_fast(list(pairs[index]), add_special_tokens=False)

    def one_fast_call_pool_on(index: int) -> None:  # the same, split across tokenizers' thread pool
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        try:
            one_fast_call(index)
        finally:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"

    return [
        ("tokenize prompt + response: two encode_batch calls (before)", two_encode_calls),
        ("tokenize prompt + response: one encode_batch_fast call, tokenizers' thread pool on", one_fast_call_pool_on),
        ("tokenize prompt + response: one encode_batch_fast call, pool off (served)", one_fast_call),
    ]


def request_cpu_us(app: Any, bodies: list[bytes], rounds: int = 2) -> tuple[float, float]:
    """CPU per request of the request thread and of the whole process, over `rounds` passes of `bodies`."""
    from werkzeug.test import EnvironBuilder

    environs = [
        EnvironBuilder(path="/v1/score", method="POST", data=body, content_type="application/json").get_environ()
        for body in bodies
    ]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    def one(environ: dict[str, Any], body: bytes) -> None:
        answer = app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
        for _ in answer:
            pass
        answer.close()

    for environ, body in zip(environs[:20], bodies, strict=False):
        one(environ, body)
    thread, process = time.thread_time(), time.process_time()
    for _ in range(rounds):
        for environ, body in zip(environs, bodies, strict=True):
            one(environ, body)
    requests = rounds * len(bodies)
    return (time.thread_time() - thread) / requests * 1e6, (time.process_time() - process) / requests * 1e6


if __name__ == "__main__":
    sys.exit(main())
