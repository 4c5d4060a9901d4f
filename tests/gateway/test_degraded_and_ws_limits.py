"""Issue 19 item 8 and the gateway's Low items: Redis down degrades as documented; `/ws` bounds
(token expiry, subscribe sizes, per-token handshake limit); tokens never logged whatever their
escaping; tokens without `role` refused; slow headers and bodies get 408 (real sockets)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
import websockets
from starlette.routing import Route

from realtime_gateway import server_timeouts
from realtime_gateway.app import create_app
from realtime_gateway.routes import build_routes
from shared import body_limit
from shared.auth import mint_token
from shared.logging import JsonFormatter, scrub_text
from tests.gateway.conftest import JWT_SECRET, auth, gateway, served, settings_for
from tests.gateway.ws_client import next_control

DEAD_REDIS = "redis://127.0.0.1:1/0"
STORE_ROUTES = {
    ("GET", "/voice/calls"),
    ("GET", "/voice/calls/{call_id}/status"),
    ("POST", "/voice/calls/{call_id}/end"),
    ("GET", "/ws/status"),
    ("GET", "/health/database"),
}


def _viewer(sub: str = "viewer-1", ttl_s: float = 600) -> str:
    return mint_token(JWT_SECRET, sub=sub, role="viewer", ttl_s=ttl_s)


# -- Redis down ----------------------------------------------------------------------------------


async def test_redis_down_every_route_answers_json_and_call_routes_say_call_store_unavailable(
    data_dir: Path,
) -> None:
    """Every HTTP route of the gateway, Redis on a dead port: never a 500; the routes that need
    live call state answer 503 `call_store_unavailable` naming Redis; `/health` says degraded
    and names the call store."""
    async with gateway(settings_for(data_dir, redis_url=DEAD_REDIS)) as gw:
        seen = set()
        for route in build_routes():
            if not isinstance(route, Route):
                continue
            path = route.path.replace("{call_id}", "gw-1").replace("{provider}", "generic-http")
            path = path.replace("{step:path}", "status")
            for method in sorted((route.methods or set()) - {"HEAD"}):
                body: dict[str, Any] = {"provider": "generic-http"}
                if path == "/voice/calls/initiate":
                    body = {"phone_number": "+14155550142"}
                r = await gw.client.request(method, path, headers=auth(), json=body)
                assert r.status_code != 500, (method, path, r.text)
                assert r.headers["content-type"].startswith("application/json"), (method, path)
                if (method, route.path) in STORE_ROUTES:
                    assert r.status_code == 503, (method, path, r.text)
                    assert r.json()["error"]["code"] == "call_store_unavailable"
                    assert "Redis" in r.json()["error"]["message"]
                    seen.add((method, route.path))
        assert seen == STORE_ROUTES
        health = (await gw.client.get("/health")).json()
        assert health["status"] == "degraded" and "database" in health["degraded"]
        assert health["call_store"]["backend"] == "redis"
        assert health["call_store"]["status"] == "unavailable"


async def test_redis_down_logs_no_traceback_for_a_call_route(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(settings_for(data_dir, redis_url=DEAD_REDIS)) as gw:
        r = await gw.client.get("/voice/calls", headers=auth())
    assert r.status_code == 503
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert not errors, [rec.getMessage() for rec in errors]  # no "unhandled error" + traceback
    outage = [rec for rec in caplog.records if rec.getMessage() == "call store unavailable"]
    assert outage and not outage[0].exc_info


async def _read_until_closed(ws: Any) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), timeout=6)


# -- /ws -----------------------------------------------------------------------------------------


async def test_ws_is_closed_with_1008_when_its_token_expires(data_dir: Path) -> None:
    token = mint_token(JWT_SECRET, sub="short", role="viewer", ttl_s=2)
    async with served(settings_for(data_dir)) as gw:
        async with websockets.connect(f"{gw.ws_url}?token={token}", open_timeout=5) as ws:
            started = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await _read_until_closed(ws)
            assert time.monotonic() - started < 4
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "token expired"
        # a token valid for longer stays open past that moment
        async with websockets.connect(f"{gw.ws_url}?token={_viewer()}", open_timeout=5) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert (await next_control(ws))["type"] == "pong"


async def test_ws_subscribe_refuses_bad_ids_too_many_ids_and_large_frames(data_dir: Path) -> None:
    async with served(settings_for(data_dir)) as gw:
        async with websockets.connect(f"{gw.ws_url}?token={_viewer()}", open_timeout=5) as ws:
            await ws.send(json.dumps({"subscribe": "x" * 129}))
            reply = await next_control(ws)
            assert reply["error"]["code"] == "invalid_call_id"
            assert "x" * 129 not in json.dumps(reply)
            await ws.send(json.dumps({"subscribe": "a b"}))
            assert (await next_control(ws))["error"]["code"] == "invalid_call_id"
            await ws.send(json.dumps({"subscribe": 7}))
            assert (await next_control(ws))["error"]["code"] == "invalid_call_id"
            await ws.send(json.dumps({"subscribe": "y" * 5000}))  # larger than a control frame
            reply = await next_control(ws)
            assert reply["error"]["code"] == "message_too_large"
            for n in range(100):
                await ws.send(json.dumps({"subscribe": f"call-{n}"}))
                ack = await next_control(ws)
                assert ack["type"] == "subscribed" and len(ack["call_ids"]) == n + 1
            await ws.send(json.dumps({"subscribe": "call-100"}))
            assert (await next_control(ws))["error"]["code"] == "too_many_call_ids"
            await ws.send(json.dumps({"subscribe": "call-5"}))  # already held: fine
            assert len((await next_control(ws))["call_ids"]) == 100
        with pytest.raises(websockets.InvalidStatus) as refused:  # closed before accepting
            async with websockets.connect(
                f"{gw.ws_url}?token={_viewer()}&call_id={'z' * 200}", open_timeout=5
            ):
                pass
        assert refused.value.response.status_code == 403


async def test_ws_handshakes_are_limited_per_token_subject_not_per_shared_address(
    data_dir: Path,
) -> None:
    """Three handshakes per minute: viewer A spends its three, A's fourth is 429, viewer B on the
    same address still connects; bad-token handshakes count per address."""
    settings = settings_for(data_dir, rate_limit_management="3/minute")
    async with served(settings) as gw:
        for _ in range(3):
            async with websockets.connect(f"{gw.ws_url}?token={_viewer('a')}", open_timeout=5):
                pass
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{gw.ws_url}?token={_viewer('a')}", open_timeout=5):
                pass
        assert refused.value.response.status_code == 429
        async with websockets.connect(f"{gw.ws_url}?token={_viewer('b')}", open_timeout=5) as ws:
            assert ws.state.name == "OPEN"
        statuses = []
        for _ in range(4):
            with pytest.raises(websockets.InvalidStatus) as bad:
                async with websockets.connect(f"{gw.ws_url}?token=not.a.jwt", open_timeout=5):
                    pass
            statuses.append(bad.value.response.status_code)
        assert statuses == [401, 401, 401, 429]
        async with websockets.connect(f"{gw.ws_url}?token={_viewer('c')}", open_timeout=5) as ws:
            assert ws.state.name == "OPEN"  # the address's anonymous budget is not c's


# -- logs ----------------------------------------------------------------------------------------


async def test_a_percent_escaped_ws_token_is_never_logged(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = _viewer("escaped")
    head, payload, signature = token.split(".")
    escaped = f"{head}%2E{payload}%2e{signature}"
    twice = f"{head}%252E{payload}%252E{signature}"
    async with served(settings_for(data_dir)) as gw:
        async with websockets.connect(f"{gw.ws_url}?call_id=c-1&token={escaped}") as ws:
            await ws.send(json.dumps({"type": "ping"}))
            await next_control(ws)
        with pytest.raises(websockets.InvalidStatus):  # decoded once, it is not a JWT: 401
            async with websockets.connect(f"{gw.ws_url}?call_id=c-1&token={twice}"):
                pass
        for form in (escaped, twice):
            await gw.client.get(f"/ws/status?token={form}", headers=auth())
    lines = [JsonFormatter("realtime-gateway").format(rec) for rec in caplog.records]
    assert any("WebSocket /ws" in line for line in lines), "the server's WebSocket line"
    for line in lines:
        assert signature not in line and payload not in line, line
    # whatever carries it: an escaped JWT in a path, an opaque value in a query parameter
    assert signature not in scrub_text(f"GET /voice/stream/{escaped} 404")
    assert signature not in scrub_text(f"GET /voice/stream/{twice} 404")
    assert "opaque-credential" not in scrub_text("GET /ws?call_id=a&token=opaque-credential")


# -- tokens without a role -----------------------------------------------------------------------


def _roleless() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "nobody", "iat": now, "exp": now + 600}, JWT_SECRET, "HS256")


async def test_a_token_without_role_is_refused_on_http_and_ws(data_dir: Path) -> None:
    token = _roleless()
    async with served(settings_for(data_dir)) as gw:
        for path in ("/voice/calls", "/voice/providers/current", "/ws/status"):
            r = await gw.client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (path, r.text)
            assert "role" in r.json()["error"]["message"]
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{gw.ws_url}?token={token}", open_timeout=5):
                pass
        assert refused.value.response.status_code == 401


async def test_a_token_without_role_is_refused_by_the_orchestrator(
    orchestrator: httpx.ASGITransport,
) -> None:
    async with httpx.AsyncClient(transport=orchestrator, base_url="http://o.test") as client:
        r = await client.get("/agents", headers={"Authorization": f"Bearer {_roleless()}"})
        assert r.status_code == 401, r.text
        ok = mint_token(JWT_SECRET, sub="ops", role="viewer")
        assert (await client.get("/agents", headers={"Authorization": f"Bearer {ok}"})).is_success


# -- slow clients (real sockets) -----------------------------------------------------------------


async def _trickle(port: int, head: bytes, drip: bytes, every_s: float, limit_s: float) -> bytes:
    """Send `head`, then `drip` a byte at a time every `every_s`; what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    answer = b""

    async def drip_bytes() -> None:
        for byte in drip:
            await asyncio.sleep(every_s)
            if answer:  # answered: a byte written now would only meet a closed socket
                return
            writer.write(bytes([byte]))
            await writer.drain()

    dripping = asyncio.create_task(drip_bytes())
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(4096):
                answer += chunk
    except ConnectionResetError:
        # The server answered and closed while a byte was on its way: its kernel resets the
        # connection. What it answered before is what counts (asserted by the caller).
        pass
    finally:
        dripping.cancel()
        writer.close()
    return answer


async def test_a_body_sent_a_byte_per_interval_gets_408_within_the_deadline(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body_limit, "BODY_READ_TIMEOUT_S", 1.0)
    async with served(settings_for(data_dir)) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        head = (
            b"POST /voice/webhook/generic-http HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
        )
        started = time.monotonic()
        answer = await _trickle(port, head, b"{" * 40, every_s=0.2, limit_s=5)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
        assert time.monotonic() - started < 3


@asynccontextmanager
async def _served_with_limits(data_dir: Path) -> AsyncIterator[int]:
    """The gateway under uvicorn with the options `python -m realtime_gateway` uses."""
    app = create_app(settings_for(data_dir))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, **server_timeouts.uvicorn_limits()
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_headers_sent_a_byte_per_interval_get_408_and_a_closed_connection(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_timeouts.HeaderDeadlineProtocol, "header_timeout_s", 0.8)
    async with _served_with_limits(data_dir) as port:
        started = time.monotonic()
        answer = await _trickle(
            port, b"GET /health HTTP/1.1\r\n", b"X-Slow: " + b"a" * 40, every_s=0.2, limit_s=5
        )
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
        assert time.monotonic() - started < 2.5
        # a prompt request on the same server is served
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
