"""Routes about one model, named by `<name>` in their path: declared, looked up and answered in one place."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel

from rmserve.engine.servable import Servable
from rmserve.http.openapi import Route, route
from rmserve.http.state import state

ModelView = Callable[[Servable], BaseModel]


def model_route(
    blueprint: Blueprint,
    path: str,
    summary: str,
    response: type[BaseModel],
    errors: tuple[int, ...] = (401, 404, 503),
    exclude_none: bool = False,
) -> Callable[[ModelView], ModelView]:
    """Declare a GET of `path` (which names the model as `<name>`) whose view gets the servable and returns its
    answer; an unknown name is a 404 before the view runs."""

    def declare(view: ModelView) -> ModelView:
        def respond(name: str) -> Response:
            return jsonify(view(state().scoring.model(name)).model_dump(exclude_none=exclude_none))

        spec = Route(path, "get", summary, response=response, errors=errors)
        route(blueprint, spec, endpoint=view.__name__)(respond)
        return view

    return declare
