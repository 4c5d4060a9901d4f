"""Several gateway instances sharing one real Redis act as one: a call started on one is
continued on another, `/ws` clients on any instance see every event, `call.ended` once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.gateway.conftest import (
    EVENTS_CHANNEL,
    admin_token,
    auth,
    event,
    gateway,
    new_call_id,
    said,
    served,
    settings_for,
    sign,
    started,
)
from tests.gateway.ws_client import collect


async def test_two_instances_share_calls_events_and_end_once(
    data_dir: Path, orchestrator: httpx.ASGITransport, redis_url: str
) -> None:
    settings = settings_for(data_dir, redis_url=redis_url)
    call_id = new_call_id()
    async with served(settings, orchestrator) as a, served(settings, orchestrator) as b:
        health = (await a.client.get("/health/database")).json()
        assert health["backend"] == "redis" and health["status"] == "connected"
        url_b = f"{b.ws_url}?call_id={call_id}&token={admin_token()}"
        url_a = f"{a.ws_url}?call_id={call_id}&token={admin_token()}"
        async with websockets.connect(url_b) as ws_b, websockets.connect(url_a) as ws_a:
            assert (await a.send(started(call_id))).status_code == 200
            # the retried start lands on the other instance: no second call, no second event
            assert (await b.send(started(call_id))).status_code == 200
            assert (await b.send(said(call_id, "1", "hi from b"))).status_code == 200
            # a replayed event on the other instance is still a replay
            ev = said(call_id, "2", "hi from a")
            assert (await a.send(ev)).status_code == 200
            body = json.dumps(ev).encode()
            replay = await b.client.post(
                "/voice/webhook/generic-http", content=body, headers=sign(body)
            )
            assert replay.status_code == 409
            # both instances report the end: one call.ended in all
            assert (await a.send(event("call.status", call_id, status="completed"))).is_success
            assert (await b.send(event("call.ended", call_id, reason="hangup"))).is_success

            def ended(evs: list[dict[str, object]]) -> bool:
                return any(e["type"] == "call.ended" for e in evs)

            seen_b = await collect(ws_b, ended)
            seen_a = await collect(ws_a, ended)

        expected = [
            "call.started",
            "message.received",
            "message.sent",
            "message.received",
            "message.sent",
            "call.ended",
        ]
        assert [e["type"] for e in seen_b] == expected
        assert [e["type"] for e in seen_a] == expected
        for gw in (a, b):
            r = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
            assert r.status_code == 200
            body_json = r.json()
            assert body_json["status"] == "completed" and body_json["turns"] == 2


async def test_redis_bus_delivers_across_instances_quickly(data_dir: Path, redis_url: str) -> None:
    settings = settings_for(data_dir, redis_url=redis_url)
    async with served(settings) as a, served(settings) as b:
        async with websockets.connect(f"{b.ws_url}?token={admin_token()}") as ws:
            t0 = time.perf_counter()
            for i in range(50):
                from shared.events import CallEvent, EventType

                await a.rt.bus.publish(
                    CallEvent(type=EventType.MESSAGE_SENT, call_id="x", data={"n": i})
                )
            got = await collect(ws, lambda evs: len(evs) == 50, timeout_s=5, settle_s=0)
            assert [e["data"]["n"] for e in got] == list(range(50))
            assert time.perf_counter() - t0 < 2
        status = (await b.client.get("/ws/status", headers=auth())).json()
        assert status["backend"] == "redis" and status["events_published"] == 0
        assert (await a.client.get("/ws/status", headers=auth())).json()["events_published"] == 50


async def test_events_channel_setting_separates_deployments(data_dir: Path, redis_url: str) -> None:
    """Pub/sub ignores db numbers: gateways on one Redis with different EVENTS_CHANNEL values
    never see each other's events; the channel actually used is the configured one."""
    import redis.asyncio as aioredis

    from shared.events import CallEvent, EventType

    other = f"{EVENTS_CHANNEL}:other"
    raw = aioredis.from_url(redis_url)
    spy = raw.pubsub()
    await spy.subscribe(other)
    try:
        async with (
            served(settings_for(data_dir, redis_url=redis_url)) as a,
            served(settings_for(data_dir, redis_url=redis_url, events_channel=other)) as b,
            websockets.connect(f"{b.ws_url}?token={admin_token()}") as ws,
        ):
            await a.rt.bus.publish(
                CallEvent(type=EventType.MESSAGE_SENT, call_id="x", data={"from": "a"})
            )
            await b.rt.bus.publish(
                CallEvent(type=EventType.MESSAGE_SENT, call_id="x", data={"from": "b"})
            )
            got = await collect(ws, lambda evs: len(evs) >= 2, timeout_s=1.0, settle_s=0.2)
            assert [e["data"]["from"] for e in got] == ["b"]
        seen = []
        for _ in range(5):  # the subscribe confirmation, then what was published
            msg = await spy.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None:
                seen.append(json.loads(msg["data"])["event"])
        seen = [json.loads(text)["data"]["from"] for text in seen]
        assert seen == ["b"]  # b's event on b's channel; a's on the test run's own channel
    finally:
        await spy.aclose()
        await raw.aclose()


async def test_a_store_failure_after_verification_still_answers_valid_actions(
    data_dir: Path, redis_url: str
) -> None:
    """A call key holding the wrong Redis type (corruption) makes handling fail: the bridge
    still gets 200 with an apology and a new listen, never a 5xx."""
    import redis.asyncio as aioredis

    call_id = new_call_id()
    raw = aioredis.from_url(redis_url)
    await raw.set(f"vao:gw:call:{call_id}", "not a hash")
    await raw.aclose()
    async with served(settings_for(data_dir, redis_url=redis_url)) as gw:
        r = await gw.send(started(call_id))
        assert r.status_code == 200
        assert [a["type"] for a in r.json()["actions"]] == ["say", "gather"]
        assert r.json()["actions"][0]["text"].startswith("Sorry")


async def test_unreachable_redis_still_answers_valid_actions_and_changes_nothing(
    data_dir: Path,
) -> None:
    """Redis down: the bridge is never answered a 5xx (the caller hears the apology and is
    listened to again) and nothing is done: no event, no call."""
    settings = settings_for(data_dir, redis_url="redis://127.0.0.1:1/0")
    async with served(settings) as gw:
        r = await gw.send(started(new_call_id()))
        assert r.status_code == 200
        assert [a["type"] for a in r.json()["actions"]] == ["say", "gather"]
        assert r.json()["actions"][0]["text"].startswith("Sorry")
        assert gw.rt.bus.events_published == 0


async def test_a_provider_switch_holds_for_every_instance(
    data_dir: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Behind a load balancer the switch lands on one instance; all of them follow it, one that
    starts later adopts it, and one that cannot drive the provider keeps its own (logged)."""
    from realtime_gateway import provider_choice
    from tests.gateway.test_provider_api import twilio_settings

    monkeypatch.setattr(provider_choice, "SYNC_INTERVAL_S", 0.05)
    both = twilio_settings(data_dir, redis_url=redis_url)
    async with (
        gateway(both) as a,
        gateway(both) as b,
        gateway(
            settings_for(data_dir, redis_url=redis_url)  # no Twilio variables here
        ) as bare,
    ):
        r = await a.client.post(
            "/voice/providers/switch", json={"provider": "twilio"}, headers=auth()
        )
        assert r.status_code == 200, r.text
        for _ in range(100):
            if b.rt.drivers.current_name == "twilio":
                break
            await asyncio.sleep(0.02)
        current = (await b.client.get("/voice/providers/current", headers=auth())).json()
        assert current["provider"] == "twilio"
        await asyncio.sleep(0.2)  # several polls: the instance without Twilio stays as it is
        assert bare.rt.drivers.current_name == "generic-http"
        assert "not configured on this one" in caplog.text
        async with gateway(both) as late:  # adopts it at start-up, before its first request
            assert late.rt.drivers.current_name == "twilio"
        r = await b.client.post(
            "/voice/providers/switch", json={"provider": "generic-http"}, headers=auth()
        )
        assert r.status_code == 200
        for _ in range(100):
            if a.rt.drivers.current_name == "generic-http":
                break
            await asyncio.sleep(0.02)
        assert a.rt.drivers.current_name == "generic-http"


async def test_a_switch_that_cannot_reach_redis_is_refused_and_changes_nothing(
    data_dir: Path,
) -> None:
    from tests.gateway.test_provider_api import twilio_settings

    async with gateway(twilio_settings(data_dir, redis_url="redis://127.0.0.1:1/0")) as gw:
        r = await gw.client.post(
            "/voice/providers/switch", json={"provider": "twilio"}, headers=auth()
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "provider_switch_unavailable"
        assert gw.rt.drivers.current_name == "generic-http"
