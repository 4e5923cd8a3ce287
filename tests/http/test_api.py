"""Every endpoint and every error status of the HTTP API (README "HTTP API"), through Flask's test client."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from bench.live_server import wait_until
from rmserve.app import create_app
from rmserve.config import DEFAULT_BATCH_TOKENS, Settings
from rmserve.core.repository import InvalidModel
from rmserve.http.openapi import openapi_path
from tests.http.routes import scoring_paths, served_routes
from tests.reliability_report import record
from tests.tiny_model import expected_raw_scores

# Probes, the document and the scrape answer without a key (README "HTTP API").
OPEN_WITHOUT_KEY = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/v2/health/live", "/v2/health/ready"}
)

BREAD = {
    "prompt": "How do I bake bread?",
    "responses": ["Mix flour, water, yeast and salt, knead, let it rise, bake at 230C.", "no"],
}


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    return body["error"]


def test_group_form_returns_one_normalized_score_per_response(client: FlaskClient, tiny_repository: Path) -> None:
    response = client.post("/v1/score", json=BREAD)
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == "tiny" and body["version"] == 1
    assert len(body["scores"]) == len(body["raw_scores"]) == len(body["truncated"]) == len(body["tokens"]) == 2
    raw = np.array(body["raw_scores"])
    np.testing.assert_allclose(body["scores"], (raw - 0.5) / 2.0)  # the manifest's normalization
    assert body["truncated"] == [False, False]
    assert body["tokens"][0] > body["tokens"][1]


def test_scores_match_the_model_computed_by_hand(app: Flask, client: FlaskClient, tiny_repository: Path) -> None:
    body = client.post("/v1/score", json=BREAD).get_json()
    model = app.extensions["rmserve"].registry.get(None).version
    encodings = model.format.encode_texts([BREAD["prompt"]] * 2, BREAD["responses"])
    expected = expected_raw_scores(tiny_repository / "tiny" / "1", [e.input_ids for e in encodings])
    np.testing.assert_allclose(body["raw_scores"], expected, rtol=1e-5)


def test_items_form_accepts_pairs_and_conversations(client: FlaskClient) -> None:
    items = [
        {"prompt": "How do I bake bread?", "response": "Knead and bake."},
        {
            "messages": [
                {"role": "user", "content": "How do I bake bread?"},
                {"role": "assistant", "content": "Knead and bake."},
            ]
        },
    ]
    body = client.post("/v1/score", json={"items": items}).get_json()
    # A plain prompt is one user turn, so both forms are the same text to the model.
    assert body["raw_scores"][0] == pytest.approx(body["raw_scores"][1])


def test_batched_and_single_requests_score_the_same(client: FlaskClient) -> None:
    together = client.post("/v1/score", json=BREAD).get_json()["raw_scores"]
    alone = [
        client.post("/v1/score", json={"prompt": BREAD["prompt"], "responses": [text]}).get_json()["raw_scores"][0]
        for text in BREAD["responses"]
    ]
    np.testing.assert_allclose(together, alone, rtol=1e-6)


def test_truncation_is_reported_per_item(client: FlaskClient) -> None:
    body = client.post("/v1/score", json={"prompt": "hi", "responses": ["short", "long " * 200]}).get_json()
    assert body["truncated"] == [False, True]
    assert body["tokens"][1] == 64  # the tiny model's max_length


def test_request_id_is_echoed_or_generated(client: FlaskClient) -> None:
    response = client.post("/v1/score", json=BREAD, headers={"X-Request-ID": "trainer-step-7"})
    assert response.headers["X-Request-ID"] == "trainer-step-7"
    assert response.get_json()["request_id"] == "trainer-step-7"
    generated = client.post("/v1/score", json=BREAD)
    assert len(generated.headers["X-Request-ID"]) >= 16
    assert client.post("/v1/score", data=b"{").headers["X-Request-ID"]  # errors carry it too


@pytest.mark.parametrize(
    ("access_log", "logged"),
    [("all", ["200", "422"]), ("errors", ["422"]), ("off", [])],
)
def test_access_log_writes_the_requests_the_setting_selects(
    make_app, caplog: pytest.LogCaptureFixture, access_log: str, logged: list[str]
) -> None:
    client = make_app(access_log=access_log, log_level="warning").test_client()
    with caplog.at_level(logging.INFO, logger="rmserve.access"):
        client.post("/v1/score", json=BREAD, headers={"X-Request-ID": "ok-1"})
        client.post("/v1/score", json={"prompt": 3, "responses": ["a"]}, headers={"X-Request-ID": "bad-2"})
    lines = [record.getMessage() for record in caplog.records if record.name == "rmserve.access"]
    assert [line.split('" ')[1].split()[0] for line in lines] == logged
    for line in lines:  # client, request line, status, bytes, seconds, the request's ID
        status = line.split('" ')[1].split()[0]
        assert ('"POST /v1/score' in line) and line.endswith("rid=ok-1" if status == "200" else "rid=bad-2")


def test_access_log_escapes_what_the_client_controls(make_app, caplog: pytest.LogCaptureFixture) -> None:
    """A decoded %0a in the path would start a forged line, an ESC would reach the operator's terminal."""
    client = make_app(access_log="all").test_client()
    forged = "/x%0a127.0.0.1%20%22GET%20/admin%22%20200%20rid=1%1b%5b31m%e2%80%a8"
    with caplog.at_level(logging.INFO, logger="rmserve.access"):
        client.get(forged + "?q=\x1b]0;owned\x07")
        client.open("/healthz", method="GE\x1bT")
    lines = [record.getMessage() for record in caplog.records if record.name == "rmserve.access"]
    assert len(lines) == 2
    for line in lines:
        assert line.isprintable(), line  # one line, no ESC, BEL or U+2028
    assert '"GET /x\\n127.0.0.1 \\"GET /admin\\" 200 rid=1\\x1b[31m\\u2028?q=\\x1b]0;owned\\x07" 404' in lines[0]
    assert lines[1].count('"') == 2 and '"GE\\x1bT /healthz"' in lines[1]
    record(
        "HTTP: log injection through the request line",
        "an unauthenticated GET whose path decodes to a newline, a forged access-log line, an ESC sequence and "
        "U+2028, with a terminal title escape in the query; a method with an ESC",
        "each request one printable access-log line: newline, ESC, BEL, U+2028 and quotes written escaped",
    )


def test_models_lists_the_loaded_version(client: FlaskClient) -> None:
    (card,) = client.get("/v1/models").get_json()["data"]
    assert card["name"] == "tiny" and card["version"] == 1 and card["default"] is True
    assert len(card["sha256"]) == 64 and card["max_length"] == 64
    assert card["normalization"] == {"mean": 0.5, "std": 2.0}
    assert card["max_batch_tokens"] == DEFAULT_BATCH_TOKENS  # its manifest measured none


def test_health_readiness_and_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ready", "models": ["tiny"]}
    client.post("/v1/score", json=BREAD)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'rmserve_requests_total{endpoint="/v1/score",status="200"}' in metrics
    assert 'rmserve_items_scored_total{model="tiny"}' in metrics
    assert 'rmserve_model_info{model="tiny"' in metrics


def test_openapi_document_describes_every_route(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes = {openapi_path(rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert routes <= set(document["paths"])
    score = document["paths"]["/v1/score"]["post"]
    assert score["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ScoreRequest"
    assert {"400", "413", "422", "429", "504"} <= set(score["responses"])
    for name in ("ScoreRequest", "ScoreResponse", "PairItem", "ChatItem", "Message", "ErrorBody"):
        assert name in document["components"]["schemas"]


# --- errors ------------------------------------------------------------------------------------


def test_400_malformed_json(client: FlaskClient) -> None:
    response = client.post("/v1/score", data=b'{"prompt": "x", "responses": [', content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "malformed_json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"prompt": "a", "response": "b"}, {"prompt": "a", "response": 3}]}, "items[1].response"),
        ({"items": [{"prompt": "a"}]}, "items[0].response"),
        ({"prompt": "a", "respones": ["b"]}, "respones"),
        ({"prompt": "a", "responses": "b"}, "responses"),
        ({"items": [{"messages": [{"role": "user", "content": "hi"}]}]}, "items[0].messages[0].role"),
        ({"items": [{"messages": [{"role": "robot", "content": "hi"}]}]}, "items[0].messages[0].role"),
        (["not", "an", "object"], "body"),
    ],
)
def test_422_names_the_wrong_field(client: FlaskClient, body: object, field: str) -> None:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


@pytest.mark.parametrize("body", [{"items": []}, {"prompt": "a", "responses": []}])
def test_422_empty_list(client: FlaskClient, body: dict) -> None:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert error_of(response)["code"] == "empty_input"


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"prompt": "a", "response": "b"}], "prompt": "a", "responses": ["b"]},
        {"items": [{"prompt": "a", "response": "b"}], "responses": ["b"]},
    ],
)
def test_422_mixed_request_forms_say_so(client: FlaskClient, body: dict) -> None:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert "cannot be mixed" in error_of(response)["message"]


def test_422_text_over_the_limit_names_the_item(make_app) -> None:
    client = make_app(max_text_chars=50).test_client()
    items = [{"prompt": "a", "response": "ok"}, {"prompt": "a", "response": "x" * 51}]
    response = client.post("/v1/score", json={"items": items})
    assert response.status_code == 422
    assert error_of(response)["field"] == "items[1].response"


def test_a_conversation_counts_as_one_item_against_the_text_limit(make_app) -> None:
    client = make_app(max_text_chars=50).test_client()
    turns = [{"role": "user", "content": "y" * 40}, {"role": "assistant", "content": "z" * 40}] * 2  # each under 50
    response = client.post("/v1/score", json={"items": [{"messages": turns}]})
    assert response.status_code == 422
    assert error_of(response)["field"] == "items[0].messages"
    assert "160 characters" in error_of(response)["message"]
    short = client.post("/v1/score", json={"items": [{"messages": turns[:2]}]})  # 80: a prompt and a response
    assert short.status_code == 200


def test_401_when_keys_are_configured(make_app) -> None:
    client = make_app(api_keys=("secret-1", "secret-2")).test_client()
    missing = client.post("/v1/score", json=BREAD)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/v1/score", json=BREAD, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/score", json=BREAD, headers={"Authorization": "Bearer secret-2"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes need no key
    assert client.get("/readyz").status_code == 200


def test_api_keys_file(make_app, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# trainers\nfrom-file\n")
    client = make_app(api_keys_file=keys).test_client()
    assert client.post("/v1/score", json=BREAD, headers={"Authorization": "Bearer from-file"}).status_code == 200
    assert client.post("/v1/score", json=BREAD).status_code == 401


def test_404_unknown_model_and_route(client: FlaskClient) -> None:
    response = client.post("/v1/score", json={**BREAD, "model": "gpt-9"})
    assert response.status_code == 404
    assert error_of(response) == {
        "code": "model_not_found",
        "message": "unknown model 'gpt-9'; loaded: tiny",
        "field": "model",
    }
    assert error_of(client.get("/v2/nothing"))["code"] == "not_found"


def test_413_too_many_items(make_app) -> None:
    client = make_app(max_items=2).test_client()
    response = client.post("/v1/score", json={"prompt": "a", "responses": ["x", "y", "z"]})
    assert response.status_code == 413
    assert error_of(response)["field"] == "responses"


def hold_batcher(app: Flask) -> threading.Event:
    """Make the model block until the returned gate opens, so the queue can fill up."""
    served = app.extensions["rmserve"].registry.get(None)
    real_score = served.batcher.score_fn
    gate, entered = threading.Event(), threading.Event()

    def gated(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        entered.set()
        gate.wait(10)
        return real_score(input_ids, attention_mask)

    served.batcher.score_fn = gated
    threading.Thread(target=app.test_client().post, args=("/v1/score",), kwargs={"json": BREAD}, daemon=True).start()
    assert entered.wait(5)
    return gate


def test_429_queue_full_with_retry_after_and_others_unharmed(make_app) -> None:
    app = make_app(max_queue_tokens=100, max_batch_tokens=64)
    gate = hold_batcher(app)  # ~75 tokens in flight
    client = app.test_client()
    response = client.post("/v1/score", json={"prompt": "a", "responses": ["word " * 10]})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert error_of(response)["code"] == "queue_full"
    gate.set()
    assert client.post("/v1/score", json={"prompt": "a", "responses": ["ok"]}).status_code == 200


def test_504_when_the_deadline_passes_before_scoring(make_app) -> None:
    app = make_app()
    gate = hold_batcher(app)
    client = app.test_client()
    started = time.monotonic()
    response = client.post("/v1/score", json={"prompt": "a", "responses": ["b"]}, headers={"X-Timeout-Ms": "50"})
    assert response.status_code == 504
    assert error_of(response)["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 5
    gate.set()


def test_422_bad_timeout_header(client: FlaskClient) -> None:
    response = client.post("/v1/score", json=BREAD, headers={"X-Timeout-Ms": "soon"})
    assert response.status_code == 422
    assert error_of(response)["field"] == "X-Timeout-Ms"


def test_503_while_draining(app: Flask, client: FlaskClient) -> None:
    app.extensions["rmserve"].drain(timeout=5)
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").get_json()["reason"] == "draining"
    response = client.post("/v1/score", json=BREAD)
    assert response.status_code == 503 and error_of(response)["code"] == "not_ready"
    assert client.get("/healthz").status_code == 200


def test_503_and_ready_0_while_a_batcher_is_not_running(app: Flask, client: FlaskClient) -> None:
    app.extensions["rmserve"].registry.get(None).batcher.stop(timeout=5)  # as if its thread had died
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "batcher not running for tiny"
    assert "rmserve_ready 0.0" in client.get("/metrics").get_data(as_text=True)


def test_an_unloadable_repository_fails_at_start_up_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="does not exist"):
        create_app(Settings.from_env({}, model_repository=tmp_path / "missing"))


def test_405_wrong_method_is_json(client: FlaskClient) -> None:
    response = client.get("/v1/score")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_failures_are_counted_by_reason(client: FlaskClient) -> None:
    client.post("/v1/score", json={"items": []})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'rmserve_failures_total{reason="empty_input"}' in metrics


def test_keys_file_with_only_comments_stops_start_up(make_app, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# keys go here\n   # and here\n")
    with pytest.raises(ValueError, match="no key"):
        make_app(api_keys_file=keys)
    record(
        "Strangers: a keys file of comments",
        "RMSERVE_API_KEYS_FILE holding only comment lines, one indented",
        "start-up stops with 'holds no key' (it used to serve everyone without a key)",
    )


def test_every_route_but_the_probes_needs_the_key(make_app) -> None:
    client = make_app(api_keys=("secret-1",)).test_client()
    routes = served_routes(client.application)
    for method, path in routes:
        status = client.open(path, method=method, json=BREAD).status_code
        assert (status != 401) if path in OPEN_WITHOUT_KEY else (status == 401), (method, path, status)
    assert client.get("/metrics").status_code == 200  # open unless RMSERVE_PROTECT_METRICS
    record(
        "Strangers: no key",
        f"API keys configured; every route of the app's URL map ({len(routes)}) without a key",
        "401 on every one but the probes, /openapi.json and /metrics (open unless RMSERVE_PROTECT_METRICS)",
    )


def test_protect_metrics_puts_metrics_behind_the_key(make_app) -> None:
    client = make_app(api_keys=("secret-1",), protect_metrics=True).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer secret-1"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200


def test_keys_and_bodies_never_reach_the_log(make_app, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client = make_app(api_keys=("sekrit-key",)).test_client()
        client.post(
            "/v1/score",
            json={"prompt": "private-prompt", "responses": ["x"]},
            headers={"Authorization": "Bearer sekrit-guess"},
        )
        client.post(
            "/v1/score",
            json={"prompt": "private-prompt", "responses": ["x"]},
            headers={"Authorization": "Bearer sekrit-key"},
        )
    assert "sekrit" not in caplog.text and "private-prompt" not in caplog.text


# --- limits apply before the work they protect -----------------------------------------------------


def test_a_million_wrong_typed_items_are_refused_before_validation(client: FlaskClient) -> None:
    import tracemalloc

    body = ("[" + ",".join(["0"] * 1_000_000) + "]").join(['{"items": ', "}"]).encode()  # 2 MB
    tracemalloc.start()
    response = client.post("/v1/score", data=body, content_type="application/json")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert response.status_code == 413 and error_of(response)["field"] == "items"
    assert peak < 100 * 2**20  # validating every element first grew the worker by ~1 GB
    assert client.post("/v1/score", json=BREAD).status_code == 200
    record(
        "Limits: a million wrong-typed items",
        'a 2 MB body `{"items": [0, 0, ...]}` with 1,000,000 elements',
        f"413 payload_too_large on `items` before parsing; peak traced memory {peak / 2**20:.0f} MiB "
        "(was ~1 GB of validation errors); the next request scores",
    )


@pytest.mark.parametrize(
    ("label", "body", "status", "field"),
    [
        (
            "5,000 levels of nesting",
            b'{"prompt": "a", "responses": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            422,
            "responses" + "[0]" * 31,
        ),
        ("a 5,000-digit integer", b'{"prompt": "a", "responses": ["b"], "model": ' + b"7" * 5000 + b"}", 422, "model"),
        (
            "a 5,000-digit float",
            b'{"items": [{"prompt": "a", "response": 1' + b"0" * 5000 + b".5}]}",
            422,
            "items[0].response",
        ),
    ],
)
def test_deep_nesting_and_huge_numbers_are_4xx_naming_the_field_on_every_scoring_route(
    client: FlaskClient, label: str, body: bytes, status: int, field: str
) -> None:
    paths = scoring_paths(client.application)
    for path in paths:
        response = client.post(path, data=body, content_type="application/json")
        assert (response.status_code, error_of(response)["field"]) == (status, field), path
    assert client.post("/v1/score", json=BREAD).status_code == 200
    # Python parses long floats; long ints and depth raised (/v2/models/<name>/infer still did until it
    # went through the shared reader)
    before = "" if "float" in label else " (was 500)"
    record(
        f"Limits: {label}",
        f"POST with {label} to every scoring route ({', '.join(paths)})",
        f"{status} naming `{field}`{before}; next request scores",
    )


def test_every_scoring_route_refuses_oversized_lists_before_parsing(make_app) -> None:
    client = make_app(max_items=4).test_client()
    body = {"prompt": "a", "responses": ["b"] * 5, "query": ["b"] * 5, "input": ["b"] * 5}
    for path in scoring_paths(client.application):
        response = client.post(path, json=body)
        assert (response.status_code, error_of(response)["code"]) == (413, "payload_too_large"), path


def test_every_scoring_route_refuses_a_body_over_the_limit_declared_or_chunked(make_app) -> None:
    client = make_app(max_body_bytes=1000).test_client()
    body = json.dumps({"prompt": "a", "responses": ["x" * 2000]}).encode()
    for path in scoring_paths(client.application):
        declared = client.post(path, data=body, content_type="application/json")
        chunked = client.post(
            path,
            input_stream=io.BytesIO(body),
            content_type="application/json",
            environ_overrides={"wsgi.input_terminated": True},  # no Content-Length: the server reads to the end
        )
        for response in (declared, chunked):
            assert (response.status_code, error_of(response)["code"]) == (413, "payload_too_large"), path


@pytest.mark.parametrize(
    "body", [b'{"prompt": "a", "responses": ["b"]', '{"prompt": "é"}'.encode("latin-1")], ids=["cut", "latin-1"]
)
def test_every_scoring_route_answers_400_to_a_body_that_is_not_json(client: FlaskClient, body: bytes) -> None:
    for path in scoring_paths(client.application):
        response = client.post(path, data=body, content_type="application/json")
        assert (response.status_code, error_of(response)["code"]) == (400, "malformed_json"), path


def test_an_unexpected_error_is_500_internal_error_without_a_traceback(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    registry = app.extensions["rmserve"].registry

    def broken(name: str | None) -> None:
        raise RuntimeError("a bug deep inside")

    registry.get = broken
    response = client.post("/v1/score", json=BREAD, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error" and "req-42" in error["message"]
    assert "Traceback" not in response.get_data(as_text=True) and "a bug deep inside" not in error["message"]
    assert "a bug deep inside" in caplog.text  # the log has it
    record(
        "Unexpected errors",
        "a bug raising inside a scoring route",
        "500 `internal_error` with the request ID in the message, no traceback or exception text in the body; "
        "the traceback in the server log",
    )


def test_when_every_scoring_slot_is_busy_requests_get_429_and_probes_still_answer(make_app) -> None:
    app = make_app(threads=1)  # one scoring slot (gunicorn adds two threads for probes)
    gate = hold_batcher(app)  # that slot waits on the model
    client = app.test_client()
    response = client.post("/v1/score", json=BREAD)
    assert response.status_code == 429 and error_of(response)["code"] == "queue_full"
    assert int(response.headers["Retry-After"]) >= 1
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    gate.set()
    wait_until(lambda: client.post("/v1/score", json=BREAD).status_code == 200, 10, "the slot to free up")


def test_many_concurrent_one_item_requests_queue_at_the_model_rather_than_getting_429(make_app) -> None:
    # RL trainers send one request per sample, dozens at once: with default settings 64 of them wait
    # on a busy model together and all get their scores (16 slots once refused 3 in 4 of them).
    app = make_app()
    gate = hold_batcher(app)
    admission = app.extensions["rmserve"].admission
    statuses: list[int] = []
    clients = [
        threading.Thread(target=lambda: statuses.append(app.test_client().post("/v1/score", json=BREAD).status_code))
        for _ in range(64)
    ]
    for thread in clients:
        thread.start()
    wait_until(lambda: admission.in_progress[0] == 65 or len(statuses) > 0, 10, "every request to be admitted")
    gate.set()
    for thread in clients:
        thread.join(10)
    assert statuses == [200] * 64


def test_bodies_in_progress_are_bounded_in_bytes_before_they_are_read(make_app) -> None:
    app = make_app(max_body_bytes=4096, max_inflight_body_bytes=4096)
    gate = hold_batcher(app)  # a small request is in progress
    client = app.test_client()
    padded = {**BREAD, "prompt": BREAD["prompt"] + " " * 3900}  # 4,026 bytes declared: over the 3,970 left
    response = client.post("/v1/score", json=padded)
    assert response.status_code == 429 and "RMSERVE_MAX_INFLIGHT_BODY_BYTES" in error_of(response)["message"]
    assert int(response.headers["Retry-After"]) >= 1
    assert client.get("/readyz").status_code == 200
    gate.set()
    wait_until(lambda: client.post("/v1/score", json=padded).status_code == 200, 10, "the bytes to be released")
    assert app.extensions["rmserve"].admission.in_progress == (0, 0)


def test_a_body_budget_smaller_than_the_largest_body_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="RMSERVE_MAX_INFLIGHT_BODY_BYTES must be >= RMSERVE_MAX_BODY_BYTES"):
        Settings.from_env({"RMSERVE_MAX_BODY_BYTES": "2048", "RMSERVE_MAX_INFLIGHT_BODY_BYTES": "1024"})


def test_the_throughput_behind_retry_after_is_measured_at_load(app: Flask) -> None:
    batcher = app.extensions["rmserve"].registry.get(None).batcher
    assert batcher.seconds_to_score(10_000) < 10_000  # a real rate before the first request, not a guess of 1 s
