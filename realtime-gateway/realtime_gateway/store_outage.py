"""The live call store (Redis) unreachable: a clear 503, never a 500 with a traceback.

Every management route that reads or writes live call state (`GET /voice/calls`, a call's
status, ending a call, the idempotency ledger of `initiate`) fails the same way when Redis is
down: redis-py raises `ConnectionError` / `TimeoutError`. `on_route_error` (the app's last
exception handler) answers those with 503 `call_store_unavailable`, naming Redis and asking for a
retry, and logs one warning line (no traceback: the outage is known, `/health` says
`degraded`). Anything else is still the generic 500 of `shared.errors`.

`outage_handlers()` registers the handler for redis-py's own classes (only when `REDIS_URL` is
set), inside routing: the exception stops there, so the server logs no traceback either. The
app's last-resort handler (`on_route_error`) also recognises one wrapped in another exception.

Provider webhooks never reach this handler: their drivers answer with the fallback (an apology
and a new listen), so a provider never sees a 5xx (`routes/webhooks.py`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from shared.errors import error_response, on_unexpected_error

log = logging.getLogger(__name__)

RETRY_AFTER_S = "5"
CODE = "call_store_unavailable"
MESSAGE = "the live call store (Redis) is unreachable; retry shortly"


def is_call_store_outage(exc: BaseException) -> bool:
    """A Redis connection failure or timeout, anywhere in `exc`'s cause chain. redis-py is only
    imported when `REDIS_URL` is set: if it was never imported, no exception can come from it."""
    module = sys.modules.get("redis.exceptions")
    if module is None:
        return False
    outage = (module.ConnectionError, module.TimeoutError)
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, outage):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def call_store_unavailable(**extra: object) -> Response:
    return error_response(503, CODE, MESSAGE, {"Retry-After": RETRY_AFTER_S}, **extra)


async def on_call_store_outage(request: Request, exc: Exception) -> Response:
    log.warning(
        "call store unavailable", extra={"path": request.url.path, "error": type(exc).__name__}
    )
    return call_store_unavailable()


Handler = Callable[[Request, Exception], Awaitable[Response]]


def outage_handlers(redis_url: str | None) -> dict[type[Exception], Handler]:
    if not redis_url:
        return {}
    from redis import exceptions  # installed with the gateway; imported only when used

    return {
        exceptions.ConnectionError: on_call_store_outage,
        exceptions.TimeoutError: on_call_store_outage,
    }


async def on_route_error(request: Request, exc: Exception) -> Response:
    if is_call_store_outage(exc):
        return await on_call_store_outage(request, exc)
    return await on_unexpected_error(request, exc)
