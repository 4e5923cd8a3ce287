"""The shared body reader (rmserve.http.request) under any WSGI server: Flask's test client here.

Under `rmserve serve` the worker receives bodies before the app reads them (tests/http/test_worker.py);
these are the same guarantees when the app reads a chunked body from the server's stream itself.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

from bench.live_server import wait_until
from tests.http.routes import scoring_paths


def chunked(body: Any) -> dict[str, Any]:
    """The environ of a chunked body: no Content-Length, the server's stream read to its end."""
    return {"wsgi.input": body, "wsgi.input_terminated": True}


class TricklingBody:
    """A chunked body of which `first` has arrived; the rest arrives when `arrive` is set.

    Like gunicorn's stream, `read(size)` returns `size` bytes, fewer only at the end of the body.
    """

    def __init__(self, body: bytes, first: int):
        self.arrived, self.rest = body[:first], body[first:]
        self.arrive = threading.Event()

    def read(self, size: int) -> bytes:
        if len(self.arrived) < size and self.rest:
            self.arrive.wait(10)
            self.arrived, self.rest = self.arrived + self.rest, b""
        piece, self.arrived = self.arrived[:size], self.arrived[size:]
        return piece


class AbortedBody:
    """A chunked body whose client left before its end: reading it raises, as gunicorn's stream does."""

    def read(self, size: int | None = -1) -> bytes:
        raise OSError('No more data after: b\'{"prompt": "secret\'')  # gunicorn's NoMoreData quotes the body


ARRIVED = 64 * 1024  # bytes of a trickling upload that have arrived


def padded(size: int) -> bytes:
    """A scoring body of at least `size` bytes (in responses of 1 kB: texts stay short)."""
    return json.dumps(
        {"prompt": "How do I bake bread?", "responses": ["Knead." + " " * 1000] * (size // 1000)}
    ).encode()


def test_chunked_bodies_under_way_hold_only_the_bytes_read_so_far(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_body_bytes=200_000, max_inflight_body_bytes=400_000)  # room for two largest bodies
    admission = app.extensions["rmserve"].admission
    uploads = [TricklingBody(padded(100_000), ARRIVED) for _ in range(2)]
    statuses: list[int] = []

    def upload(body: TricklingBody) -> None:
        statuses.append(app.test_client().post("/v1/score", environ_overrides=chunked(body)).status_code)

    threads = [threading.Thread(target=upload, args=(body,)) for body in uploads]
    for thread in threads:
        thread.start()
    wait_until(lambda: admission.in_progress[0] == 2, 10, "both uploads to be under way")
    requests, body_bytes = admission.in_progress
    assert requests == 2 and body_bytes <= 2 * ARRIVED  # what they sent so far, not 2 x 200,000
    # Was 429: each chunked upload counted as RMSERVE_MAX_BODY_BYTES, the two the whole budget.
    assert app.test_client().post("/v1/score", data=padded(1000), content_type="application/json").status_code == 200
    for body in uploads:
        body.arrive.set()
    for thread in threads:
        thread.join(10)
    assert statuses == [200, 200]
    assert admission.in_progress == (0, 0)


@contextmanager
def upload_under_way(app: Flask) -> Iterator[None]:
    """A chunked 90 kB upload to /v1/score, ARRIVED bytes of it in, the rest held back until the block ends."""
    holder = TricklingBody(padded(90_000), ARRIVED)
    thread = threading.Thread(
        target=app.test_client().post, args=("/v1/score",), kwargs={"environ_overrides": chunked(holder)}
    )
    thread.start()
    wait_until(lambda: app.extensions["rmserve"].admission.in_progress[0] == 1, 10, "the upload to be under way")
    try:
        yield
    finally:
        holder.arrive.set()
        thread.join(10)


def test_a_chunked_body_over_the_budget_as_it_arrives_is_429(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_body_bytes=100_000, max_inflight_body_bytes=100_000)
    admission = app.extensions["rmserve"].admission
    with upload_under_way(app):
        assert admission.in_progress[1] <= ARRIVED  # what it sent so far, not RMSERVE_MAX_BODY_BYTES
        response = app.test_client().post("/v1/score", environ_overrides=chunked(io.BytesIO(padded(40_000))))
    assert response.status_code == 429 and "RMSERVE_MAX_INFLIGHT_BODY_BYTES" in response.get_json()["error"]["message"]
    assert admission.in_progress == (0, 0)


def test_a_get_without_a_body_is_charged_no_body_bytes(make_app: Callable[..., Flask]) -> None:
    app = make_app(max_body_bytes=100_000, max_inflight_body_bytes=100_000)
    admission = app.extensions["rmserve"].admission
    with upload_under_way(app):
        # Charged the largest body a request may have, this GET would find the budget held and get a 429.
        answer = app.test_client().get("/v1/models")
    assert answer.status_code == 200
    assert admission.in_progress == (0, 0)


def test_an_aborted_chunked_upload_is_400_on_every_scoring_route_without_a_traceback(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    client = app.test_client()
    for path in scoring_paths(app):
        response = client.post(path, environ_overrides=chunked(AbortedBody()))
        error: dict[str, Any] = response.get_json()["error"]
        assert (response.status_code, error["code"]) == (400, "incomplete_body"), path  # was 500 internal_error
        assert "secret" not in error["message"]  # the server's message quotes the body: never echoed
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
