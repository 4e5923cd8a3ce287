"""The HTTP part of `rmserve bench`: a real `rmserve serve`, driven by concurrent clients."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from service.repository import ModelVersion
from bench.live_server import running_server

# (label, items per request, concurrent clients): how trainers call a reward server.
PATTERNS = [
    ("1 item/request, 16 clients (OpenRLHF rollouts)", 1, 16),
    ("8 items/request, 4 clients (GRPO groups)", 8, 4),
    ("64 items/request, 2 clients (batched scoring)", 64, 2),
]


def http_section(repository: Path, model: ModelVersion, workloads: list, measure_http: Callable,
                 http_table: Callable) -> str:
    workload = workloads[0]
    results = []
    with tempfile.TemporaryDirectory() as scratch, running_server(repository, Path(scratch) / "server.log") as server:
        for label, per_request, clients in PATTERNS:
            bodies = [
                {"model": model.name,
                 "items": [{"prompt": prompt, "response": response}
                           for prompt, response in zip(workload.prompts[start : start + per_request],
                                                       workload.responses[start : start + per_request], strict=True)]}
                for start in range(0, len(workload.prompts) - per_request + 1, per_request)
            ]
            measure_http(server.base_url, bodies[: clients * 2], clients)  # warm connections and threads
            rate, latencies = measure_http(server.base_url, bodies, clients)
            results.append((f"{label}", rate * per_request, latencies))
    header = (f"**HTTP end to end** (`rmserve serve`, 1 worker, workload {workload.name}); "
              "throughput in items/s.\n\n")
    return header + http_table(results).replace("requests/s", "items/s")
