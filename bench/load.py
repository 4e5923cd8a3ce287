"""The one load generator every server gets: wrk (C, so the client takes little of the CPU it measures)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_post.lua")


@dataclass(frozen=True)
class LoadResult:
    requests: int  # answered with 2xx
    non_2xx: int
    socket_errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def items_per_second(self, items_per_request: float) -> float:
        return self.requests * items_per_request / self.seconds


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def drive(url: str, path: str, bodies_file: Path, concurrency: int, seconds: float) -> LoadResult:
    """`concurrency` connections, each sending its next body as soon as the last answer came back."""
    env = {**os.environ, "BENCH_BODIES": str(bodies_file), "BENCH_PATH": path}
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "60s"]
    completed = subprocess.run(
        [*command, "-s", str(SCRIPT), url], env=env, capture_output=True, text=True, check=True, timeout=seconds + 120
    )
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    return LoadResult(
        requests=summary["requests"] - summary["non_2xx"],
        non_2xx=summary["non_2xx"],
        socket_errors=summary["socket_errors"] + summary["timeouts"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )
