"""The call API: place, list, inspect and end calls (management JWT; roles below).

- `POST /voice/calls/initiate` (operator+): `{phone_number, options: {recording, transcription,
  machine_detection}, agent_id?, provider?, from_number?}`; `Idempotency-Key` header honoured.
  201 with `{call_id, provider, status, direction, to, agent_id}`; a replay answers 200 with the
  first call and `Idempotent-Replayed: true`. `call.started` is emitted when the provider
  accepts the call (not when the callee answers); `call.ended` follows whatever happens.
- `GET /voice/calls?status=&limit=` (any role): recent calls, newest first.
- `GET /voice/calls/{callId}/status` (any role).
- `POST /voice/calls/{callId}/end` (operator+): idempotent.
The work is in `realtime_gateway.outbound`.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from realtime_gateway import outbound
from realtime_gateway.management_auth import require_role
from realtime_gateway.read_model import public_call
from realtime_gateway.routes.webhooks import read_body
from realtime_gateway.runtime import get_runtime
from shared.contract import STATUS_ORDER
from shared.errors import ApiError, describe_validation_errors

ModelT = TypeVar("ModelT", bound=BaseModel)

STATUS_FILTERS = ("active", "ended", *STATUS_ORDER)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


async def read_model(request: Request, model: type[ModelT]) -> ModelT:
    """The JSON body as `model`; 400 for a body that is not a JSON object, 422 naming the
    field that fails validation."""
    raw = await read_body(request, get_runtime(request).settings.max_body_bytes)
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation_errors(exc.errors())) from None


DRAIN_RETRY_AFTER_S = "5"


async def initiate(request: Request) -> JSONResponse:
    principal = require_role(request, "operator", "placing a call")
    drain = getattr(request.app.state, "drain", None)
    if drain is not None and drain.draining:
        # Shutting down: a call dialled now would lose its gateway mid-ring. Nothing is dialled;
        # the client retries (another instance behind the load balancer takes it).
        raise ApiError(
            503,
            "shutting_down",
            "this gateway instance is shutting down; retry the call",
            {"Retry-After": DRAIN_RETRY_AFTER_S},
        )
    rt = get_runtime(request)
    key = outbound.check_idempotency_key(request.headers.get(outbound.IDEMPOTENCY_HEADER))
    body = await read_model(request, outbound.InitiateCall)
    result = await outbound.initiate(rt, body, principal.sub, key)
    if result.replayed:
        return JSONResponse(result.body, headers={"Idempotent-Replayed": "true"})
    return JSONResponse(result.body, status_code=201)


async def list_calls(request: Request) -> JSONResponse:
    role = require_role(request, "viewer", "listing calls").role
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUS_FILTERS:
        raise ApiError(400, "invalid_query", f"status: must be one of {', '.join(STATUS_FILTERS)}")
    raw_limit = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise ApiError(
                400, "invalid_query", f"limit: must be a whole number from 1 to {MAX_LIMIT}"
            )
        limit = int(raw_limit)
    calls = await get_runtime(request).calls.list_recent(limit=limit, status=status)
    return JSONResponse(
        {"calls": [public_call(c, role) for c in calls], "count": len(calls), "status": status}
    )


async def status(request: Request) -> JSONResponse:
    role = require_role(request, "viewer", "reading a call").role
    call_id = request.path_params["call_id"]
    call = await get_runtime(request).calls.get(call_id)
    if call is None:
        raise ApiError(404, "call_not_found", f"no live call {call_id!r}")
    return JSONResponse(public_call(call, role))


async def end(request: Request) -> JSONResponse:
    require_role(request, "operator", "ending a call")
    body = await outbound.end(get_runtime(request), request.path_params["call_id"])
    return JSONResponse(body)
