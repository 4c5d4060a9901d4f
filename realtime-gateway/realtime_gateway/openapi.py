"""The gateway's OpenAPI 3.1 document, served at `GET /openapi.json` (management JWT).

Starlette has no schema of its own worth fuzzing (docstring YAML), so the document is written
here, with request bodies taken from the pydantic models the routes validate with (call
initiation, provider switch, generic-http events), so it cannot drift from what is enforced.
Every operation documents its success shape and a `default` error shape (`{"error": {code,
message}}`), which is what any 4xx/5xx of this service looks like. Property-based fuzzing
(tests/fuzz) drives the app from this document.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse

from realtime_gateway import __version__
from shared.contract import CALL_STATUSES, ID_PATTERN

REF = "#/components/schemas/{model}"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

ERROR = {
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
OBJECT: dict[str, Any] = {"type": "object"}
TWIML = {"text/xml": {"schema": {"type": "string"}}}
TWILIO_FORM = {
    "type": "object",
    "required": ["CallSid", "AccountSid"],
    "properties": {
        "CallSid": {"type": "string", "maxLength": 64},
        "AccountSid": {"type": "string", "maxLength": 64},
        "From": {"type": "string", "maxLength": 64},
        "To": {"type": "string", "maxLength": 64},
        "CallStatus": {
            "type": "string",
            "enum": list(CALL_STATUSES),
        },
        "Direction": {"type": "string", "enum": ["inbound", "outbound-api", "outbound-dial"]},
        "SpeechResult": {"type": "string", "maxLength": 500},
        "Confidence": {"type": "string", "maxLength": 20},
        "Digits": {"type": "string", "maxLength": 32},
        "CallDuration": {"type": "string", "maxLength": 10},
        "SequenceNumber": {"type": "string", "maxLength": 10},
    },
}


def _model(components: dict[str, Any], name: str, adapter: TypeAdapter[Any]) -> dict[str, Any]:
    schema = adapter.json_schema(ref_template=REF, by_alias=True)
    for def_name, definition in schema.pop("$defs", {}).items():
        components[def_name] = definition
    components[name] = schema
    return {"$ref": REF.format(model=name)}


def _json_ok(status: str = "200") -> dict[str, Any]:
    return {status: {"description": "OK", "content": {JSON: {"schema": OBJECT}}}}


def _errors() -> dict[str, Any]:
    return {
        "default": {
            "description": "An error, as JSON",
            "content": {JSON: {"schema": {"$ref": REF.format(model="Error")}}},
        }
    }


def _op(
    summary: str,
    *,
    ok: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    media: str = JSON,
    params: list[dict[str, Any]] | None = None,
    secured: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**(ok or _json_ok()), **_errors()}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
    if params:
        op["parameters"] = params
    op["security"] = [{"bearer": []}] if secured else []
    return op


def _path_param(name: str, pattern: str | None = ID_PATTERN) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema}


def build_openapi() -> dict[str, Any]:
    # imported here: the document is built on first request, not at start-up
    from realtime_gateway.drivers.generic_http import GenericEvent
    from realtime_gateway.outbound import InitiateCall
    from realtime_gateway.routes.providers import SwitchProvider

    components: dict[str, Any] = {"Error": ERROR}
    initiate = _model(components, "InitiateCall", TypeAdapter(InitiateCall))
    switch = _model(components, "SwitchProvider", TypeAdapter(SwitchProvider))
    event = _model(components, "GenericHttpEvent", TypeAdapter(GenericEvent))
    provider = _path_param("provider", r"^[a-z-]+$")
    twilio_steps = {
        "/voice/webhook/twilio": "Twilio voice webhook (call answered)",
        "/voice/webhook/twilio/gather": "Twilio <Gather> result (one caller turn)",
        "/voice/webhook/twilio/status": "Twilio status callback",
    }
    paths: dict[str, Any] = {
        "/health": {"get": _op("Liveness and dependencies", secured=False)},
        "/health/database": {"get": _op("Call store reachability", secured=False)},
        "/voice/providers": {"get": _op("Every provider and its status")},
        "/voice/providers/current": {"get": _op("The current provider")},
        "/voice/providers/test": {"get": _op("Check the current provider's configuration")},
        "/voice/providers/switch": {"post": _op("Switch provider (admin)", body=switch)},
        "/voice/providers/{provider}/capabilities": {
            "get": _op("A provider's capabilities", params=[provider])
        },
        "/voice/calls": {
            "get": _op(
                "Recent calls",
                params=[
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                ],
            )
        },
        "/voice/calls/initiate": {
            "post": _op(
                "Place an outbound call (operator)",
                ok=_json_ok("201") | _json_ok("200"),
                body=initiate,
                params=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "maxLength": 200},
                    }
                ],
            )
        },
        "/voice/calls/{call_id}/status": {
            "get": _op("A call's live status", params=[_path_param("call_id")])
        },
        "/voice/calls/{call_id}/end": {
            "post": _op("End a call (operator)", params=[_path_param("call_id")])
        },
        "/ws/status": {"get": _op("The /ws event socket's status")},
        "/voice/webhook/generic-http": {
            "post": _op(
                "generic-http bridge event (HMAC-signed: X-Gateway-Timestamp/-Signature)",
                body=event,
                secured=False,
                params=[
                    {"name": "X-Gateway-Timestamp", "in": "header", "schema": {"type": "string"}},
                    {"name": "X-Gateway-Signature", "in": "header", "schema": {"type": "string"}},
                ],
            )
        },
    }
    for path, summary in twilio_steps.items():
        paths[path] = {
            "post": _op(
                f"{summary} (X-Twilio-Signature)",
                ok={"200": {"description": "TwiML", "content": TWIML}},
                body=TWILIO_FORM,
                media=FORM,
                secured=False,
            )
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Voice Agent Orchestrator: realtime-gateway", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_DOCUMENT: dict[str, Any] | None = None


async def openapi_json(request: Request) -> JSONResponse:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = build_openapi()
    return JSONResponse(_DOCUMENT)
