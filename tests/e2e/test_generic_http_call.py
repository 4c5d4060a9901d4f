"""A whole generic-http call through both services running as real uvicorn processes:
signed webhooks in, `/ws` events out in order, the conversation's rows in the real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from shared.auth import mint_token
from tests.e2e.services import Service, run_service

pytestmark = pytest.mark.slow

SECRET = "e2e-generic-http-secret"
JWT_SECRET = "e2e-jwt-secret-" + "x" * 32


def signed(event: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """Sign as a generic-http bridge does (PROTOCOLS.md): v1=HMAC-SHA256(ts + "." + body)."""
    body = json.dumps(event).encode()
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Gateway-Timestamp": ts,
        "X-Gateway-Signature": f"v1={sig}",
    }
    return body, headers


def event(type_: str, call_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "type": type_,
        "call_id": call_id,
        "timestamp": int(time.time()),
        **fields,
    }


@pytest.fixture(scope="module")
def services(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Service]]:
    data_dir = tmp_path_factory.mktemp("e2e-data")
    common = {"DATA_DIR": str(data_dir), "JWT_SECRET": JWT_SECRET, "APP_ENV": "development"}
    with run_service(
        "orchestrator",
        "orchestrator.main:create_app",
        {**common, "DATABASE_URL": pg_dsn},
        data_dir,
    ) as orch:
        gw_env = {
            **common,
            "ORCHESTRATOR_URL": orch.url,
            "GENERIC_HTTP_SECRET": SECRET,
            "VOICE_PROVIDER": "generic-http",
        }
        with run_service("gateway", "realtime_gateway.app:create_app", gw_env, data_dir) as gw:
            yield orch, gw


async def test_full_generic_http_call_emits_events_in_order_and_stores_rows(
    services: tuple[Service, Service], pg_dsn: str
) -> None:
    orch, gw = services
    call_id = f"e2e-{uuid.uuid4().hex[:12]}"
    token = mint_token(JWT_SECRET, sub="e2e", role="admin")
    ws_url = gw.url.replace("http://", "ws://") + f"/ws?call_id={call_id}&token={token}"
    received: list[dict[str, Any]] = []

    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=gw.url) as client:

        async def post(ev: dict[str, Any]) -> httpx.Response:
            body, headers = signed(ev)
            return await client.post("/voice/webhook/generic-http", content=body, headers=headers)

        started = await post(
            event(
                "call.started",
                call_id,
                **{
                    "from": "+15550001111",
                    "to": "+15550002222",
                    "direction": "inbound",
                    "metadata": {},
                },
            )
        )
        assert started.status_code == 200, started.text
        actions = started.json()["actions"]
        assert [a["type"] for a in actions] == ["say", "gather"]
        assert actions[0]["text"]

        for turn, words in ((1, "Hello, what are your opening hours?"), (2, "Thanks, goodbye")):
            r = await post(
                event(
                    "call.input",
                    call_id,
                    turn_id=str(turn),
                    input={"type": "speech", "text": words, "confidence": 0.93},
                )
            )
            assert r.status_code == 200, r.text
            assert r.json()["actions"], r.text

        # The bridge reports the end twice (status then ended): call.ended must appear once.
        assert (await post(event("call.status", call_id, status="completed"))).status_code == 200
        assert (
            await post(event("call.ended", call_id, reason="hangup", duration_s=12.5))
        ).status_code == 200

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(
                    ws.recv(), timeout=max(0.05, deadline - time.monotonic())
                )
            except TimeoutError:
                break
            msg = json.loads(raw)
            if msg.get("type", "").count(".") == 1 and msg.get("call_id") == call_id:
                received.append(msg)
            if msg.get("type") == "call.ended":
                # wait a little for a (wrong) second call.ended
                deadline = min(deadline, time.monotonic() + 0.5)

    types = [m["type"] for m in received]
    assert types == [
        "call.started",
        "message.received",
        "message.sent",
        "message.received",
        "message.sent",
        "call.ended",
    ], types
    for m in received:
        assert set(m) >= {"type", "call_id", "timestamp", "data"}

    conn = await asyncpg.connect(pg_dsn)
    try:
        conv = await conn.fetchrow("SELECT status FROM conversations WHERE id = $1", call_id)
        assert conv is not None and conv["status"] == "ended"
        rows = await conn.fetch(
            "SELECT turn_id, role FROM messages WHERE conversation_id = $1 ORDER BY id", call_id
        )
        pairs = [(r["turn_id"], r["role"]) for r in rows]
        assert ("1", "user") in pairs and ("1", "assistant") in pairs
        assert ("2", "user") in pairs and ("2", "assistant") in pairs
        assert len(pairs) == len(set(pairs))
    finally:
        await conn.close()
    # Phone numbers never reach the logs in clear.
    assert "+15550001111" not in gw.logs() and "+15550001111" not in orch.logs()
