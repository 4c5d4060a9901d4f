"""The Supabase call log mirror through the real gateway app and the real orchestrator on
Postgres: supabase-py's own client talks to a PostgREST faked at the HTTP layer with respx (it
uses httpx). Rows for a call's lifecycle, retries after a 500, a call that completes while
Supabase is down or hanging (the caller never notices), draining on shutdown, the bounded
queue, and `/health/database`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from realtime_gateway.call_log import CallLog
from realtime_gateway.calls import MemoryCallStore
from shared.events import CallEvent, EventType
from tests.gateway.conftest import (
    Gateway,
    auth,
    gateway,
    new_call_id,
    said,
    settings_for,
    started,
)
from tests.gateway.conftest import event as gh_event

SUPABASE = "https://project-ref.supabase.co"
SERVICE_KEY = "service-role-key-for-tests"
CALLS = "/rest/v1/calls"
CALLER = "+15550001111"  # what conftest.started() sends


@pytest.fixture
def supabase() -> Iterator[respx.MockRouter]:
    """Supabase's REST API (PostgREST). Only its host is mocked; nothing else goes out."""
    with respx.mock(base_url=SUPABASE, assert_all_called=False) as mock:
        yield mock


def mirrored_settings(data_dir: Path, **overrides: Any) -> Any:
    return settings_for(
        data_dir, supabase_url=SUPABASE, supabase_service_role_key=SERVICE_KEY, **overrides
    )


def rows(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def fast_retries(gw: Gateway) -> CallLog:
    call_log = gw.rt.call_log
    assert call_log is not None
    call_log.retry_delays_s = (0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02)
    return call_log


async def test_a_call_lifecycle_is_upserted_to_the_calls_table(
    data_dir: Path, orchestrator: httpx.ASGITransport, supabase: respx.MockRouter
) -> None:
    route = supabase.post(CALLS).respond(201)
    call_id = new_call_id()
    async with gateway(mirrored_settings(data_dir), orchestrator) as gw:
        assert (await gw.send(started(call_id))).status_code == 200
        await until(lambda: route.call_count == 1)
        assert (
            await gw.send(said(call_id, "1", "What are your opening hours?"))
        ).status_code == 200
        r = await gw.send(gh_event("call.ended", call_id, reason="hangup", duration_s=42.0))
        assert r.status_code == 200
        await until(lambda: route.call_count == 2)
        health = (await gw.client.get("/health/database")).json()
    first, last = rows(route)
    assert first["call_id"] == call_id and first["provider"] == "generic-http"
    assert (first["direction"], first["status"], first["turns"]) == ("inbound", "in-progress", 0)
    assert first["from_number"] == CALLER and first["to_number"] == "+15550002222"
    assert first["started_at"].endswith("Z") and "ended_at" not in first
    assert last["call_id"] == call_id and last["status"] == "completed"
    assert (last["turns"], last["end_reason"]) == (1, "hangup")
    assert last["ended_at"] and last["started_at"] == first["started_at"]
    assert isinstance(last["duration_s"], float)
    request = route.calls.last.request
    assert request.url.params["on_conflict"] == "call_id"
    assert "resolution=merge-duplicates" in request.headers["prefer"]
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    call_log = health["call_log"]
    assert (call_log["status"], call_log["written"], call_log["queue_depth"]) == ("connected", 2, 0)


async def test_a_500_is_retried_until_the_row_is_written(
    data_dir: Path, orchestrator: httpx.ASGITransport, supabase: respx.MockRouter
) -> None:
    route = supabase.post(CALLS)
    route.side_effect = [
        httpx.Response(500, json={"message": "temporarily unavailable"}),
        httpx.Response(503),
        httpx.Response(201),
    ]
    call_id = new_call_id()
    async with gateway(mirrored_settings(data_dir), orchestrator) as gw:
        fast_retries(gw)
        assert (await gw.send(started(call_id))).status_code == 200
        await until(lambda: route.call_count == 3)
        await until(lambda: gw.rt.call_log is not None and gw.rt.call_log.stats.written == 1)
        health = (await gw.client.get("/health/database")).json()["call_log"]
    assert [row["call_id"] for row in rows(route)] == [call_id] * 3
    assert (health["status"], health["failures"], health["written"]) == ("connected", 2, 1)
    assert "500" in (health["last_error"] or "") or "APIError" in (health["last_error"] or "")


async def test_a_call_completes_while_supabase_is_down(
    data_dir: Path,
    orchestrator: httpx.ASGITransport,
    supabase: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = supabase.post(CALLS).mock(side_effect=httpx.ConnectError("connection refused"))
    call_id = new_call_id()
    caplog.set_level(logging.INFO, logger="realtime_gateway.call_log")
    async with gateway(mirrored_settings(data_dir), orchestrator) as gw:
        fast_retries(gw)
        replies = [
            await gw.send(started(call_id)),
            await gw.send(said(call_id, "1", "Hello there")),
            await gw.send(gh_event("call.ended", call_id, reason="hangup")),
        ]
        assert [r.status_code for r in replies] == [200, 200, 200]
        assert replies[1].json()["actions"][0]["type"] == "say"
        status = (await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
        assert (status["status"], status["turns"]) == ("completed", 1)
        await until(lambda: route.call_count >= 2)
        health = (await gw.client.get("/health/database")).json()
        assert health["status"] == "in-memory"  # the call store is what calls need: still 200
        assert health["call_log"]["status"] == "failing"
        assert "ConnectError" in health["call_log"]["last_error"]

        # Supabase comes back: the row is written with the call's final state
        route.side_effect = None
        route.return_value = httpx.Response(201)
        await until(lambda: gw.rt.call_log is not None and gw.rt.call_log.stats.written >= 1)
        await until(lambda: gw.rt.call_log is not None and gw.rt.call_log.queue_depth == 0)
        assert (await gw.client.get("/health/database")).json()["call_log"]["status"] == "connected"
    last = rows(route)[-1]
    assert (last["call_id"], last["status"], last["turns"]) == (call_id, "completed", 1)
    logged = [r for r in caplog.records if r.name == "realtime_gateway.call_log"]
    assert any("failed" in r.getMessage() for r in logged)
    for record in logged:  # never a phone number in the mirror's logs
        text = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert "5550001111" not in text and "5550002222" not in text


async def test_a_hanging_supabase_never_slows_a_webhook(
    data_dir: Path, orchestrator: httpx.ASGITransport, supabase: respx.MockRouter
) -> None:
    release = asyncio.Event()
    arrived: list[str] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        arrived.append(json.loads(request.content)["call_id"])
        await release.wait()
        return httpx.Response(201)

    supabase.post(CALLS).mock(side_effect=hang)
    async with gateway(mirrored_settings(data_dir), orchestrator) as gw:
        call_log = fast_retries(gw)
        call_log.drain_timeout_s = 0.2
        for _ in range(3):
            call_id = new_call_id()
            t0 = time.perf_counter()
            r = await gw.send(started(call_id))
            assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
            r = await gw.send(gh_event("call.ended", call_id))
            assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        await until(lambda: len(arrived) == 1)
        # the first call's start row is in flight; waiting: its end, the other two calls
        # (each one row: start and end coalesced)
        assert call_log.queue_depth == 3
        t0 = time.perf_counter()
    # shutdown gives up on the hanging write after drain_timeout_s, never hangs the process
    assert time.perf_counter() - t0 < 3.0
    release.set()


async def test_shutdown_drains_queued_rows(
    data_dir: Path, orchestrator: httpx.ASGITransport, supabase: respx.MockRouter
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(201)

    route = supabase.post(CALLS).mock(side_effect=slow)
    ids = [new_call_id() for _ in range(4)]
    async with gateway(mirrored_settings(data_dir), orchestrator) as gw:
        for call_id in ids:
            assert (await gw.send(started(call_id))).status_code == 200
        assert gw.rt.call_log is not None and gw.rt.call_log.queue_depth >= 2
    assert sorted(row["call_id"] for row in rows(route)) == sorted(ids)


async def test_the_queue_is_bounded_and_coalesces_a_calls_rows() -> None:
    store = MemoryCallStore()
    call_log = CallLog(SUPABASE, SERVICE_KEY, store, queue_size=2)  # worker not started

    def ev(type_: EventType, call_id: str, **data: Any) -> CallEvent:
        return CallEvent(type=type_, call_id=call_id, data=data)

    assert call_log.record(ev(EventType.CALL_STARTED, "a", provider="twilio", to=CALLER))
    assert call_log.record(ev(EventType.CALL_ENDED, "a", status="completed", turns=3))
    assert call_log.record(ev(EventType.CALL_STARTED, "b", provider="vonage"))
    assert not call_log.record(ev(EventType.CALL_STARTED, "c", provider="vonage"))
    assert not call_log.record(ev(EventType.MESSAGE_SENT, "a"))  # not a lifecycle event
    status = call_log.status()
    assert (status["queue_depth"], status["dropped"], status["status"]) == (2, 1, "configured")


async def test_not_configured_means_no_mirror(gw: Gateway) -> None:
    assert gw.rt.call_log is None
    body = (await gw.client.get("/health/database")).json()
    assert body["call_log"] == {"status": "not_configured"}
