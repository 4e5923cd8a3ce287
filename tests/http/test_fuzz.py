"""Hostile and random bodies: property tests over the request schemas, and schemathesis against a
live `rmserve serve` (gunicorn). Whatever arrives, the answer is a documented status with the one
error body, never a 5xx, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import requests
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.core.result import Err, Ok

from bench.live_server import running_server
from rmserve.errors import ServiceError
from rmserve.protocols.classify import ClassifyRequest
from rmserve.protocols.native import RankRequest, ScoreRequest
from rmserve.protocols.openrlhf import GetRewardRequest
from rmserve.protocols.schemas import parse
from tests.http.routes import scoring_paths
from tests.reliability_report import record
from tests.tiny_model import write_version

# hypothesis iterates its HealthCheck enum through an untyped metaclass
EVERY_HEALTH_CHECK = cast("list[HealthCheck]", list(HealthCheck))

DOCUMENTED = {200, 400, 404, 413, 422, 429, 504}

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=40,
)
texts = st.text(max_size=80)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "robot"]), "content": texts}),
    max_size=4,
)
items = st.lists(
    st.one_of(
        st.fixed_dictionaries({"prompt": texts, "response": texts}),
        st.fixed_dictionaries({"messages": messages}),
        json_values,
    ),
    max_size=5,
)
# Close to what clients send, with fields missing, mistyped or extra.
near_valid = st.one_of(
    st.fixed_dictionaries({"items": items}, optional={"model": st.sampled_from(["tiny", "other", None, 3])}),
    st.fixed_dictionaries({"prompt": texts | json_values, "responses": st.lists(texts, max_size=5) | json_values}),
    st.fixed_dictionaries({"query": st.lists(texts, max_size=4) | texts, "prompts": st.lists(texts, max_size=4)}),
    st.fixed_dictionaries({"model": st.just("tiny"), "input": texts | st.lists(texts, max_size=4) | json_values}),
    st.dictionaries(st.sampled_from(["items", "prompt", "responses", "query", "input", "model", "x"]), json_values),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=json_values | near_valid)
def test_parse_returns_a_body_or_a_service_error_for_any_json(payload: object) -> None:
    for schema in (ScoreRequest, RankRequest, GetRewardRequest, ClassifyRequest):
        try:
            parse(schema, payload)
        except ServiceError as error:
            assert error.status in (413, 422) and error.field, (schema, error.message)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    from rmserve.app import create_app
    from rmserve.config import Settings
    from rmserve.engine.registry import ModelRegistry

    root = tmp_path_factory.mktemp("fuzz-repository")
    write_version(root / "tiny" / "1")
    app_settings = Settings.from_env({}, model_repository=root, max_items=8)
    registry = ModelRegistry.load(app_settings).start()
    yield create_app(app_settings, registry).test_client()
    registry.stop(timeout=5)


answered: dict[int, int] = {}


@settings(max_examples=200, deadline=None, suppress_health_check=EVERY_HEALTH_CHECK)
@given(payload=json_values | near_valid, data=st.data(), raw=st.booleans())
def test_any_body_on_any_scoring_endpoint_gets_a_documented_answer(
    fuzz_client: FlaskClient, payload: object, data: st.DataObject, raw: bool
) -> None:
    endpoint = data.draw(st.sampled_from(scoring_paths(fuzz_client.application)))
    body = json.dumps(payload).encode() if not raw else json.dumps(payload).encode()[: max(1, len(str(payload)) // 2)]
    response = fuzz_client.post(endpoint, data=body, content_type="application/json")
    answered[response.status_code] = answered.get(response.status_code, 0) + 1
    assert response.status_code in DOCUMENTED, (endpoint, payload, response.get_data(as_text=True))
    if response.status_code != 200:
        body = response.get_json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}


def test_the_fuzzed_server_still_scores_and_the_run_is_recorded(fuzz_client: FlaskClient) -> None:
    response = fuzz_client.post("/v1/score", json={"prompt": "hi", "responses": ["hello"]})
    assert response.status_code == 200
    total = sum(answered.values())
    if total:
        summary = ", ".join(f"{count} x {status}" for status, count in sorted(answered.items()))
        record(
            "Fuzzing: property tests over the request schemas",
            f"hypothesis: {total} random and near-valid JSON bodies (truncated half the time) on "
            f"{', '.join(scoring_paths(fuzz_client.application))}; every schema's parse on 150 more",
            f"{summary}; 0 x 5xx; every error in the one error body; the server scores afterwards",
        )


# --- schemathesis against a live server -----------------------------------------------------------


@pytest.mark.slow
def test_live_server_conforms_to_its_document(tmp_path: Path) -> None:
    """Every operation of /openapi.json, fuzzed over HTTP (schemathesis' lazy pytest fixture loading
    does not work with this pytest, so each operation's strategy runs under hypothesis here)."""
    root = tmp_path / "repository"
    write_version(root / "tiny" / "1")
    statuses: dict[int, int] = {}
    with running_server(root, tmp_path / "server.log", env={"RMSERVE_MAX_ITEMS": "64"}) as server:
        schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
        results = list(schema.get_all_operations())
        assert not [result.err() for result in results if isinstance(result, Err)]  # the document parses whole
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        for operation in operations:

            @settings(max_examples=40, deadline=None, suppress_health_check=EVERY_HEALTH_CHECK, database=None)
            @given(case=operation.as_strategy())
            def conforms(case: schemathesis.Case) -> None:
                response = case.call(timeout=30)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                case.validate_response(response, excluded_checks=[not_a_server_error, positive_data_acceptance])
                assert response.status_code < 500 or response.status_code == 504, response.text

            conforms()
        assert requests.post(f"{server.base_url}/v1/score", json={"prompt": "a", "responses": ["b"]}, timeout=10).ok
        assert "Traceback" not in server.log()
    summary = ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items()))
    record(
        "Fuzzing: schemathesis against a live server",
        f"schemathesis from /openapi.json of a running `rmserve serve`: {sum(statuses.values())} generated "
        f"requests, valid and invalid, on all {len(operations)} operations",
        f"{summary}; 0 x 5xx (504 only for a too-short X-Timeout-Ms); every response matches the document; "
        "no traceback in the server log; scores afterwards",
    )
