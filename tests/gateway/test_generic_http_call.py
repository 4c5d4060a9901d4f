"""A whole generic-http call through the real gateway and the real orchestrator (on Postgres):
answers, `/ws` events in order, live call status, `call.ended` exactly once, retried turns."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import websockets

from tests.gateway.conftest import (
    admin_token,
    auth,
    event,
    new_call_id,
    said,
    served,
    settings_for,
    started,
)
from tests.gateway.ws_client import collect

ORDER = [
    "call.started",
    "message.received",
    "message.sent",
    "message.received",
    "message.sent",
    "call.ended",
]


async def test_full_call_answers_actions_and_streams_events_in_order(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    call_id = new_call_id()
    other_call = new_call_id()
    async with served(settings_for(data_dir), orchestrator) as gw:
        ws_url = f"{gw.ws_url}?call_id={call_id}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            r = await gw.send(started(call_id))
            assert r.status_code == 200, r.text
            actions = r.json()["actions"]
            assert [a["type"] for a in actions] == ["say", "gather"]
            assert actions[0]["text"]
            assert all(v is not None for a in actions for v in a.values())

            # another call at the same time: filtered out of this client's stream
            assert (await gw.send(started(other_call))).status_code == 200

            for turn, words in (("1", "What are your opening hours?"), ("2", "Thanks, bye")):
                r = await gw.send(said(call_id, turn, words))
                assert r.status_code == 200, r.text
                assert r.json()["actions"], r.text

            status = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
            assert status.status_code == 200
            assert status.json()["status"] == "in-progress"
            assert status.json()["turns"] == 2

            # the bridge reports the end twice: status completed, then call.ended
            r = await gw.send(event("call.status", call_id, status="completed"))
            assert r.status_code == 200 and r.json() == {"actions": []}
            r = await gw.send(event("call.ended", call_id, reason="hangup", duration_s=12.5))
            assert r.status_code == 200 and r.json() == {"actions": []}

            events = await collect(ws, lambda evs: any(e["type"] == "call.ended" for e in evs))

        assert [e["type"] for e in events] == ORDER
        assert {e["call_id"] for e in events} == {call_id}
        for e in events:
            assert set(e) == {"type", "call_id", "timestamp", "data"}
        assert events[1]["data"]["text"] == "What are your opening hours?"
        assert events[2]["data"]["turn_id"] == "1" and events[2]["data"]["text"]
        assert events[5]["data"]["reason"] == "completed"

        final = (await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
        assert final["status"] == "completed" and final["ended_at"]
        ws_status = (await gw.client.get("/ws/status", headers=auth())).json()
        assert ws_status["events_sent"] >= len(ORDER)
        assert ws_status["events_published"] >= len(ORDER) + 1  # + the other call's start

    conn = await asyncpg.connect(pg_dsn)
    try:
        conv = await conn.fetchrow("SELECT status FROM conversations WHERE id = $1", call_id)
        assert conv is not None and conv["status"] == "ended"
        rows = await conn.fetch(
            "SELECT turn_id, role FROM messages WHERE conversation_id = $1", call_id
        )
        pairs = sorted((r["turn_id"], r["role"]) for r in rows)
        assert ("1", "user") in pairs and ("2", "assistant") in pairs
        assert len(pairs) == len(set(pairs))
    finally:
        await conn.close()


async def test_retried_turn_gets_the_same_reply_and_one_event_pair(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    call_id = new_call_id()
    async with served(settings_for(data_dir), orchestrator) as gw:
        async with websockets.connect(f"{gw.ws_url}?call_id={call_id}&token={admin_token()}") as ws:
            assert (await gw.send(started(call_id))).status_code == 200
            first = await gw.send(said(call_id, "1", "Do you open on Sundays?"))
            # the bridge retries the same turn as a new delivery (new event_id, same turn_id)
            again = await gw.send(said(call_id, "1", "Do you open on Sundays?"))
            assert first.status_code == again.status_code == 200
            assert first.json() == again.json()
            events = await collect(ws, lambda evs: len(evs) >= 3, timeout_s=2.0)
        assert [e["type"] for e in events] == ["call.started", "message.received", "message.sent"]
        status = (await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
        assert status["turns"] == 1

    conn = await asyncpg.connect(pg_dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE conversation_id = $1 AND turn_id = '1'", call_id
        )
        assert n == 2  # one user + one assistant message
    finally:
        await conn.close()


async def test_input_for_an_unknown_call_creates_it(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """E.g. a gateway restarted mid-call without Redis: the call is tracked from its next turn."""
    call_id = new_call_id()
    async with served(settings_for(data_dir), orchestrator) as gw:
        async with websockets.connect(f"{gw.ws_url}?call_id={call_id}&token={admin_token()}") as ws:
            r = await gw.send(said(call_id, "7", "Hello?"))
            assert r.status_code == 200 and r.json()["actions"]
            events = await collect(ws, lambda evs: len(evs) >= 3, timeout_s=2.0)
        assert [e["type"] for e in events] == ["call.started", "message.received", "message.sent"]
        status = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
        assert status.status_code == 200 and status.json()["provider"] == "generic-http"
