"""The generic streaming socket (`/voice/stream/generic-http`, issue 18) end to end: the real
gateway (uvicorn) and the real orchestrator on Postgres; a bridge that signs the upgrade with
the generic-http HMAC, and a browser that uses a short-lived call token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from realtime_gateway.drivers.generic_stream import signed_target
from realtime_gateway.prompts import say
from realtime_gateway.signatures import sign
from tests.gateway.conftest import GH_SECRET, PUBLIC, Gateway, auth, new_call_id, served
from tests.gateway.conftest import settings_for as base_settings

APOLOGY = say("apology")
PATH = "/voice/stream/generic-http"


def stream_settings(data_dir: Path) -> Any:
    return base_settings(data_dir)


def signed_headers(secret: str = GH_SECRET, query: str = "") -> dict[str, str]:
    ts = str(int(time.time()))
    url = f"{PUBLIC}{PATH}{'?' + query if query else ''}"
    return {"X-Gateway-Timestamp": ts, "X-Gateway-Signature": sign(secret, ts, signed_target(url))}


@asynccontextmanager
async def socket(
    gw: Gateway, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[Any]:
    local = gw.ws_url.replace("/ws", PATH) + (f"?{query}" if query else "")
    async with websockets.connect(local, additional_headers=headers or {}) as ws:
        yield ws


async def frames_until(ws: Any, done: Any, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while not out or not done(out[-1]):
            out.append(json.loads(await ws.recv()))
    return out


def last_text(frame: dict[str, Any]) -> bool:
    return frame["type"] == "text" and frame["last"] is True


async def test_a_signed_bridge_streams_a_call_and_bad_frames_do_not_end_it(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    call_id = new_call_id()
    async with served(stream_settings(data_dir), orchestrator) as gw:
        async with socket(gw, signed_headers()) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": call_id, "from": "+15550001111"}))
            greeting = await frames_until(ws, last_text)
            assert greeting[0] == {"type": "started", "call_id": call_id}
            assert "".join(f.get("token", "") for f in greeting).strip()
            await ws.send("not json")
            assert json.loads(await ws.recv())["type"] == "error"
            await ws.send(json.dumps({"type": "dance"}))
            assert json.loads(await ws.recv())["error"]["code"] == "bad_frame"
            await ws.send(json.dumps({"type": "prompt", "text": "x" * 20_000}))  # over the bound
            assert "larger than" in json.loads(await ws.recv())["error"]["message"]
            await ws.send(json.dumps({"type": "prompt", "text": "What are your opening hours?"}))
            reply = await frames_until(ws, last_text)
            said = "".join(f["token"] for f in reply if f["type"] == "text")
            assert said.strip() and APOLOGY not in said
            assert len([f for f in reply if f["type"] == "text"]) > 2  # pieces, not one blob
            await ws.send(json.dumps({"type": "end"}))
        status = (await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
        assert status["ended_at"] is not None and status["turns"] == 1


async def test_a_browser_opens_its_call_with_a_call_token(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with served(stream_settings(data_dir), orchestrator) as gw:
        minted = await gw.client.post("/voice/calls/stream-tokens", json={}, headers=auth())
        assert minted.status_code == 201, minted.text
        body = minted.json()
        assert body["url"].endswith(PATH) and body["expires_in"] <= 300
        async with socket(gw, query=f"token={body['token']}") as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "ignored-for-a-token"}))
            greeting = await frames_until(ws, last_text)
            assert greeting[0] == {"type": "started", "call_id": body["call_id"]}


@pytest.mark.parametrize(
    "how", ["unsigned", "wrong secret", "stale", "management token", "garbage token"]
)
async def test_unauthenticated_upgrades_are_refused_and_create_nothing(
    how: str, data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    from tests.gateway.conftest import admin_token

    headers: dict[str, str] = {}
    query = ""
    if how == "wrong secret":
        headers = signed_headers("not-the-secret-" + "x" * 20)
    elif how == "stale":
        headers = signed_headers()
        headers["X-Gateway-Timestamp"] = str(int(time.time()) - 3600)
    elif how == "management token":
        query = f"token={admin_token()}"  # not a call token
    elif how == "garbage token":
        query = "token=abc.def.ghi"
    async with served(stream_settings(data_dir), orchestrator) as gw:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with socket(gw, headers, query):
                pass
        assert refused.value.response.status_code == 403
        assert (await gw.client.get("/voice/calls", headers=auth())).json()["calls"] == []


async def test_minting_a_call_token_needs_an_operator(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    from shared.auth import mint_token
    from tests.gateway.conftest import JWT_SECRET

    async with served(stream_settings(data_dir), orchestrator) as gw:
        assert (await gw.client.post("/voice/calls/stream-tokens", json={})).status_code == 401
        viewer = {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub='v', role='viewer')}"}
        r = await gw.client.post("/voice/calls/stream-tokens", json={}, headers=viewer)
        assert r.status_code == 403
        r = await gw.client.post(
            "/voice/calls/stream-tokens", json={"agent_id": "../x"}, headers=auth()
        )
        assert r.status_code == 422


async def call_status(gw: Gateway, call_id: str) -> dict[str, Any]:
    r = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def ended_within(gw: Gateway, call_id: str, seconds: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = await call_status(gw, call_id)
        if status["ended_at"] is not None:
            return status
        await asyncio.sleep(0.05)
    return None


async def test_the_agents_goodbye_ends_the_call(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """The socket is the call: when the agent hangs up, nobody else will end it."""
    call_id = new_call_id()
    async with served(stream_settings(data_dir), orchestrator) as gw:
        async with socket(gw, signed_headers()) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": call_id}))
            await frames_until(ws, last_text)
            await ws.send(json.dumps({"type": "prompt", "text": "That's all, goodbye!"}))
            frames = await frames_until(ws, lambda f: f["type"] == "end")
            assert frames[-1] == {"type": "end", "reason": "hangup"}
            ended = await ended_within(gw, call_id, 5.0)
        assert ended is not None, "the call stayed in progress after the agent hung up"


async def test_a_dropped_socket_ends_its_call_unless_the_client_comes_back(
    data_dir: Path, orchestrator: httpx.ASGITransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_gateway.drivers import generic_stream

    monkeypatch.setattr(generic_stream, "RECONNECT_GRACE_S", 0.5)
    dropped, back = new_call_id(), new_call_id()
    async with served(stream_settings(data_dir), orchestrator) as gw:
        for call_id in (dropped, back):
            async with socket(gw, signed_headers()) as ws:
                await ws.send(json.dumps({"type": "start", "call_id": call_id}))
                await frames_until(ws, last_text)
            # closed without `end`
        async with socket(gw, signed_headers()) as ws:  # `back` reconnects within the grace
            await ws.send(json.dumps({"type": "start", "call_id": back}))
            await frames_until(ws, lambda f: f["type"] == "started")
            assert await ended_within(gw, dropped, 10.0) is not None
            await asyncio.sleep(1.0)  # past the grace of back's first socket
            assert (await call_status(gw, back))["ended_at"] is None
            await ws.send(json.dumps({"type": "end"}))
        assert await ended_within(gw, back, 5.0) is not None
