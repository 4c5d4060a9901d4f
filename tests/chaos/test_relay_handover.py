"""A deploy never drops a streamed call (issue 18): two real gateway processes (uvicorn) on one
Redis and a real orchestrator process on Postgres. A ConversationRelay call lives on A; A gets
SIGTERM; when its drain is over it ends the session with a hand-off, Twilio's action callback
lands on B, B reconnects the caller to the same conversation, and the next turn is answered
there — every turn stored once."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.services import run_service
from tests.gateway import test_relay as relay
from tests.gateway import test_twilio_call as tw
from tests.gateway.conftest import PUBLIC

pytestmark = pytest.mark.slow

JWT_SECRET = "handover-jwt-secret-" + "Kq7wZ3" * 6
DRAIN_S = 2.0


def gateway_env(orchestrator_url: str, redis_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": JWT_SECRET,
        "APP_ENV": "development",
        "ORCHESTRATOR_URL": orchestrator_url,
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": PUBLIC,  # the URL Twilio signs (the test signs it the same way)
        "VOICE_PROVIDER": "twilio",
        "TWILIO_VOICE_MODE": "relay",
        "TWILIO_ACCOUNT_SID": tw.ACCOUNT,
        "TWILIO_AUTH_TOKEN": tw.TOKEN,
        "TWILIO_PHONE_NUMBER": tw.OUR_NUMBER,
        "SHUTDOWN_DRAIN_S": str(DRAIN_S),
    }


def harness(url: str, client: httpx.AsyncClient) -> Any:
    """What the relay helpers need of a gateway: its client and its `/ws` URL."""
    return SimpleNamespace(client=client, ws_url="ws" + url[4:] + "/ws")


def test_sigterm_moves_a_live_relay_call_to_another_instance(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    orch_env = {
        "DATA_DIR": str(data),
        "JWT_SECRET": JWT_SECRET,
        "APP_ENV": "development",
        "DATABASE_URL": pg_dsn,
    }
    sid = tw.new_sid()
    with run_service("orchestrator", "orchestrator.main:create_app", orch_env, tmp_path) as orch:
        env = gateway_env(orch.url, redis_url, data)
        factory = "realtime_gateway.app:create_app"
        a_logs, b_logs = tmp_path / "a", tmp_path / "b"
        a_logs.mkdir()
        b_logs.mkdir()
        with (
            run_service("gateway", factory, env, a_logs) as a,
            run_service("gateway", factory, env, b_logs) as b,
        ):
            asyncio.run(call_moves(a, b, sid))
            assert "SIGTERM: draining" in a.logs()

    async def user_turns() -> list[str]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch(
                "SELECT content FROM messages WHERE conversation_id = $1 AND role = 'user' "
                "ORDER BY id",
                sid,
            )
        finally:
            await conn.close()
        return [r["content"] for r in rows]

    assert asyncio.run(user_turns()) == ["What are your opening hours?", "And where are you?"]


async def call_moves(a: Any, b: Any, sid: str) -> None:
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as a_client,
        httpx.AsyncClient(base_url=b.url, timeout=10) as b_client,
    ):
        gw_a, gw_b = harness(a.url, a_client), harness(b.url, b_client)
        root = tw.twiml_of(await tw.twilio_post(gw_a, "/voice/webhook/twilio", tw.call_form(sid)))
        assert root[0].tag == "Connect" and root[0][0].tag == "ConversationRelay"
        async with relay.relay_socket(gw_a) as ws:
            await ws.send(relay.setup_frame(sid))
            await ws.send(relay.prompt("What are your opening hours?"))
            assert relay.words(await relay.reply_frames(ws)).strip()
            a.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            end = json.loads(await asyncio.wait_for(ws.recv(), DRAIN_S + 15))
            assert end["type"] == "end", end
            assert json.loads(end["handoffData"]) == {"action": "resume"}
            assert time.monotonic() - signalled >= DRAIN_S - 0.1  # after the drain, not before
        # Twilio posts the session's end to the action URL; B (a live instance) answers it by
        # reconnecting the caller, without greeting them again.
        form = tw.call_form(sid, SessionStatus="ended", HandoffData=end["handoffData"])
        root = tw.twiml_of(
            await tw.twilio_post(gw_b, "/voice/webhook/twilio/relay-action?turn=1", form)
        )
        assert root[0].tag == "Connect" and root[0][0].get("welcomeGreeting") is None
        async with relay.relay_socket(gw_b) as ws:
            await ws.send(relay.setup_frame(sid, "VX2"))
            await ws.send(relay.prompt("And where are you?"))
            assert relay.words(await relay.reply_frames(ws)).strip()
        a.proc.wait(DRAIN_S + 15)  # A stopped by itself
