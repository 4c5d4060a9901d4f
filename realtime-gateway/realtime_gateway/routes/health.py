"""`GET /health` in the spec's shape, with real checks; `GET /health/database`.

`/health` answers 200 while the process serves, `healthy` or `degraded` (and which dependency):
a gateway whose orchestrator is down still answers callers (with an apology), so a load balancer
should keep it. `/health/database` answers 503 when the call store is unreachable; it also
reports the Supabase call log mirror (`call_log`: not_configured / configured / connected /
failing, queue depth), which never makes it 503: calls do not depend on it.

Redis down (the live call store, `REDIS_URL`): `/health` stays 200 but says `degraded`, lists
`database` and names the store (`call_store`: backend `redis`, `unavailable`): every instance
shares that Redis, so taking them all out of the load balancer would only turn the apology
callers hear into no answer. `/health/database` answers 503 with `call_store_unavailable`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from realtime_gateway import __version__
from realtime_gateway.drivers.registry import DriverUnavailable
from realtime_gateway.runtime import GatewayRuntime, get_runtime
from realtime_gateway.store_outage import CODE, MESSAGE
from shared.events import utc_now_iso

ORCHESTRATOR_CHECK_S = 1.0
PROVIDER_CHECK_S = 2.0
HEALTHY = {
    "database": ("in-memory", "connected"),
    "orchestrator": ("connected",),
    "voice_provider": ("connected",),
}


async def voice_provider_health(rt: GatewayRuntime) -> str:
    try:
        driver = await rt.drivers.current()
        async with asyncio.timeout(PROVIDER_CHECK_S):
            report = await driver.validate_configuration()
    except DriverUnavailable:
        return "unavailable"
    except TimeoutError:
        return "timeout"
    if report.ok:
        return "connected"
    missing = ", ".join(report.missing + report.problems)
    return f"misconfigured ({missing})" if missing else "misconfigured"


async def health(request: Request) -> JSONResponse:
    rt = get_runtime(request)
    database, orchestrator, voice = await asyncio.gather(
        rt.calls.health(),
        rt.orchestrator.health(ORCHESTRATOR_CHECK_S),
        voice_provider_health(rt),
    )
    services = {"database": database, "orchestrator": orchestrator, "voice_provider": voice}
    degraded = [name for name, value in services.items() if value not in HEALTHY[name]]
    body: dict[str, Any] = {
        "status": "degraded" if degraded else "healthy",
        "timestamp": utc_now_iso(),
        "version": __version__,
        "uptime_s": round(time.time() - rt.started_at, 1),
        "services": services,
        "voice_provider": rt.drivers.current_name,
    }
    if degraded:
        body["degraded"] = degraded
    if database == "unavailable":
        body["call_store"] = {"backend": rt.calls.backend, "status": database, "message": MESSAGE}
    return JSONResponse(body)


async def database(request: Request) -> JSONResponse:
    rt = get_runtime(request)
    started = time.perf_counter()
    status = await rt.calls.health()
    body = {
        "status": status,
        "backend": rt.calls.backend,
        "events": rt.bus.backend,
        "call_log": rt.call_log.status() if rt.call_log else {"status": "not_configured"},
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "timestamp": utc_now_iso(),
    }
    if status == "unavailable":
        body["error"] = {"code": CODE, "message": MESSAGE}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse(body)
