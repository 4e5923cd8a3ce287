"""API keys are one truth for all workers of a live `rmserve serve`: read by the master, reloaded on SIGHUP."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from bench.live_server import RunningServer, answers_ready, running_server, wait_until
from tests.load import worker_pids
from tests.reliability_report import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ASKS = 24  # each on a new connection, so both workers answer some


def statuses(server: RunningServer, key: str) -> set[int]:
    """What /v1/models answers `key`, over ASKS fresh connections."""
    return {
        requests.get(
            f"{server.base_url}/v1/models",
            headers={"Authorization": f"Bearer {key}", "Connection": "close"},
            timeout=10,
        ).status_code
        for _ in range(ASKS)
    }


def replace_workers(server: RunningServer, how: signal.Signals, victims: list[int]) -> None:
    """Send `how` (to the master for SIGHUP, else to `victims`), then wait until none of `victims` serves."""
    if how == signal.SIGHUP:
        server.process.send_signal(how)
    else:
        for pid in victims:
            os.kill(pid, how)

    def replaced() -> bool:
        workers = worker_pids(server.process.pid)
        return len(workers) == 2 and not set(workers) & set(victims) and answers_ready(server.base_url)

    wait_until(replaced, 120, f"workers {victims} to be replaced")
    time.sleep(1)  # both replacements loaded: /readyz answered by one of them, give the other a moment


def test_keys_are_the_masters_for_every_worker_and_sighup_reloads_them_all(
    tiny_repository: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("key-a\n")
    env = {"RMSERVE_WORKERS": "2", "RMSERVE_API_KEYS_FILE": str(keys)}
    with running_server(tiny_repository, tmp_path / "server.log", env=env) as server:
        wait_until(lambda: len(worker_pids(server.process.pid)) == 2, 60, "two workers")
        first = worker_pids(server.process.pid)[0]
        assert statuses(server, "key-a") == {200} and statuses(server, "key-b") == {401}

        # The file changes, then a worker crashes: its replacement serves the master's keys, not the file's.
        keys.write_text("key-b\n")
        replace_workers(server, signal.SIGKILL, [first])
        assert statuses(server, "key-a") == {200}, server.log()
        assert statuses(server, "key-b") == {401}, server.log()

        # SIGHUP: the master reads the file again and every worker is replaced.
        replace_workers(server, signal.SIGHUP, worker_pids(server.process.pid))
        assert statuses(server, "key-b") == {200}, server.log()
        assert statuses(server, "key-a") == {401}, server.log()

        # The file is gone at the next SIGHUP and a worker crashes after it: the keys in use stay, nothing stops.
        keys.unlink()
        replace_workers(server, signal.SIGHUP, worker_pids(server.process.pid))
        replace_workers(server, signal.SIGKILL, [worker_pids(server.process.pid)[0]])
        assert server.process.poll() is None
        assert statuses(server, "key-b") == {200} and statuses(server, "key-a") == {401}
        assert "keeping the 1 API keys in use" in server.log()
    record(
        "Auth: the keys file changes under 2 workers",
        "keys file edited, then one worker killed (-9); SIGHUP to the master; the file deleted, SIGHUP, another "
        "worker killed",
        f"every one of {ASKS} fresh connections per key answered alike at each step: the old key until SIGHUP, "
        "the new one after; the deleted file logged as an error, the keys in use kept, the server still serving",
    )
