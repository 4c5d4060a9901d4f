"""`GET /voice/providers/current` (the rest of the provider API comes with the telephony work)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from realtime_gateway.drivers.registry import DriverUnavailable
from realtime_gateway.runtime import get_runtime


async def current(request: Request) -> JSONResponse:
    rt = get_runtime(request)
    name = rt.drivers.current_name
    body: dict[str, Any] = {"provider": name, "available_providers": rt.drivers.available}
    try:
        driver = await rt.drivers.current()
    except DriverUnavailable as exc:
        body.update(status="unavailable", error=str(exc))
        return JSONResponse(body)
    report = await driver.validate_configuration()
    body.update(
        name=driver.display_name,
        capabilities=driver.get_capabilities(),
        status="active" if report.ok else "misconfigured",
        configuration={"ok": report.ok, "missing": report.missing, "problems": report.problems},
    )
    return JSONResponse(body)
