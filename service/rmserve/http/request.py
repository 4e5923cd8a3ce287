"""What every route reads from a request besides its body schema: the JSON, the deadline, the ID."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import g, request

from rmserve.config import Settings
from rmserve.errors import IncompleteBody, InvalidField, MalformedJSON, PayloadTooLarge
from rmserve.http import codec
from rmserve.http.scan import check_shape
from rmserve.http.state import state

TIMEOUT_HEADER = "X-Timeout-Ms"
READ_PIECE_BYTES = 64 * 1024  # a chunked body is read, and charged, this much at a time

# A body -> its JSON document and the binary data after it (Triton's binary tensor extension; none elsewhere).
SplitBody = Callable[[bytes], tuple[bytes, bytes]]


def all_json(body: bytes) -> tuple[bytes, bytes]:
    return body, b""


def read_json(settings: Settings, split: SplitBody = all_json) -> tuple[Any, bytes]:
    """The body's JSON document, decoded, and the binary data after it, whatever Content-Type the client sent.

    The whole body is read within RMSERVE_MAX_BODY_BYTES however it is sent (Content-Length or chunked;
    Flask's MAX_CONTENT_LENGTH), and the JSON document's shape is checked on its raw bytes before it is parsed.
    """
    document, attached = split(_body(settings.max_body_bytes))
    check_shape(document, settings.max_items)
    try:
        return codec.loads(document), attached
    except ValueError as error:  # orjson.JSONDecodeError, invalid UTF-8 included
        raise MalformedJSON(f"request body is not valid JSON: {error}") from None


def _body(limit: int) -> bytes:
    """The raw body, never more than `limit` bytes read, whether its length is declared or not."""
    if request.content_length is not None or "wsgi.input_terminated" not in request.environ:
        return request.get_data(cache=False)  # a declared length over the limit is 413 already (Flask)
    # Chunked: nothing declares the length, so the bytes are charged as they are read, and one byte is read
    # past the limit to tell.
    pieces: list[bytes] = []
    received = 0
    while received <= limit:
        piece = _read(min(READ_PIECE_BYTES, limit + 1 - received))
        if not piece:
            break
        _charge(len(piece))
        pieces.append(piece)
        received += len(piece)
    if received > limit:
        raise PayloadTooLarge(f"request body is over {limit} bytes (RMSERVE_MAX_BODY_BYTES)")
    return b"".join(pieces)


def _read(size: int) -> bytes:
    """Up to `size` bytes of a chunked body; the server's error (client gone, broken chunks) is the client's 400."""
    try:
        piece: bytes = request.environ["wsgi.input"].read(size)
    except Exception as error:  # gunicorn's NoMoreData or ParseException, werkzeug's ClientDisconnected, ...
        # Its text may quote the body: only its kind is told.
        raise IncompleteBody(f"the request body did not arrive whole ({type(error).__name__})") from None
    return piece


def _charge(more_bytes: int) -> None:
    """Count body bytes against the worker's budget as they are read (unless the server counted them already)."""
    admission = state().admission
    if not admission.bodies_received_by_server:
        admission.charge(more_bytes)
        g.admitted_bytes += more_bytes


def deadline(settings: Settings) -> float:
    """Monotonic time by which the request must be scored: `X-Timeout-Ms`, or the default."""
    header = request.headers.get(TIMEOUT_HEADER)
    if header is None:
        return time.monotonic() + settings.request_timeout_s
    try:
        timeout_ms = float(header)
    except ValueError:
        timeout_ms = float("nan")
    if not timeout_ms > 0:
        raise InvalidField(TIMEOUT_HEADER, f"must be a positive number of milliseconds, got {header!r}")
    return time.monotonic() + min(timeout_ms / 1000.0, settings.max_timeout_s)


def request_id() -> str:
    return str(g.request_id)
