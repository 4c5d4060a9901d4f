"""Twilio ConversationRelay end to end (issue 18): the real gateway (uvicorn) and the real
orchestrator on Postgres; a test client that speaks ConversationRelay's messages over a real
WebSocket, its upgrade signed with the twilio SDK's `RequestValidator` over the public `wss://`
URL; every TwiML answer parsed with the SDK's documented verbs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import websockets
from twilio.request_validator import RequestValidator

from realtime_gateway.prompts import say
from tests.gateway import test_twilio_call as tw
from tests.gateway.conftest import PUBLIC, Gateway, auth, served
from tests.gateway.provider_fakes import insert_routed_agent

APOLOGY = say("apology")
WSS = "ws" + PUBLIC[4:]  # the public URL ConversationRelay opens (ws:// for this test host)


def relay_settings(data_dir: Path, **overrides: Any) -> Any:
    return tw.tw_settings(data_dir, twilio_voice_mode="relay", **overrides)


@asynccontextmanager
async def relay_socket(
    gw: Gateway, token: str = tw.TOKEN, signature: str | None = None
) -> AsyncIterator[Any]:
    """ConversationRelay's socket: the upgrade signed over the public wss:// URL."""
    url = f"{WSS}/voice/stream/twilio"
    sig = RequestValidator(token).compute_signature(url, {}) if signature is None else signature
    headers = {"X-Twilio-Signature": sig} if sig else {}
    local = gw.ws_url.replace("/ws", "/voice/stream/twilio")
    async with websockets.connect(local, additional_headers=headers) as ws:
        yield ws


def setup_frame(sid: str, session: str = "VX1", to: str = tw.OUR_NUMBER) -> str:
    return json.dumps(
        {
            "type": "setup",
            "sessionId": session,
            "callSid": sid,
            "from": tw.CALLER,
            "to": to,
            "direction": "inbound",
            "customParameters": {},
        }
    )


def prompt(text: str) -> str:
    return json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True})


async def reply_frames(ws: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Frames up to and including the one that ends the reply (`last`) or the session."""
    import asyncio

    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] == "end" or (frame["type"] == "text" and frame["last"]):
                return frames


def words(frames: list[dict[str, Any]]) -> str:
    """The reply as spoken; never the gateway's apology (the orchestrator answered)."""
    said = "".join(f["token"] for f in frames if f["type"] == "text")
    assert APOLOGY not in said, said
    return said


async def test_relay_mode_answers_conversation_relay_twiml_with_the_greeting(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = tw.new_sid()
    async with served(relay_settings(data_dir), orchestrator) as gw:
        root = tw.twiml_of(await tw.twilio_post(gw, "/voice/webhook/twilio", tw.call_form(sid)))
    (connect,) = list(root)
    assert connect.tag == "Connect"
    assert urlsplit(connect.get("action")).path == "/voice/webhook/twilio/relay-action"
    (relay,) = list(connect)
    assert relay.tag == "ConversationRelay"
    assert relay.get("url") == f"{WSS}/voice/stream/twilio"
    assert relay.get("welcomeGreeting") and relay.get("language") == "en-US"
    assert relay.get("interruptible") == "any" and relay.get("dtmfDetection") == "true"


async def test_a_relay_call_streams_replies_and_continues_after_a_reconnect(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = tw.new_sid()
    async with served(relay_settings(data_dir), orchestrator) as gw:
        await tw.twilio_post(gw, "/voice/webhook/twilio", tw.call_form(sid))
        async with relay_socket(gw) as ws:
            await ws.send(setup_frame(sid))
            await ws.send(prompt("What are your opening hours?"))
            first = await reply_frames(ws)
        assert first[-1] == {"type": "text", "token": "", "last": True}
        assert words(first).strip()
        # the socket dropped: Twilio asks the action URL, which reconnects the same conversation
        dropped = tw.call_form(sid, SessionId="VX1", SessionStatus="failed")
        root = tw.twiml_of(
            await tw.twilio_post(gw, "/voice/webhook/twilio/relay-action?turn=1", dropped)
        )
        (connect,) = list(root)
        assert connect.tag == "Connect" and connect[0].get("welcomeGreeting") is None
        async with relay_socket(gw) as ws:
            await ws.send(setup_frame(sid, "VX2"))
            await ws.send(prompt("What are your opening hours?"))  # replayed: answered once
            await ws.send(prompt("Thanks, and your address?"))
            second = await reply_frames(ws)
        assert words(second).strip()
        call = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert call["turns"] == 2


async def test_forged_and_unsigned_upgrades_are_refused_and_create_nothing(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with served(relay_settings(data_dir), orchestrator) as gw:
        for kwargs in ({"signature": ""}, {"token": "not-the-auth-token"}):
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with relay_socket(gw, **kwargs):
                    pass
            assert refused.value.response.status_code == 403
        calls = (await gw.client.get("/voice/calls", headers=auth())).json()["calls"]
        assert calls == []


async def test_a_transfer_ends_the_session_and_the_action_callback_dials(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    sid = tw.new_sid()
    dialled = await insert_routed_agent(pg_dsn, "+15557770000", "Front desk, hello.")
    async with served(relay_settings(data_dir), orchestrator) as gw:
        form = tw.call_form(sid, To=dialled)
        await tw.twilio_post(gw, "/voice/webhook/twilio", form)
        async with relay_socket(gw) as ws:
            await ws.send(setup_frame(sid, to=dialled))
            await ws.send(prompt("I want to speak to a human please"))
            frames = await reply_frames(ws)
            if frames[-1]["type"] != "end":
                frames += await reply_frames(ws)
        end = frames[-1]
        assert end["type"] == "end" and words(frames)
        handoff = json.loads(end["handoffData"])
        assert handoff["action"] == "transfer" and handoff["to"].startswith("+")
        form = tw.call_form(
            sid, To=dialled, SessionId="VX1", SessionStatus="ended", HandoffData=end["handoffData"]
        )
        root = tw.twiml_of(
            await tw.twilio_post(gw, "/voice/webhook/twilio/relay-action?turn=1", form)
        )
        assert [el.tag for el in root] == ["Dial", "Hangup"]
        assert root[0][0].text == handoff["to"]


async def test_two_instances_a_relay_call_on_a_is_ended_through_b_and_a_stopping_hands_over(
    data_dir: Path, orchestrator: httpx.ASGITransport, redis_url: str, pg_dsn: str
) -> None:
    """Two gateway instances on one Redis: an end asked of B reaches A's socket; A stopping
    hands its relay call over, and Twilio's action callback (served by B) reconnects the caller
    to B, in the same conversation — nothing lost, nothing stored twice."""
    from tests.gateway.provider_fakes import FakeTwilioApi, twilio_call_resource

    settings = relay_settings(data_dir, redis_url=redis_url)
    ended, moved = tw.new_sid(), tw.new_sid()
    async with served(settings, orchestrator) as a, served(settings, orchestrator) as b:
        fake = FakeTwilioApi(lambda sent: (200, twilio_call_resource(ended, "completed")))
        (await b.rt.drivers.get("twilio")).use_http_client(fake)  # type: ignore[attr-defined]
        for sid in (ended, moved):
            await tw.twilio_post(a, "/voice/webhook/twilio", tw.call_form(sid))
        async with relay_socket(a) as ws_ended, relay_socket(a) as ws_moved:
            await ws_ended.send(setup_frame(ended))
            await ws_moved.send(setup_frame(moved))
            await ws_moved.send(prompt("What are your opening hours?"))
            assert words(await reply_frames(ws_moved)).strip()
            r = await b.client.post(f"/voice/calls/{ended}/end", headers=auth())
            assert r.status_code == 200, r.text
            end = json.loads(await ws_ended.recv())
            assert end["type"] == "end" and json.loads(end["handoffData"])["action"] == "hangup"
            await a.rt.flow.streams.hand_over()  # what A does when its drain is over
            end = json.loads(await ws_moved.recv())
            assert json.loads(end["handoffData"]) == {"action": "resume"}
        # Twilio posts the action callback; B answers: reconnect, no greeting repeated
        form = tw.call_form(moved, SessionStatus="ended", HandoffData=end["handoffData"])
        root = tw.twiml_of(
            await tw.twilio_post(b, "/voice/webhook/twilio/relay-action?turn=1", form)
        )
        assert root[0].tag == "Connect" and root[0][0].get("welcomeGreeting") is None
        async with relay_socket(b) as ws:
            await ws.send(setup_frame(moved, "VX2"))
            await ws.send(prompt("And where are you?"))
            assert words(await reply_frames(ws)).strip()
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT role FROM messages WHERE conversation_id = $1 ORDER BY id", moved
        )
    finally:
        await conn.close()
    assert [r["role"] for r in rows].count("user") == 2  # both turns, each stored once
