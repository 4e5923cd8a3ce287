"""What runs around every request: its ID, the API key check, admission, the request metrics and
the access log.

The access log is rmserve's own, not gunicorn's: one line per request the setting selects
(`RMSERVE_ACCESS_LOG`: every request, only refused and failed ones (the default), or none). At the
hundreds of one-sample requests per second an RL trainer sends, a line per success costs about 9%
of the throughput (the handler's lock and a write per line) and says nothing the request metrics
do not (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
import time
import uuid

from flask import Flask, Response, g, request
from prometheus_client import Counter, Histogram

from rmserve import metrics
from rmserve.errors import Unauthorized
from rmserve.http.state import state

# Probes and scrapes answer without a key, so Kubernetes and Prometheus need none
# (/metrics needs one with RMSERVE_PROTECT_METRICS).
# /label/login takes a labeller's key into a cookie, which /label's paths accept instead of the header (a
# browser sends no Authorization header when it opens a page).
LABEL_PREFIX = "/label"
LABEL_COOKIE = "rmserve_label_key"
LABEL_LOGIN = "/label/login"
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/v2/health/live", "/v2/health/ready", LABEL_LOGIN}
)
METRICS_PATH = "/metrics"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 200
ACCESS_LOG = logging.getLogger("rmserve.access")


def install(app: Flask) -> None:
    app.before_request(_start_request)
    app.before_request(_authenticate)
    app.before_request(_admit)
    app.after_request(_finish_request)
    app.teardown_request(_leave)
    # The line is written whatever RMSERVE_LOG_LEVEL says: RMSERVE_ACCESS_LOG alone decides.
    ACCESS_LOG.setLevel(logging.INFO)


def _admit() -> None:
    """Take a scoring slot and the body's bytes before reading it, or answer 429 at once."""
    # The labelling page is people, not scoring: its short requests must not wait for (or be refused by) a
    # trainer that fills every scoring slot. Their bodies are still charged where bodies are read.
    if request.path in OPEN_PATHS or request.path.startswith(LABEL_PREFIX):
        return
    g.admitted_bytes = state().admission.admit(request.content_length)


def _leave(error: BaseException | None) -> None:
    admitted_bytes = g.pop("admitted_bytes", None)
    if admitted_bytes is not None:
        state().admission.leave(admitted_bytes)


def _start_request() -> None:
    g.started = time.perf_counter()
    given = request.headers.get(REQUEST_ID_HEADER, "")
    # Echo a caller's ID only if it is a sane header value; otherwise make one.
    g.request_id = given if 0 < len(given) <= MAX_REQUEST_ID and given.isprintable() else uuid.uuid4().hex


def _authenticate() -> None:
    app_state = state()
    if not app_state.api_keys or not needs_key(request.path, app_state.settings.protect_metrics):
        return
    token = presented_key()
    if not token:
        hint = f"; in a browser, sign in at {LABEL_LOGIN}" if request.path.startswith(LABEL_PREFIX) else ""
        raise Unauthorized(f"missing API key: send 'Authorization: Bearer <key>'{hint}")
    if not key_matches(token, app_state.api_keys):
        raise Unauthorized("invalid API key")


def presented_key() -> str:
    """The request's bearer token, or on the labelling page's paths its key cookie; empty when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return token
    return request.cookies.get(LABEL_COOKIE, "") if request.path.startswith(LABEL_PREFIX) else ""


def needs_key(path: str, protect_metrics: bool) -> bool:
    return path not in OPEN_PATHS or (protect_metrics and path == METRICS_PATH)


def key_matches(token: str, keys: frozenset[str]) -> bool:
    """Constant time: fixed-length digests compared against every key, so timing reveals no key or length."""
    digest = hashlib.sha256(token.encode()).digest()
    matches = [hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest()) for key in keys]
    return any(matches)


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    requests, durations = _series(endpoint, response.status_code)
    requests.inc()
    seconds = time.perf_counter() - g.started if "started" in g else math.nan
    if not math.isnan(seconds):
        durations.observe(seconds)
    if logs_access(response.status_code, state().settings.access_log):
        ACCESS_LOG.info(
            '%s "%s %s" %d %s %.6fs rid=%s',
            loggable(request.remote_addr or "-"),
            loggable(request.method),
            loggable(request.full_path if request.query_string else request.path),
            response.status_code,
            response.content_length if response.content_length is not None else "-",
            seconds,
            g.get("request_id", "-"),
        )
    return response


def loggable(text: str) -> str:
    """Client-controlled text as it may enter a log line: a decoded `%0a` or an ESC byte in a path must not start
    a forged line or reach an operator's terminal, so what is not printable, `\\` and `"` are written escaped."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return "".join(char if char.isprintable() and char not in '\\"' else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    return '\\"' if char == '"' else char.encode("unicode_escape").decode("ascii")


@functools.cache  # routes x status codes: a few dozen series, each looked up once
def _series(endpoint: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter and duration histogram series of an endpoint and status."""
    return metrics.REQUESTS.labels(endpoint, str(status)), metrics.REQUEST_SECONDS.labels(endpoint)


def logs_access(status: int, access_log: str) -> bool:
    """Whether a request answered `status` gets an access-log line under RMSERVE_ACCESS_LOG."""
    return access_log == "all" or (access_log == "errors" and status >= 400)
