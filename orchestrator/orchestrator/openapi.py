"""The orchestrator's OpenAPI document states the errors it really sends.

FastAPI documents a 422 as `{"detail": [...]}` and nothing else, while every error of this
service is `{"error": {"code", "message"}}` (shared.errors) and may be 400/401/403/404/409/
413/429/503. Property-based fuzzing (tests/fuzz) flagged each of those as a schema violation;
the document now describes them: the 422 carries the error shape, and every operation has a
`default` error response.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def document_errors(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        error = {"description": "An error, as JSON", "content": {"application/json": {}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if "422" in responses:
                    responses["422"]["content"] = {"application/json": {"schema": ERROR_REF}}
                responses["default"] = {
                    **error,
                    "content": {"application/json": {"schema": ERROR_REF}},
                }
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
