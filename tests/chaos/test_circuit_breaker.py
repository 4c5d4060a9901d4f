"""The gateway's circuit breaker on the orchestrator (issue 8, item 5): after N consecutive
failures callers get the spoken fallback at once (no request made), a probe goes through after
the cool-down, and a success closes it. The orchestrator is the real app on Postgres; its
outage is a transport that refuses connections while `down` is set."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from realtime_gateway.circuit_breaker import CircuitBreaker
from realtime_gateway.prompts import say
from tests.gateway.conftest import gateway, new_call_id, said, settings_for, started

APOLOGY = say("apology")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_states() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 10
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one probe at a time
    breaker.record_failure()  # the probe failed: open again for a full cool-down
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    breaker.abandon()  # a cancelled probe gives no verdict; the next request probes
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)


class Switchable(httpx.AsyncBaseTransport):
    """The real orchestrator, or (while `down`) a refused connection; counts requests sent."""

    def __init__(self, real: httpx.AsyncBaseTransport) -> None:
        self.real = real
        self.down = False
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.real.handle_async_request(request)


async def test_open_breaker_answers_the_fallback_at_once_then_recovers(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    transport = Switchable(orchestrator)
    settings = settings_for(
        data_dir, orchestrator_breaker_failures=3, orchestrator_breaker_reset_s=0.3
    )
    call = new_call_id()
    async with gateway(settings, transport) as g:
        assert (await g.send(started(call))).status_code == 200
        transport.down = True
        for turn in ("1", "2", "3"):  # three failing turns (each tried twice) open it
            r = await g.send(said(call, turn, "hello?"))
            assert r.status_code == 200 and r.json()["actions"][0]["text"] == APOLOGY
        assert g.rt.orchestrator.breaker is not None
        assert g.rt.orchestrator.breaker.state == "open"
        sent = transport.sent
        began = time.monotonic()
        for turn in ("4", "5", "6"):
            r = await g.send(said(call, turn, "anyone?"))
            assert r.status_code == 200 and r.json()["actions"][0]["text"] == APOLOGY
        assert transport.sent == sent  # nothing was sent while open
        assert time.monotonic() - began < 0.5
        transport.down = False  # the orchestrator is back
        await asyncio.sleep(0.35)  # the cool-down
        r = await g.send(said(call, "7", "What are your opening hours?"))
        assert r.status_code == 200 and r.json()["actions"][0]["text"] != APOLOGY
        assert g.rt.orchestrator.breaker.state == "closed"


async def test_refusals_do_not_open_the_breaker(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    settings = settings_for(data_dir, orchestrator_breaker_failures=2)
    async with gateway(settings, orchestrator) as g:
        breaker = g.rt.orchestrator.breaker
        assert breaker is not None
        for _ in range(4):  # an end for a conversation the orchestrator never saw: 4xx
            await g.rt.flow.end(new_call_id(), reason="completed")
        assert breaker.state == "closed"
