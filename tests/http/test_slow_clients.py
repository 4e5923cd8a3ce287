"""Issue 20's slow-client attack against a real `rmserve serve`, with default settings, for 30 s.

Slow: 140 connections send a header line, or a body byte, every 4 s while probes and ordinary
clients are measured (recorded in the reliability report).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests

from bench.live_server import running_server
from tests.load import Load
from tests.reliability_report import record
from tests.slow_clients import SlowClients, trickled_body, trickled_headers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ATTACK_S = 30.0
PROBE_BOUND_S = 2.0
BREAD = {"prompt": "How do I bake bread?", "responses": ["Knead and bake.", "No idea."]}


def probe(base_url: str, seconds: float) -> list[tuple[str, float, int | None]]:
    """Fresh-connection GETs of /healthz and /readyz, as the kubelet makes them: (path, seconds, status or None)."""
    probes: list[tuple[str, float, int | None]] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for path in ("/healthz", "/readyz"):
            started = time.monotonic()
            try:
                status: int | None = requests.get(f"{base_url}{path}", timeout=5).status_code
            except requests.RequestException:
                status = None
            probes.append((path, time.monotonic() - started, status))
        time.sleep(0.25)
    return probes


def unfinished(base_url: str) -> dict[str, float]:
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    return {
        reason: float(value)
        for reason, value in re.findall(r'^rmserve_unfinished_requests_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    }


def test_140_slow_clients_hold_no_thread_so_probes_and_scoring_go_on(tiny_repository: Path, tmp_path: Path) -> None:
    with running_server(tiny_repository, tmp_path / "server.log") as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        slow_heads = SlowClients(port, 70, trickled_headers).start()
        slow_bodies = SlowClients(port, 70, trickled_body).start()
        load = Load(f"{server.base_url}/v1/score", 4, lambda client, sequence: BREAD, timeout_s=10).start()
        probes = probe(server.base_url, ATTACK_S)
        outcomes = load.stop()
        slow_heads.stop()
        slow_bodies.stop()
        cut = unfinished(server.base_url)
    slowest = max(seconds for _, seconds, _ in probes)
    failed = [(path, status) for path, _, status in probes if status != 200]
    assert not failed and slowest < PROBE_BOUND_S, (failed[:5], slowest)
    assert outcomes and all(outcome.status == 200 for outcome in outcomes), {o.status for o in outcomes}
    assert slow_heads.answers.get(408, 0) > 0 and cut.get("header_timeout", 0) > 0  # cut after 10 s, 408
    record(
        "Slow clients: 140 trickling connections",
        f"70 connections sending one header line every 4 s and 70 sending one body byte every 4 s (each "
        f"reconnecting when cut), default settings, for {ATTACK_S:.0f} s; /healthz and /readyz on fresh "
        "connections every 0.25 s and 4 closed-loop scoring clients meanwhile",
        f"{len(probes)} probes, all 200, slowest {slowest * 1000:.0f} ms (bound 2 s; was: every probe timed out, "
        f"the trickling connections held every thread); {len(outcomes)} scoring requests, all 200; "
        f"{slow_heads.answers.get(408, 0)} trickled heads answered 408 after RMSERVE_HEADER_TIMEOUT_S "
        f"({slow_heads.connections} connections in all); the trickled bodies held no thread",
    )
