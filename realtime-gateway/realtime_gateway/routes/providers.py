"""The provider API (management JWT): which providers exist, which is current, switching.

- `GET /voice/providers`: every provider with its display name, capabilities and status
  (`active`: current and configured; `configured`: would validate; `not_configured`, with the
  missing variables; `unavailable`: its driver cannot be loaded).
- `GET /voice/providers/current`; `GET /voice/providers/{provider}/capabilities` (404 unknown).
- `GET /voice/providers/test`: the current provider's configuration and reachability (its API
  is asked something harmless, e.g. Twilio's account, Vonage's call list, Connect's instance);
  no call is placed.
- `POST /voice/providers/switch` `{"provider": "..."}` (admin): only to a provider whose
  configuration validates (400 naming what is missing otherwise). Calls in progress keep their
  provider: each live call records it, and its webhooks (`/voice/webhook/{provider}/...`), status
  and end go to that provider's driver; new calls and `POST /voice/webhook` use the new one.
  The switch applies to this gateway process (set `VOICE_PROVIDER` for every instance).

Drivers are imported in a thread the first time they are listed, so the SDK imports a driver
module pulls in never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from realtime_gateway.drivers.base import BaseDriver
from realtime_gateway.drivers.registry import (
    DRIVERS,
    DriverUnavailable,
    UnknownProvider,
    load_driver_class,
)
from realtime_gateway.management_auth import require_role
from realtime_gateway.outbound import check_provider
from realtime_gateway.routes.calls import read_model
from realtime_gateway.runtime import GatewayRuntime, get_runtime
from shared.errors import ApiError, error_response

log = logging.getLogger(__name__)

PROVIDER_TEST_TIMEOUT_S = 10.0


class SwitchProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=64)
    check_reachability: bool = False


async def _driver(rt: GatewayRuntime, name: str) -> BaseDriver:
    """The driver for `name`; its module is imported in a thread on first use."""
    if name not in rt.drivers.loaded():
        await asyncio.to_thread(load_driver_class, name)
    return await rt.drivers.get(name)


async def _describe(rt: GatewayRuntime, name: str) -> dict[str, Any]:
    current = name == rt.drivers.current_name
    try:
        driver = await _driver(rt, name)
    except DriverUnavailable as exc:
        return {
            "name": name,
            "capabilities": [],
            "status": "unavailable",
            "current": current,
            "error": str(exc),
        }
    report = await driver.validate_configuration()  # no network I/O without reachability
    status = ("active" if current else "configured") if report.ok else "not_configured"
    body: dict[str, Any] = {
        "name": driver.display_name,
        "capabilities": driver.get_capabilities(),
        "status": status,
        "current": current,
    }
    if not report.ok:
        body["missing"] = report.missing
        body["problems"] = report.problems
    return body


async def list_providers(request: Request) -> JSONResponse:
    require_role(request, "viewer", "listing providers")
    rt = get_runtime(request)
    names = rt.drivers.available
    described = await asyncio.gather(*(_describe(rt, name) for name in names))
    return JSONResponse(
        {
            "available_providers": names,
            "current_provider": rt.drivers.current_name,
            "providers": dict(zip(names, described, strict=True)),
        }
    )


async def current(request: Request) -> JSONResponse:
    require_role(request, "viewer", "reading the current provider")
    rt = get_runtime(request)
    name = rt.drivers.current_name
    body: dict[str, Any] = {"provider": name, "available_providers": rt.drivers.available}
    try:
        driver = await _driver(rt, name)
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


async def capabilities(request: Request) -> JSONResponse:
    require_role(request, "viewer", "reading provider capabilities")
    rt = get_runtime(request)
    name = request.path_params["provider"]
    if name not in DRIVERS:
        raise ApiError(
            404,
            "unknown_provider",
            f"unknown voice provider {name!r}; one of {', '.join(DRIVERS)}",
        )
    try:
        driver = await _driver(rt, name)
    except DriverUnavailable as exc:
        raise ApiError(503, "provider_unavailable", str(exc)) from None
    return JSONResponse(
        {
            "provider": name,
            "name": driver.display_name,
            "capabilities": driver.get_capabilities(),
            "current": name == rt.drivers.current_name,
        }
    )


async def test(request: Request) -> JSONResponse:
    """Validate the current provider's configuration and ask its API something harmless."""
    require_role(request, "viewer", "testing the provider")
    rt = get_runtime(request)
    name = rt.drivers.current_name
    try:
        driver = await _driver(rt, name)
    except DriverUnavailable as exc:
        return JSONResponse(
            {"provider": name, "ok": False, "status": "unavailable", "error": str(exc)}
        )
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROVIDER_TEST_TIMEOUT_S):
            report = await driver.validate_configuration(check_reachability=True)
    except TimeoutError:
        return JSONResponse(
            {
                "provider": name,
                "ok": False,
                "status": "timeout",
                "error": f"no answer from {driver.display_name} in {PROVIDER_TEST_TIMEOUT_S:g} s",
            }
        )
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    ok = report.ok and report.reachable is not False
    if ok:
        status = "ok"
    elif report.missing:
        status = "not_configured"
    elif report.reachable is False:
        status = "unreachable"
    else:
        status = "misconfigured"
    log.info("provider tested", extra={"provider": name, "result": status})
    return JSONResponse(
        {
            "provider": name,
            "name": driver.display_name,
            "ok": ok,
            "status": status,
            "configuration": {"missing": report.missing, "problems": report.problems},
            "reachable": report.reachable,
            "latency_ms": latency_ms,
            "call_placed": False,
        }
    )


async def switch(request: Request) -> JSONResponse:
    principal = require_role(request, "admin", "switching the voice provider")
    rt = get_runtime(request)
    body = await read_model(request, SwitchProvider)
    name = check_provider(body.provider)
    previous = rt.drivers.current_name
    try:
        driver = await _driver(rt, name)
    except (DriverUnavailable, UnknownProvider) as exc:
        raise ApiError(400, "provider_unavailable", str(exc)) from None
    report = await driver.validate_configuration(check_reachability=body.check_reachability)
    if not report.ok:
        detail = "; ".join(
            ([f"missing {', '.join(report.missing)}"] if report.missing else []) + report.problems
        )
        return error_response(
            400,
            "provider_not_configured",
            f"cannot switch to {name}: {detail}",
            missing=report.missing,
            problems=report.problems,
        )
    if rt.provider_choice is not None:
        try:
            await rt.provider_choice.publish(name)  # first: all instances or none
        except Exception as exc:
            raise ApiError(
                503,
                "provider_switch_unavailable",
                f"cannot record the switch for every gateway instance (Redis: "
                f"{type(exc).__name__}); the provider is still {previous}",
            ) from None
    await rt.drivers.switch(name)
    log.warning(
        "voice provider switched through the API",
        extra={"provider": name, "previous_provider": previous, "by": principal.sub},
    )
    return JSONResponse(
        {
            "provider": name,
            "previous_provider": previous,
            "name": driver.display_name,
            "capabilities": driver.get_capabilities(),
            "status": "active",
        }
    )
