"""JSON in and out of the HTTP edge through orjson: several times faster than the stdlib json (docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import JSONProvider

# numpy scalars and arrays serialize natively; non-str dict keys (never ours) would be an error.
DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes | str) -> Any:
    """Decode a request body; raises orjson.JSONDecodeError (a ValueError) on anything not JSON."""
    return orjson.loads(body)


class OrjsonProvider(JSONProvider):
    """Flask's `jsonify` and `app.json` through orjson; keys keep their insertion order."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, option=DUMPS_OPTIONS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = orjson.dumps(self._prepare_response_obj(args, kwargs), option=DUMPS_OPTIONS)
        return Response(body, mimetype="application/json")


def install(app: Flask) -> None:
    app.json = OrjsonProvider(app)
