"""The live call API available from the foundation: a call's status (the rest of `/voice/calls`
comes with the telephony work)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from realtime_gateway.runtime import get_runtime
from shared.errors import ApiError


async def status(request: Request) -> JSONResponse:
    call_id = request.path_params["call_id"]
    call = await get_runtime(request).calls.get(call_id)
    if call is None:
        raise ApiError(404, "call_not_found", f"no live call {call_id!r}")
    return JSONResponse(call.to_public())
