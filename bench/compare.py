"""The HTTP comparison of `rmserve bench`: every server, the same items, the same load generator, one run.

Each model is compared in turn: its servers start one at a time (cold start is measured alone),
then every (shape, concurrency) point is measured on each server in turn, the order rotating from
point to point, so drift in machine load falls on all of them alike; then they stop, before the
next model's start. Results are ratios to the model's in-process ceiling; each point also records
the CPU the server used per item and the load average, so a busy moment of a shared machine shows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from tqdm import tqdm

from bench.ceiling import ROUNDS as CEILING_ROUNDS
from bench.ceiling import ceiling
from bench.live_server import ROOT
from bench.load import drive, wrk_available
from bench.servers import Running, ServerSpec, server_specs, start, tree_cpu_seconds
from bench.texts import prompt_of, synthetic_text
from rmserve.config import usable_cpus
from rmserve.engine.version import ModelVersion
from rmserve.training.data import LineRange, read_comparisons

HELD_OUT = LineRange(1801, 2312)
WARM_S = 1.0
# Points with more items in flight are skipped: at 32 clients x 64 items each request waits
# 5 s or more on 2 cores, which measures the queue, not the server (and keeps `make bench` short).
MAX_ITEMS_IN_FLIGHT = 1024
MAX_POINT_S = 10.0
CEILING_ITEMS = 512  # items per shape the in-process ceiling runs


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    requests: list[list[tuple[str, str]]]  # each request's (prompt, response) items

    @property
    def items_per_request(self) -> float:
        return float(np.mean([len(request) for request in self.requests]))


@dataclass(frozen=True)
class Point:
    server: str
    shape: str
    concurrency: int
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    padding_efficiency: float | None
    cpu_ms_per_item: float | None  # CPU time of the server's processes over the measured seconds, per item answered
    load_average: float  # the machine's 1-minute load average when the point ended


def shapes(model: ModelVersion, data: Path, seed: int) -> list[Shape]:
    """One item per request, GRPO groups of 8-16 responses to one prompt, 64-item batches."""
    rng = np.random.default_rng(seed)
    if data.is_file():
        comparisons = read_comparisons(data, HELD_OUT, model.format.layouts)
        prompts = [prompt_of(comparison) for comparison in comparisons]
        pairs = [(prompt_of(comparison), response) for comparison in comparisons for response in comparison.responses]
    else:  # no data (tests, a fresh machine): synthetic text of natural-ish lengths
        prompts = [synthetic_text(rng, 10, 60) for _ in range(64)]
        pairs = [(prompt, synthetic_text(rng, 5, 120)) for prompt in prompts for _ in (0, 1)]
    responses = [response for _, response in pairs]
    groups = []
    for index, prompt in enumerate(prompts):
        size = 8 + index % 9
        picked = rng.choice(len(responses), size, replace=False)
        # Sampled completions: similar lengths, 20-60 words.
        groups.append([(prompt, " ".join(responses[i].split()[: int(rng.integers(20, 60))]) or "ok") for i in picked])
    order = rng.permutation(len(pairs))
    shuffled = [pairs[i] for i in order]
    batches = [shuffled[start : start + 64] for start in range(0, len(shuffled) - 63, 64)] or [shuffled]
    return [
        Shape("single", "1 item per request (OpenRLHF / veRL rollouts)", [[pair] for pair in pairs]),
        Shape("grpo", "GRPO groups: 8-16 responses (20-60 words) to one prompt per request", groups),
        Shape("batch64", "64 mixed-length items per request (batched scoring)", batches),
    ]


def rmserve_tokens(base_url: str) -> tuple[float, float]:
    """(real tokens scored, padded tokens run) so far, from rmserve's /metrics."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text

    def total(metric: str) -> float:
        return sum(float(value) for value in re.findall(rf"^{metric}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE))

    return total("rmserve_tokens_scored_total"), total("rmserve_batch_padded_tokens_sum")


def measure(server: Running, shape: Shape, bodies: Path, concurrency: int, seconds: float) -> Point:
    """Warm, wait for quiet, measure, wait for quiet (so no backlog spills into the next server's point)."""
    spec = server.spec
    drive(server.base_url, spec.score_path, bodies, concurrency, WARM_S)
    server.wait_idle()
    before = rmserve_tokens(server.base_url) if spec.rmserve_metrics else None
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            server.sample_rss()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = tree_cpu_seconds(server.process.pid)
    result = drive(server.base_url, spec.score_path, bodies, concurrency, seconds)
    cpu_seconds = tree_cpu_seconds(server.process.pid) - cpu_before
    sampling.set()
    sampler.join()
    server.wait_idle()
    efficiency = None
    if before is not None:
        after = rmserve_tokens(server.base_url)
        padded = after[1] - before[1]
        efficiency = (after[0] - before[0]) / padded if padded > 0 else None
    return Point(
        spec.name,
        shape.name,
        concurrency,
        result.items_per_second(shape.items_per_request),
        result.p50_ms,
        result.p95_ms,
        result.p99_ms,
        result.requests,
        result.non_2xx,
        result.socket_errors,
        efficiency,
        1000 * cpu_seconds / (result.requests * shape.items_per_request) if result.requests else None,
        os.getloadavg()[0],
    )


def answers(server: Running, body: str) -> str | None:
    """None if the server scores a sample body; otherwise why not."""
    try:
        response = requests.post(
            server.base_url + server.spec.score_path,
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    except requests.RequestException as error:
        return f"request failed: {error}"
    return None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"


@dataclass(frozen=True)
class Plan:
    """What every model of a comparison is measured with."""

    repository: Path
    data: Path  # the HH file the texts come from
    servers: Sequence[str] | None  # None: every server
    concurrencies: Sequence[int]
    seconds: float  # measured per point, at least
    seed: int


def compare(models: Sequence[ModelVersion], plan: Plan) -> dict[str, Any]:
    """Run the whole comparison, one model after another; the result is what bench/results/*.json holds."""
    if not wrk_available():
        raise RuntimeError("the HTTP comparison needs wrk (apt-get install wrk; .ci/install-tools.sh installs it)")
    cpus = usable_cpus()
    load_before = os.getloadavg()
    started = time.monotonic()
    sections = {model.name: compare_model(model, plan, cpus) for model in models}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {
            "usable_cpus": cpus,
            "cpu_model": _cpu_model(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "minutes": round((time.monotonic() - started) / 60, 1),
        "seconds_per_point": plan.seconds,
        "concurrencies": list(plan.concurrencies),
        "ceiling_rounds": CEILING_ROUNDS,
        "models": sections,
    }


def compare_model(model: ModelVersion, plan: Plan, cpus: int) -> dict[str, Any]:
    """One model's part of the comparison: its ceilings, then its servers side by side."""
    load_before = os.getloadavg()
    workload = shapes(model, plan.data, plan.seed)
    pad_id = model.manifest.tokens.pad_id
    ceilings = {}
    for shape in workload:
        requests_run = shape.requests[: max(1, round(CEILING_ITEMS / shape.items_per_request))]
        tokenized = [
            [encoding.input_ids for encoding in model.format.encode_texts(*zip(*request, strict=True))]
            for request in requests_run
        ]
        ceilings[shape.name] = ceiling(model.directory / "model.onnx", pad_id, tokenized, cpus)
    specs = [
        spec
        for spec in server_specs(plan.repository, model.name, cpus)
        if plan.servers is None or spec.name in plan.servers
    ]
    running: list[Running] = []
    failed: dict[str, str] = {}
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="rmserve-bench-") as scratch:
        scratch_dir = Path(scratch)
        try:
            for spec in specs:
                why = _start_checked(spec, scratch_dir, workload[0], running)
                if why:
                    failed[spec.name] = why
            bodies = {
                (server.spec.name, shape.name): _bodies_file(scratch_dir, server.spec, shape)
                for server in running
                for shape in workload
                if server.spec.measures(shape.name)
            }
            schedule = [
                (shape, concurrency)
                for shape in workload
                for concurrency in plan.concurrencies
                if concurrency * shape.items_per_request <= MAX_ITEMS_IN_FLIGHT
            ]
            total = sum(server.spec.measures(shape.name) for shape, _ in schedule for server in running)
            progress = tqdm(total=total, desc=f"HTTP points, {model.name}", unit="point", file=sys.stderr)
            for turn, (shape, concurrency) in enumerate(schedule):
                # Long enough for every client to see several answers at the ceiling's pace.
                in_flight = concurrency * shape.items_per_request
                point_s = min(MAX_POINT_S, max(plan.seconds, 3 * in_flight / max(ceilings[shape.name].values())))
                for server in running[turn % len(running) :] + running[: turn % len(running)]:
                    if not server.spec.measures(shape.name):
                        continue
                    body_file = bodies[(server.spec.name, shape.name)]
                    points.append(measure(server, shape, body_file, concurrency, point_s))
                    progress.update()
            progress.close()
        finally:
            for server in running:
                server.stop()
    return {
        "model": {"name": model.name, "version": model.manifest.version, "quantization": model.manifest.quantization},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "shapes": {
            shape.name: {
                "description": shape.description,
                "requests": len(shape.requests),
                "items_per_request": shape.items_per_request,
            }
            for shape in workload
        },
        "ceiling_items_per_s": ceilings,
        "servers": {
            server.spec.name: {
                "configuration": server.spec.configuration,
                "cold_start_s": server.cold_start_s,
                "rss_idle_mb": server.rss_idle_mb,
                "rss_peak_mb": server.rss_peak_mb,
            }
            for server in running
        },
        "failed_servers": failed,
        "points": [asdict(point) for point in points],
    }


def _start_checked(spec: ServerSpec, scratch: Path, shape: Shape, running: list[Running]) -> str | None:
    try:
        server = start(spec, scratch)
    except (RuntimeError, TimeoutError, OSError) as error:
        return f"did not start: {error}"
    why = answers(server, spec.body(shape.requests[0]))
    if why:
        server.stop()
        return f"started but does not score: {why} (log: {_tail(server.log_path)})"
    running.append(server)
    return None


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(line.strip()[:300] for line in text[-lines:])


def _bodies_file(scratch: Path, spec: ServerSpec, shape: Shape) -> Path:
    path = scratch / f"{abs(hash(spec.name))}-{shape.name}.jsonl"
    path.write_text("".join(spec.body(request) + "\n" for request in shape.requests), encoding="utf-8")
    return path


def _commit() -> str:
    completed = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return completed.stdout.strip() + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
