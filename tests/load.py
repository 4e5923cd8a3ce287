"""Closed-loop HTTP load for the live-server reliability tests: N clients, each with its own
keep-alive session, sending one request after another and recording every outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests


@dataclass(frozen=True)
class Outcome:
    started: float  # monotonic seconds
    finished: float
    status: int | None  # None: no HTTP answer
    error: str | None = None  # "refused" (never connected), "reset" (connection lost), "timeout"
    retry_after: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Load:
    """`clients` threads posting `body(client, sequence)` to `url` until `stop()` (or refused)."""

    url: str
    clients: int
    body: Callable[[int, int], dict[str, Any]]
    timeout_s: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    stop_when_refused: bool = True
    interval_s: float = 0.0  # per client, between request starts (0: closed loop, no pause)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(index,), daemon=True) for index in range(self.clients)
        ]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, join_s: float = 120.0) -> list[Outcome]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(join_s)
        return self.outcomes

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def count(self, status: int | None = None, error: str | None = None) -> int:
        with self._lock:
            return sum(1 for outcome in self.outcomes if outcome.status == status and outcome.error == error)

    def _client(self, index: int) -> None:
        session = requests.Session()
        sequence = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                response = session.post(
                    self.url, json=self.body(index, sequence), headers=self.headers, timeout=self.timeout_s
                )
                outcome = Outcome(
                    started, time.monotonic(), response.status_code, None, response.headers.get("Retry-After")
                )
            except requests.Timeout:
                outcome = Outcome(started, time.monotonic(), None, "timeout")
            except requests.ConnectionError as error:
                outcome = Outcome(started, time.monotonic(), None, "refused" if refused(error) else "reset")
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.error == "refused" and self.stop_when_refused:
                return
            sequence += 1
            pause = started + self.interval_s - time.monotonic()
            if pause > 0:
                self._stopping.wait(pause)


def refused(error: requests.ConnectionError) -> bool:
    """The connection was never made (nothing listens): the request cannot have been accepted."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return True
        cause = (
            cause.__cause__
            or cause.__context__
            or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
        )
        if cause is not None and "Connection refused" in str(cause):
            return True
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def worker_pids(master_pid: int) -> list[int]:
    """The gunicorn master's child processes (its workers)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")
