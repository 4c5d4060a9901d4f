"""When the orchestrator fails (500, slow, refused), the caller hears an apology and is asked
again, an `error.occurred` event is emitted, retries reuse the idempotency key, and the call
still ends once. Only the orchestrator's failures are faked (respx router as its transport)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import websockets

from realtime_gateway.orchestrator_client import OrchestratorUnavailable
from realtime_gateway.prompts import say
from shared.auth import verify_service_token
from shared.contract import CallStart, TurnReply
from tests.gateway.conftest import (
    JWT_SECRET,
    ORCH_URL,
    admin_token,
    event,
    gateway,
    new_call_id,
    said,
    served,
    settings_for,
    started,
)
from tests.gateway.ws_client import collect

APOLOGY = say("apology")


def greeting(call_id: str) -> dict[str, Any]:
    return TurnReply(
        conversation_id=call_id,
        turn_id="0",
        reply="Hello there",
        actions=[{"type": "say", "text": "Hello there"}, {"type": "gather"}],  # type: ignore[list-item]
    ).model_dump()


def reply(call_id: str, turn_id: str, text: str = "We open at nine.") -> dict[str, Any]:
    return TurnReply(
        conversation_id=call_id,
        turn_id=turn_id,
        reply=text,
        actions=[{"type": "say", "text": text}, {"type": "gather"}],  # type: ignore[list-item]
    ).model_dump()


def orchestrator_router(call_id: str) -> respx.Router:
    router = respx.Router(base_url=ORCH_URL, assert_all_called=False)
    router.post(f"/conversations/{call_id}/start").respond(200, json=greeting(call_id))
    router.post(f"/conversations/{call_id}/end").respond(
        200, json={"conversation_id": call_id, "status": "ended"}
    )
    router.get("/health").respond(200, json={"status": "healthy"})
    return router


def transport(router: respx.Router) -> httpx.MockTransport:
    return httpx.MockTransport(router.async_handler)


async def test_orchestrator_500_twice_gives_apology_and_error_event(data_dir: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    turn = router.post(f"/conversations/{call_id}/messages").respond(500, json={"error": {}})
    async with (
        served(settings_for(data_dir), transport(router)) as gw,
        websockets.connect(f"{gw.ws_url}?call_id={call_id}&token={admin_token()}") as ws,
    ):
        assert (await gw.send(started(call_id))).status_code == 200
        r = await gw.send(said(call_id, "1", "hello"))
        assert r.status_code == 200
        assert r.json() == {
            "actions": [
                {"type": "say", "text": APOLOGY},
                {"type": "gather", "input": ["speech", "dtmf"], "timeout_s": 5.0},
            ]
        }
        events = await collect(ws, lambda evs: len(evs) >= 3, timeout_s=2.0)
    assert turn.call_count == 2  # one bounded retry
    keys = {c.request.headers["Idempotency-Key"] for c in turn.calls}
    assert keys == {f"{call_id}:1"}
    assert [e["type"] for e in events] == ["call.started", "message.received", "error.occurred"]
    assert events[2]["data"]["code"] == "orchestrator_unavailable"


async def test_a_500_then_success_is_retried_with_the_same_key(data_dir: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    turn = router.post(f"/conversations/{call_id}/messages")
    turn.side_effect = [
        httpx.Response(503, json={"error": {}}),
        httpx.Response(200, json=reply(call_id, "1")),
    ]
    async with gateway(settings_for(data_dir), transport(router)) as gw:
        await gw.send(started(call_id))
        r = await gw.send(said(call_id, "1", "when do you open?"))
        assert r.json()["actions"][0]["text"] == "We open at nine."
    assert turn.call_count == 2
    first, second = (c.request for c in turn.calls)
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == f"{call_id}:1"
    assert first.content == second.content
    # each request carries a valid service token and a request id
    principal = verify_service_token(JWT_SECRET, first.headers["Authorization"].split()[1])
    assert principal.role == "service"
    assert first.headers["X-Request-ID"]
    assert json.loads(first.content)["turn_id"] == "1"


async def test_a_4xx_is_not_retried(data_dir: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    turn = router.post(f"/conversations/{call_id}/messages").respond(422, json={"error": {}})
    async with gateway(settings_for(data_dir), transport(router)) as gw:
        await gw.send(started(call_id))
        r = await gw.send(said(call_id, "1", "hello"))
        assert r.status_code == 200 and r.json()["actions"][0]["text"] == APOLOGY
    assert turn.call_count == 1


async def test_slow_orchestrator_is_cut_at_the_turn_budget(data_dir: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=reply(call_id, "1"))

    router.post(f"/conversations/{call_id}/messages").mock(side_effect=slow)
    async with gateway(settings_for(data_dir, turn_timeout_s=0.5), transport(router)) as gw:
        await gw.send(started(call_id))
        t0 = time.perf_counter()
        r = await gw.send(said(call_id, "1", "hello"))
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()["actions"][0]["text"] == APOLOGY
        assert elapsed < 1.0, elapsed


async def test_orchestrator_connection_refused_gives_fallback_greeting_fast(
    data_dir: Path,
) -> None:
    settings = settings_for(data_dir, orchestrator_url="http://127.0.0.1:9", turn_timeout_s=2.0)
    async with gateway(settings) as gw:
        call_id = new_call_id()
        t0 = time.perf_counter()
        r = await gw.send(started(call_id))
        assert time.perf_counter() - t0 < 1.0
        assert r.status_code == 200
        assert [a["type"] for a in r.json()["actions"]] == ["say", "gather"]
        health = (await gw.client.get("/health")).json()
        assert health["status"] == "degraded" and health["degraded"] == ["orchestrator"]
        # httpx-aiohttp reports the refusal as a connect timeout: the error says what it is.
        with pytest.raises(OrchestratorUnavailable, match="unreachable: connection refused"):
            await gw.rt.orchestrator.start(
                call_id, CallStart(call_id=call_id, provider="generic-http")
            )


async def test_end_is_retried_in_the_background_when_the_orchestrator_fails(
    data_dir: Path,
) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    end = router.post(f"/conversations/{call_id}/end")
    end.side_effect = [
        httpx.Response(500),
        httpx.Response(500),
        httpx.Response(200, json={"conversation_id": call_id, "status": "ended"}),
    ]
    async with gateway(settings_for(data_dir), transport(router)) as gw:
        gw.rt.flow.end_retry_delays_s = (0.05, 0.05)
        await gw.send(started(call_id))
        r = await gw.send(event("call.ended", call_id, reason="hangup"))
        assert r.status_code == 200
        assert end.call_count == 2  # first attempt + its bounded retry, both 500
        assert gw.rt.flow.pending_tasks == 1
        for _ in range(100):
            if end.call_count >= 3:
                break
            await asyncio.sleep(0.01)
        assert end.call_count == 3
        await asyncio.sleep(0.01)
        assert gw.rt.flow.pending_tasks == 0
        # a second end report changes nothing
        await gw.send(event("call.status", call_id, status="completed"))
        assert end.call_count == 3


async def test_a_dropped_pooled_connection_is_retried_once(data_dir: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    turn = router.post(f"/conversations/{call_id}/messages")
    turn.side_effect = [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.Response(200, json=reply(call_id, "1", "Retried fine.")),
    ]
    async with gateway(settings_for(data_dir), transport(router)) as gw:
        await gw.send(started(call_id))
        r = await gw.send(said(call_id, "1", "hello"))
        assert r.json()["actions"][0]["text"] == "Retried fine."
    assert turn.call_count == 2


async def test_a_refused_end_is_not_retried(data_dir: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    end = router.post(f"/conversations/{call_id}/end").respond(404, json={"error": {}})
    async with gateway(settings_for(data_dir), transport(router)) as gw:
        r = await gw.send(event("call.ended", call_id, reason="hangup"))
        assert r.status_code == 200
        assert end.call_count == 1
        assert gw.rt.flow.pending_tasks == 0
