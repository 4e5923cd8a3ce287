"""What every route reads from a request besides its body schema: the JSON, the deadline, the ID."""

from __future__ import annotations

import time
from typing import Any

from flask import g, request

from rmserve.errors import InvalidField, MalformedJSON
from rmserve.http import codec
from rmserve.http.state import state

TIMEOUT_HEADER = "X-Timeout-Ms"


def read_json() -> Any:
    """The request body as JSON, whatever Content-Type the client sent (curl's default included)."""
    try:
        return codec.loads(request.get_data(cache=False))
    except ValueError as error:  # orjson.JSONDecodeError, invalid UTF-8 included
        raise MalformedJSON(f"request body is not valid JSON: {error}") from None


def deadline() -> float:
    """Monotonic time by which the request must be scored: `X-Timeout-Ms`, or the default."""
    settings = state().settings
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
