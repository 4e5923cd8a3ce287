"""The routes an app serves, read from its URL map, so "every route" tests cover routes added later."""

from __future__ import annotations

from flask import Flask

IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})  # Flask answers these for every route itself


def served_routes(app: Flask, model: str = "tiny") -> list[tuple[str, str]]:
    """(method, path) of every route `app` serves, its path parameters naming `model`."""
    adapter = app.url_map.bind("localhost")
    return sorted(
        (method, adapter.build(rule.endpoint, dict.fromkeys(rule.arguments, model), method=method))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - IGNORED_METHODS
    )


def scoring_paths(app: Flask, model: str = "tiny") -> list[str]:
    """The path of every POST route: each one scores, so each one reads a body through the shared guards."""
    paths = [path for method, path in served_routes(app, model) if method == "POST"]
    assert f"/v2/models/{model}/infer" in paths, paths  # the enumeration is not vacuous
    return paths
