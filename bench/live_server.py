"""Run a real `rmserve serve` (gunicorn) on a free local port, for the benchmark and end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
RMSERVE = Path(sys.executable).with_name("rmserve")
START_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout_s` (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def answers_200(url: str) -> bool:
    """GET `url` answers 200 (refused, timed out or any other status all mean no)."""
    try:
        return requests.get(url, timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # not listening yet, or workers still loading
        return False


def answers_ready(base_url: str) -> bool:
    return answers_200(f"{base_url}/readyz")


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def running_server(
    repository: Path, log_path: Path, env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[RunningServer]:
    """`rmserve serve` on 127.0.0.1 with `repository`, ready when yielded; SIGTERM and wait on exit.

    The server runs from the log's directory, not the checkout (its gunicorn config ships in the
    package); its output goes to `log_path`, which failing tests can show.
    """
    port = port or free_port()
    server_env = {key: value for key, value in os.environ.items() if not key.startswith("RMSERVE_")}
    server_env.update(
        {"RMSERVE_HOST": "127.0.0.1", "RMSERVE_PORT": str(port), "RMSERVE_MODEL_REPOSITORY": str(repository)}
    )
    server_env.update(env or {})
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [str(RMSERVE), "serve"],
            cwd=log_path.parent,
            env=server_env,
            text=True,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(base_url, process, log_path)
    try:
        wait_until(lambda: answers_ready(base_url) or process.poll() is not None, START_TIMEOUT_S, "/readyz")
        if process.poll() is not None:
            raise RuntimeError(f"rmserve serve exited with {process.returncode}:\n{server.log()}")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
