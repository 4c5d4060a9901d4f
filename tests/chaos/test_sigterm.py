"""SIGTERM on a real gateway process (uvicorn) with a real orchestrator process on Postgres:
the gateway drains (health 503, new calls told to call back, calls in progress still answered,
a turn in flight at the signal finishes), then stops, flushing the call's end to the
orchestrator, and the process exits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from realtime_gateway.prompts import say
from tests.e2e.services import run_service

BUSY = say("busy")

pytestmark = pytest.mark.slow

SECRET = "sigterm-generic-http-secret"
JWT_SECRET = "sigterm-jwt-secret-" + "Yt5pQ2" * 6


def post(url: str, ev: dict[str, Any]) -> httpx.Response:
    body = json.dumps(ev).encode()
    ts = str(int(time.time()))
    sig = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Gateway-Timestamp": ts,
        "X-Gateway-Signature": f"v1={sig}",
    }
    return httpx.post(
        f"{url}/voice/webhook/generic-http", content=body, headers=headers, timeout=10
    )


def ev(type_: str, call_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "type": type_, "call_id": call_id, **fields}


def start(call_id: str) -> dict[str, Any]:
    return ev("call.started", call_id, **{"from": "+15550001111", "to": "+15550002222"})


def turn(call_id: str, turn_id: str, text: str) -> dict[str, Any]:
    return ev("call.input", call_id, turn_id=turn_id, input={"type": "speech", "text": text})


# Long enough that everything the test does while draining (a turn in flight, a refused call, a
# turn and an end of the call in progress) fits on a loaded 2-core machine with room to spare.
DRAIN_S = 5.0


def test_sigterm_drains_finishes_flushes_and_exits(pg_dsn: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    common = {"DATA_DIR": str(data_dir), "JWT_SECRET": JWT_SECRET, "APP_ENV": "development"}
    with run_service(
        "orchestrator", "orchestrator.main:create_app", {**common, "DATABASE_URL": pg_dsn}, tmp_path
    ) as orch:
        gw_env = {
            **common,
            "ORCHESTRATOR_URL": orch.url,
            "GENERIC_HTTP_SECRET": SECRET,
            "VOICE_PROVIDER": "generic-http",
            "SHUTDOWN_DRAIN_S": str(DRAIN_S),
        }
        with run_service("gateway", "realtime_gateway.app:create_app", gw_env, tmp_path) as gw:
            a, b = f"sig-{uuid.uuid4().hex[:10]}", f"sig-{uuid.uuid4().hex[:10]}"
            assert post(gw.url, start(a)).status_code == 200
            assert post(gw.url, turn(a, "1", "What are your opening hours?")).status_code == 200

            in_flight: dict[str, httpx.Response] = {}
            worker = threading.Thread(
                target=lambda: in_flight.setdefault("r", post(gw.url, turn(a, "2", "And Sunday?")))
            )
            worker.start()
            gw.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            worker.join(10)
            assert in_flight["r"].status_code == 200  # the turn in flight at the signal finished
            assert in_flight["r"].json()["actions"][0]["type"] == "say"

            deadline = time.monotonic() + DRAIN_S
            health = httpx.get(f"{gw.url}/health", timeout=5)
            while health.status_code != 503 and time.monotonic() < deadline:  # SIGTERM handled
                time.sleep(0.05)
                health = httpx.get(f"{gw.url}/health", timeout=5)
            assert health.status_code == 503 and health.json()["status"] == "draining"
            busy = post(gw.url, start(b))  # a new call while draining
            assert busy.status_code == 200
            assert [x["type"] for x in busy.json()["actions"]] == ["say", "hangup"]
            assert busy.json()["actions"][0]["text"] == BUSY
            # the call in progress is still served, and its end reaches the orchestrator
            r = post(gw.url, turn(a, "3", "Thanks, goodbye"))
            assert r.status_code == 200 and r.json()["actions"][0]["text"] != BUSY
            assert post(gw.url, ev("call.ended", a, reason="hangup")).status_code == 200
            used = time.monotonic() - signalled
            assert used < DRAIN_S, f"the drain steps took {used:.1f} s of the {DRAIN_S} s window"

            gw.proc.wait(DRAIN_S + 15)
            stopped_s = time.monotonic() - signalled
            logs = gw.logs()
            assert "SIGTERM: draining" in logs and "drain over; stopping" in logs
            assert DRAIN_S - 0.1 <= stopped_s < DRAIN_S + 10, stopped_s
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{gw.url}/health", timeout=2)

    async def rows() -> tuple[Any, Any, int]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            status_a = await conn.fetchval("SELECT status FROM conversations WHERE id = $1", a)
            status_b = await conn.fetchval("SELECT status FROM conversations WHERE id = $1", b)
            turns_a = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE conversation_id = $1 AND role = 'user'", a
            )
        finally:
            await conn.close()
        return status_a, status_b, int(turns_a)

    status_a, status_b, turns_a = asyncio.run(rows())
    assert status_a == "ended"  # flushed before exit
    assert status_b is None  # the refused call never reached the orchestrator
    assert turns_a == 3
    print(f"\nSIGTERM to exit: {stopped_s:.2f} s (drain {DRAIN_S} s)")
