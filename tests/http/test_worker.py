"""`rmserve serve`'s worker (rmserve.http.worker) receives each request whole, within its timeouts and body budget.

One server with short timeouts and a small body budget, driven over raw sockets so that requests can
be sent a piece at a time, cut short or pipelined.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import requests

from bench.live_server import RunningServer, running_server, wait_until
from tests.reliability_report import record

HEADER_TIMEOUT_S = 1
BODY_TIMEOUT_S = 3
MAX_BODY_BYTES = 64 * 1024
BODY_BUDGET = 2 * MAX_BODY_BYTES  # the smallest allowed: two largest bodies
BREAD = json.dumps({"prompt": "How do I bake bread?", "responses": ["Knead and bake."]}).encode()
CHUNKED_HEAD = (
    b"POST /v1/score HTTP/1.1\r\nHost: rmserve\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "RMSERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "RMSERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "RMSERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "RMSERVE_MAX_INFLIGHT_BODY_BYTES": str(BODY_BUDGET),
    }
    with running_server(tiny_repository, tmp_path_factory.mktemp("worker") / "server.log", env=env) as server:
        yield server


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), timeout=15)


def scoring_request(body: bytes = BREAD, request_id: str = "") -> bytes:
    extra = f"X-Request-ID: {request_id}\r\n".encode() if request_id else b""
    return (
        b"POST /v1/score HTTP/1.1\r\nHost: rmserve\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def response(reader: BinaryIO) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The next response a connection's reader (`sock.makefile("rb")`, one per connection) holds."""
    status = int(reader.readline().split()[1])
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip()] = value.strip()
    return status, headers, json.loads(reader.read(int(headers["Content-Length"])))


def metric(server: RunningServer, name: str, label: str) -> float:
    text = requests.get(f"{server.base_url}/metrics", timeout=10).text
    found = re.search(rf'^{name}\{{reason="{label}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_head_that_trickles_past_the_header_timeout_is_408_and_counted(server: RunningServer) -> None:
    before = metric(server, "rmserve_unfinished_requests_total", "header_timeout")
    with connect(server) as sock:
        sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: rmserve\r\n")  # and no more
        status, headers, body = response(sock.makefile("rb"))
        assert sock.recv(1) == b""  # then closed
    assert (status, headers["Connection"]) == (408, "close")
    assert body["error"] == {
        "code": "request_timeout",
        "message": f"the request's headers did not arrive within {HEADER_TIMEOUT_S} s (RMSERVE_HEADER_TIMEOUT_S)",
        "field": None,
    }
    assert metric(server, "rmserve_unfinished_requests_total", "header_timeout") == before + 1


def test_a_body_that_trickles_past_the_body_timeout_is_408(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(scoring_request()[:-10])  # the headers and all but the last ten bytes of the body
        status, _, body = response(sock.makefile("rb"))
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    assert "RMSERVE_BODY_TIMEOUT_S" in body["error"]["message"]
    assert metric(server, "rmserve_unfinished_requests_total", "body_timeout") >= 1


def test_trickling_chunked_uploads_do_not_lock_other_clients_out(server: RunningServer) -> None:
    """Two chunked uploads under way hold the bytes they sent, not the largest allowed body each."""
    uploads = [connect(server), connect(server)]
    for upload in uploads:
        upload.sendall(CHUNKED_HEAD + b"1\r\n{\r\n")
    # Connections are taken in order: once a later one is answered, the uploads are under way.
    assert requests.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
    with requests.Session() as session:
        statuses = [session.post(f"{server.base_url}/v1/score", data=BREAD, timeout=10).status_code for _ in range(5)]
    for upload in uploads:
        upload.close()
    assert statuses == [200] * 5  # were 429: each upload counted as RMSERVE_MAX_BODY_BYTES, the whole budget
    record(
        "Slow clients: trickling chunked uploads",
        "two chunked uploads under way (one byte sent each), RMSERVE_MAX_INFLIGHT_BODY_BYTES twice "
        "RMSERVE_MAX_BODY_BYTES; five other requests meanwhile",
        "5 of 5 answered 200 (were 429: a chunked body was charged the largest allowed size before it arrived); "
        "a chunked body is charged as its bytes arrive",
    )


def test_bytes_of_bodies_under_way_count_against_the_budget_until_their_connection_ends(
    server: RunningServer,
) -> None:
    uploads = [connect(server), connect(server)]
    for upload in uploads:
        upload.sendall(CHUNKED_HEAD + b"ea60\r\n" + b" " * 60_000)  # 60,000 bytes of a chunk, and more to come
    padded = json.dumps({"prompt": "a" + " " * 20_000, "responses": ["b"]}).encode()
    wait_until(lambda: status_of(server, padded) == 429, 10, "the uploads' bytes to be charged")
    with connect(server) as sock:
        sock.sendall(scoring_request(padded))
        status, headers, body = response(sock.makefile("rb"))
    assert (status, body["error"]["code"]) == (429, "queue_full")
    assert "RMSERVE_MAX_INFLIGHT_BODY_BYTES" in body["error"]["message"] and int(headers["Retry-After"]) >= 1
    uploads[0].close()  # the client gives up: its bytes are released
    wait_until(lambda: status_of(server, padded) == 200, 10, "the bytes of the closed upload to be released")
    uploads[1].close()


def status_of(server: RunningServer, body: bytes) -> int:
    return requests.post(f"{server.base_url}/v1/score", data=body, timeout=10).status_code


def test_an_aborted_chunked_upload_is_never_a_500(server: RunningServer) -> None:
    before = metric(server, "rmserve_unfinished_requests_total", "client_closed")
    with connect(server) as sock:
        sock.sendall(CHUNKED_HEAD + b"10\r\n" + BREAD[:10])  # and the client is gone

    def settled() -> bool:  # counted as the client's doing, or answered with an error
        failed = 'status="500"' in requests.get(f"{server.base_url}/metrics", timeout=10).text
        return failed or metric(server, "rmserve_unfinished_requests_total", "client_closed") == before + 1

    wait_until(settled, 10, "the aborted upload to be dealt with")
    assert requests.post(f"{server.base_url}/v1/score", data=BREAD, timeout=10).status_code == 200
    metrics = requests.get(f"{server.base_url}/metrics", timeout=10).text
    assert 'status="500"' not in metrics and "internal_error" not in metrics
    assert "Traceback" not in server.log()
    record(
        "Slow clients: an aborted chunked upload",
        "a chunked upload whose client closes the connection after a few bytes",
        'no answer (the client is gone), counted in rmserve_unfinished_requests_total{reason="client_closed"}; '
        "no 500, no traceback (was 500 internal_error with a traceback, counted by the error-rate alert)",
    )


def test_expect_100_continue_gets_the_go_ahead_from_the_event_loop(server: RunningServer) -> None:
    with connect(server) as sock:
        head, _, body = scoring_request().partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = response(sock.makefile("rb"))
    assert status == 200 and len(answer["scores"]) == 1


def test_pipelined_requests_are_answered_in_order_on_one_connection(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"".join(scoring_request(request_id=f"pipelined-{index}") for index in range(3)))
        reader = sock.makefile("rb")
        answers = [response(reader) for _ in range(3)]
    assert [status for status, _, _ in answers] == [200] * 3
    assert [body["request_id"] for _, _, body in answers] == [f"pipelined-{index}" for index in range(3)]


def test_a_head_over_64_kib_is_431(server: RunningServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Padding: " + b"a" * 70_000)
        status, _, body = response(sock.makefile("rb"))
    assert (status, body["error"]["code"]) == (431, "headers_too_large")


def test_gunicorns_master_imports_the_worker_without_a_model_runtime() -> None:
    """The master imports the worker class before it forks; ONNX Runtime loaded there aborts every worker at exit."""
    heavy = ("onnxruntime", "tokenizers", "prometheus_client", "flask")
    probe = f"import sys, rmserve.http.worker; print([m for m in {heavy!r} if m in sys.modules])"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
