"""The HTTP part of `rmserve bench`: a real `rmserve serve`, driven by concurrent clients."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench.live_server import running_server
from rmserve.engine.version import ModelVersion

# (label, items per request, concurrent clients): how trainers call a reward server.
PATTERNS = [
    ("1 item/request, 16 clients (OpenRLHF rollouts)", 1, 16),
    ("8 items/request, 4 clients (GRPO groups)", 8, 4),
    ("64 items/request, 2 clients (batched scoring)", 64, 2),
]


def measure_http(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, list[float]]:
    """Send every body once with `concurrency` clients; (requests per second, latencies)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
    session.mount("http://", adapter)

    def send(body: dict[str, Any]) -> float:
        started = time.perf_counter()
        response = session.post(f"{base_url}/v1/score", json=body, timeout=120)
        response.raise_for_status()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(send, bodies))
    return len(bodies) / (time.perf_counter() - started), latencies


def http_section(repository: Path, model: ModelVersion, workload: Any) -> str:
    """One table: items/s and latency of each client pattern against a live server."""
    lines = [
        f"**HTTP end to end** (`rmserve serve`, 1 worker, workload {workload.name}).",
        "",
        "| client pattern | items/s | p50 latency | p99 latency |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as scratch, running_server(repository, Path(scratch) / "server.log") as server:
        for label, per_request, clients in PATTERNS:
            bodies = [
                {
                    "model": model.name,
                    "items": [
                        {"prompt": prompt, "response": response}
                        for prompt, response in zip(
                            workload.prompts[start : start + per_request],
                            workload.responses[start : start + per_request],
                            strict=True,
                        )
                    ],
                }
                for start in range(0, len(workload.prompts) - per_request + 1, per_request)
            ]
            if not bodies:
                lines.append(f"| {label} | (needs --items {per_request} or more) | | |")
                continue
            measure_http(server.base_url, bodies[: clients * 2], clients)  # warm connections and threads
            rate, latencies = measure_http(server.base_url, bodies, clients)
            p50, p99 = np.percentile(latencies, [50, 99])
            lines.append(f"| {label} | {rate * per_request:.1f} | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms |")
    return "\n".join(lines)
