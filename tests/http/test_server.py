"""The real thing: `rmserve serve` (gunicorn, gthread workers) on a free port, scored over HTTP."""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

import requests

from bench.live_server import running_server
from tests.reliability_report import record

BREAD = {
    "prompt": "How do I bake bread?",
    "responses": ["Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.", "no"],
}


def test_gunicorn_serves_scores_and_aggregates_metrics_over_workers(tiny_repository: Path, tmp_path: Path) -> None:
    with running_server(tiny_repository, tmp_path / "server.log", env={"RMSERVE_WORKERS": "2"}) as server:
        session = requests.Session()
        for _ in range(6):
            response = session.post(f"{server.base_url}/v1/score", json=BREAD, timeout=10)
            assert response.status_code == 200, server.log()
            assert len(response.json()["scores"]) == 2
        metrics = requests.get(f"{server.base_url}/metrics", timeout=10).text
        scored = [line for line in metrics.splitlines() if line.startswith('rmserve_items_scored_total{model="tiny"}')]
        assert scored and float(scored[0].split()[-1]) == 12.0  # summed over both workers
        assert requests.get(f"{server.base_url}/v1/models", timeout=10).json()["data"][0]["name"] == "tiny"


def test_sigterm_finishes_accepted_requests_then_exits(tiny_repository: Path, tmp_path: Path) -> None:
    body = json.dumps(BREAD).encode()
    with running_server(tiny_repository, tmp_path / "server.log") as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        in_flight = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        in_flight.putrequest("POST", "/v1/score")
        in_flight.putheader("Content-Type", "application/json")
        in_flight.putheader("Content-Length", str(len(body)))
        in_flight.endheaders(body[:10])  # the request is under way: headers and part of the body sent
        # Connections are accepted in order, so once a later one is answered, ours was accepted.
        assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        in_flight.send(body[10:])
        response = in_flight.getresponse()
        assert response.status == 200, server.log()
        assert len(json.loads(response.read())["scores"]) == 2
        assert server.process.wait(timeout=60) == 0, server.log()
        assert requests_refused(server.base_url)


def requests_refused(base_url: str) -> bool:
    try:
        requests.get(f"{base_url}/healthz", timeout=5)
    except requests.ConnectionError:
        return True
    return False


def test_metrics_dir_keeps_what_it_did_not_create(tiny_repository: Path, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "operator-dir"
    metrics_dir.mkdir()
    (metrics_dir / "notes.txt").write_text("not rmserve's")
    (metrics_dir / "counter_12345.db").write_bytes(b"stale")  # a sample file of an earlier run
    with running_server(
        tiny_repository, tmp_path / "server.log", env={"RMSERVE_METRICS_DIR": str(metrics_dir)}
    ) as server:
        assert requests.post(f"{server.base_url}/v1/score", json=BREAD, timeout=10).status_code == 200
        assert "rmserve_items_scored_total" in requests.get(f"{server.base_url}/metrics", timeout=10).text
    assert (metrics_dir / "notes.txt").read_text() == "not rmserve's"
    assert not list(metrics_dir.glob("*.db"))


def test_body_limit_holds_however_the_body_is_sent(tiny_repository: Path, tmp_path: Path) -> None:
    """Content-Length over the limit, and a chunked body (no length) that grows past it: both 413."""
    oversized = json.dumps({"prompt": "a", "responses": ["x" * 20_000]}).encode()
    with running_server(tiny_repository, tmp_path / "server.log", env={"RMSERVE_MAX_BODY_BYTES": "10000"}) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        declared = requests.post(f"{server.base_url}/v1/score", data=oversized, timeout=10)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "payload_too_large"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        chunks = (oversized[start : start + 1000] for start in range(0, len(oversized), 1000))
        connection.request(
            "POST", "/v1/score", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True
        )
        chunked = connection.getresponse()
        assert chunked.status == 413, server.log()
        assert json.loads(chunked.read())["error"]["code"] == "payload_too_large"
        assert requests.post(f"{server.base_url}/v1/score", json=BREAD, timeout=10).status_code == 200
    record(
        "Limits: body size however sent",
        "RMSERVE_MAX_BODY_BYTES=10000 on gunicorn; a 20 kB body with Content-Length, and chunked without one",
        "413 for both (the chunked one was silently cut and answered 400); the next request scores",
    )
