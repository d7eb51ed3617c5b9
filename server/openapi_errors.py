"""The OpenAPI schema documents the one error shape that every REST error uses.

FastAPI documents only each route's success status and, for routes with parameters, a 422 with
its own `HTTPValidationError` body, which Kuda never sends (server/errors.py answers
`{"error": {...}}`). Every `/api/v1` operation gets the error shape as its 422 and as its
`default` response (every other status it can answer: 400, 401, 403, 404, 409, 412, 413, 429,
503), so a client generated from the schema, and schemathesis (tests/test_openapi_fuzz.py),
know what an error looks like.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "PROTOCOL.md section 1: one shape for every REST error.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "snake_case, e.g. not_found"},
                "message": {"type": "string"},
                "details": {"description": "validation errors list the offending fields"},
            },
        }
    },
}
_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_UNUSED = ("HTTPValidationError", "ValidationError")


def document_errors(app: FastAPI) -> None:
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _add_errors(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Validation error", "content": _CONTENT}
            responses["default"] = {"description": "Error", "content": _CONTENT}
    text = repr(schema.get("paths", {}))
    for name in _UNUSED:  # left only if something still refers to it
        if f"#/components/schemas/{name}'" not in text:
            components.pop(name, None)
