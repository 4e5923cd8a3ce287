"""The OpenAPI page: `GET /openapi.json` rendered as Markdown, from an app built without loading a model."""

from __future__ import annotations

import json
from typing import Any

from docs.gen.tables import code, table
from rmserve.app import create_app
from rmserve.config import Settings
from rmserve.engine.registry import ModelRegistry
from rmserve.http.openapi import openapi_document

DOWNLOAD = "openapi.json"  # beside the page in the built site
REF = "#/components/schemas/"

INTRO = f"""# OpenAPI document

The server describes every route it serves in an OpenAPI 3.1 document at `GET /openapi.json`,
built from the same typed models that parse the requests; a route declared without its entry
stops the server at start-up. This page renders that document; download it as
[{DOWNLOAD}]({DOWNLOAD}) for a client generator or a schema validator. It is generated when
the site is built, so it cannot drift from the code.

"""


def document() -> dict[str, Any]:
    """The document the server serves: the routes and schemas do not depend on the models loaded."""
    return openapi_document(create_app(Settings.from_env({}), ModelRegistry({}, default="")))


def as_json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2) + "\n"


def type_of(schema: dict[str, Any]) -> str:
    """A JSON schema as a short phrase, linking the named schemas it uses."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(REF)
        return f"[{name}](#{name})"
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return " or ".join(type_of(option) for option in options)
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return ("one of " if len(values) > 1 else "") + ", ".join(code(json.dumps(value)) for value in values)
    kind = schema.get("type", "any")
    inner = schema.get("items") if kind == "array" else schema.get("additionalProperties")
    if isinstance(inner, dict):
        return f"{kind} of {type_of(inner)}"
    return " or ".join(kind) if isinstance(kind, list) else kind


def schema_section(name: str, schema: dict[str, Any]) -> str:
    lines = [f"### {name} {{ #{name} }}", ""]
    if "description" in schema:
        lines += [schema["description"], ""]
    if "properties" in schema:
        required = set(schema.get("required", ()))
        rows = [
            (
                code(field),
                type_of(about),
                "yes" if field in required else "no",
                code(json.dumps(about["default"])) if "default" in about else "",
                about.get("description", ""),
            )
            for field, about in schema["properties"].items()
        ]
        lines.append(table(("field", "type", "required", "default", "description"), rows))
    else:
        lines += [f"Type: {type_of(schema)}.", ""]
    return "\n".join(lines)


def body_of(response: dict[str, Any]) -> str:
    return "; ".join(
        f"{type_of(content['schema'])} ({media_type})" for media_type, content in response.get("content", {}).items()
    )


def operation_section(path: str, method: str, operation: dict[str, Any]) -> str:
    lines = [f"### {method.upper()} {path}", "", operation["summary"], ""]
    lines += [
        "Authentication: a bearer key, when the server has keys configured."
        if operation["security"]
        else "Authentication: none; open even when the server has keys configured.",
        "",
    ]
    parameters = [
        (
            code(parameter["name"]),
            parameter["in"],
            "yes" if parameter["required"] else "no",
            type_of(parameter["schema"]),
            parameter.get("description", ""),
        )
        for parameter in operation["parameters"]
    ]
    lines += ["Parameters:", "", table(("name", "in", "required", "type", "description"), parameters)]
    if "requestBody" in operation:
        lines += [f"Request body: {body_of(operation['requestBody'])}.", ""]
    responses = [
        (status, response["description"], body_of(response)) for status, response in operation["responses"].items()
    ]
    lines += ["Responses:", "", table(("status", "meaning", "body"), responses)]
    return "\n".join(lines)


def render(spec: dict[str, Any]) -> str:
    operations = [
        operation_section(path, method, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    schemas = [schema_section(name, schema) for name, schema in sorted(spec["components"]["schemas"].items())]
    return (
        INTRO
        + f"Document version {spec['info']['version']} (OpenAPI {spec['openapi']}).\n\n"
        + "## Operations\n\n"
        + "\n".join(operations)
        + "\n## Schemas\n\n"
        + "\n".join(schemas)
    )
