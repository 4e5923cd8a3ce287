"""The OpenAPI document is valid, and the app keeps every promise it makes in it (schemathesis).

Schemathesis generates requests from the document, valid and invalid, and checks every answer:
no 5xx, only documented status codes, and bodies that match the documented schemas.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import cast

import pytest
import schemathesis
from flask import Blueprint, Flask
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error, positive_data_acceptance

from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.http.openapi import Route, openapi_document, openapi_path, route
from tests.http.routes import IGNORED_METHODS
from tests.tiny_model import write_version

# hypothesis iterates its HealthCheck enum through an untyped metaclass
EVERY_HEALTH_CHECK = cast("list[HealthCheck]", list(HealthCheck))

_repository = Path(tempfile.mkdtemp(prefix="rmserve-openapi-"))
write_version(_repository / "tiny" / "1")
APP = create_app(Settings.from_env({}, model_repository=_repository, max_items=64))
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


def test_document_is_valid_openapi() -> None:
    validate(openapi_document(APP))


def test_every_route_the_app_serves_is_documented() -> None:
    served = {
        (openapi_path(rule.rule), method.lower())
        for rule in APP.url_map.iter_rules()
        for method in (rule.methods or set()) - IGNORED_METHODS
        if rule.endpoint != "static"
    }
    documented = {
        (path, method) for path, operations in openapi_document(APP)["paths"].items() for method in operations
    }
    assert served == documented


def test_a_route_declared_without_its_entry_stops_the_document() -> None:
    app = Flask(__name__)
    extra = Blueprint("extra", __name__)
    route(extra, Route("/documented", "get", "Has an entry."))(lambda: "ok")
    extra.add_url_rule("/undocumented", "undocumented", lambda: "no")
    app.register_blueprint(extra)
    with pytest.raises(LookupError, match="/undocumented"):
        openapi_document(app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=EVERY_HEALTH_CHECK)
def test_app_conforms_to_its_document(case: schemathesis.Case) -> None:
    response = case.call()
    # 504 is the documented answer to a deadline (X-Timeout-Ms) too short to meet; any other 5xx is a bug.
    # Some rules JSON Schema cannot state (the last message is the assistant's) make schema-valid
    # bodies a documented 422, so "positive data is accepted" is not checked.
    case.validate_response(response, excluded_checks=[not_a_server_error, positive_data_acceptance])
    assert response.status_code < 500 or response.status_code == 504, response.text
