"""Gateway test harness: the real gateway app, the real orchestrator app on the real Postgres,
and signed generic-http events made with an independent HMAC implementation (PROTOCOLS.md).

`gateway()` drives the app in process (httpx + ASGITransport, lifespan entered); `served()` runs
it under a real uvicorn server in this event loop, for `/ws` with a real WebSocket client. The
orchestrator is the real `orchestrator.main:create_app` served through an ASGI transport; only
orchestrator *failures* (500, timeouts) are faked, with respx routers injected as its transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from realtime_gateway.app import create_app
from realtime_gateway.config import GatewaySettings
from realtime_gateway.runtime import GatewayRuntime
from shared.auth import mint_token

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "gateway-tests-jwt-secret-" + "k" * 32
GH_SECRET = "gateway-tests-generic-http-secret"
ORCH_URL = "http://orchestrator.test"
PUBLIC = "http://gateway.test"
WEBHOOK = "/voice/webhook/generic-http"
# Redis pub/sub ignores db numbers: this run's own channel, so no other run's events cross ours.
EVENTS_CHANNEL = f"vao:test:{uuid.uuid4().hex[:12]}:events"


def admin_token() -> str:
    return mint_token(JWT_SECRET, sub="tests", role="admin")


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token()}"}


def settings_for(data_dir: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret": JWT_SECRET,
        "generic_http_secret": GH_SECRET,
        "orchestrator_url": ORCH_URL,
        "public_base_url": PUBLIC,
        "app_env": "test",
        "redis_url": None,
        "voice_provider": "generic-http",
        "turn_timeout_s": 2.0,
        "events_channel": EVENTS_CHANNEL,
    }
    values.update(overrides)
    return GatewaySettings(_env_file=None, **values)  # type: ignore[call-arg]


def sign(body: bytes, ts: int | None = None, secret: str = GH_SECRET) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Gateway-Timestamp": stamp,
        "X-Gateway-Signature": f"v1={mac}",
    }


def event(type_: str, call_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "type": type_,
        "call_id": call_id,
        "timestamp": int(time.time()),
        **fields,
    }


def started(call_id: str) -> dict[str, Any]:
    return event(
        "call.started",
        call_id,
        **{"from": "+15550001111", "to": "+15550002222", "direction": "inbound", "metadata": {}},
    )


def said(call_id: str, turn: str, text: str) -> dict[str, Any]:
    return event(
        "call.input",
        call_id,
        turn_id=turn,
        input={"type": "speech", "text": text, "confidence": 0.9},
    )


def new_call_id() -> str:
    return f"gw-{uuid.uuid4().hex[:12]}"


@dataclass
class Gateway:
    app: Starlette
    client: httpx.AsyncClient
    url: str = PUBLIC

    @property
    def rt(self) -> GatewayRuntime:
        runtime = self.app.state.runtime
        assert isinstance(runtime, GatewayRuntime)
        return runtime

    async def send(self, ev: dict[str, Any], **sign_kw: Any) -> httpx.Response:
        body = json.dumps(ev).encode()
        return await self.client.post(WEBHOOK, content=body, headers=sign(body, **sign_kw))

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


class LifespanState:
    """Hands an app's lifespan state to each request, as an ASGI server does."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


def _orchestrator_package_importable() -> None:
    """`python -m pytest` from the repository root puts the root on sys.path, where the folder
    `orchestrator/` (the project, not the package) shadows the installed package as a namespace.
    Put the project folder first so `orchestrator` is the real package."""
    project = str(ROOT / "orchestrator")
    loaded = sys.modules.get("orchestrator")
    if loaded is not None and getattr(loaded, "__file__", None) is None:
        for name in [
            m for m in sys.modules if m == "orchestrator" or m.startswith("orchestrator.")
        ]:
            del sys.modules[name]
    if project not in sys.path:
        sys.path.insert(0, project)


@asynccontextmanager
async def real_orchestrator(pg_dsn: str, data_dir: Path) -> AsyncIterator[httpx.ASGITransport]:
    """The real orchestrator app on the real Postgres, reachable through an ASGI transport."""
    _orchestrator_package_importable()
    from orchestrator.config import OrchestratorSettings
    from orchestrator.main import create_app as create_orchestrator

    settings = OrchestratorSettings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=pg_dsn,
        jwt_secret=JWT_SECRET,
        data_dir=data_dir,
        app_env="test",
        db_pool_min=1,
        db_pool_max=5,
    )
    app = create_orchestrator(settings)
    async with app.router.lifespan_context(app) as state:
        yield httpx.ASGITransport(app=LifespanState(app, dict(state or {})))


@asynccontextmanager
async def gateway(
    settings: GatewaySettings, orchestrator: httpx.AsyncBaseTransport | None = None, **kw: Any
) -> AsyncIterator[Gateway]:
    app = create_app(settings, orchestrator_transport=orchestrator, **kw)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as client,
    ):
        yield Gateway(app, client)


@asynccontextmanager
async def served(
    settings: GatewaySettings, orchestrator: httpx.AsyncBaseTransport | None = None, **kw: Any
) -> AsyncIterator[Gateway]:
    """The gateway under a real uvicorn server (lifespan, HTTP and WebSocket) in this loop."""
    app = create_app(settings, orchestrator_transport=orchestrator, **kw)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, ws="auto")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url) as client:
            yield Gateway(app, client, url)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def orchestrator(pg_dsn: str, tmp_path: Path) -> AsyncIterator[httpx.ASGITransport]:
    async with real_orchestrator(pg_dsn, tmp_path / "orch") as transport:
        yield transport


@pytest.fixture
async def gw(data_dir: Path, orchestrator: httpx.ASGITransport) -> AsyncIterator[Gateway]:
    async with gateway(settings_for(data_dir), orchestrator) as g:
        yield g


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., GatewaySettings]:
    def make(**overrides: Any) -> GatewaySettings:
        return settings_for(data_dir, **overrides)

    return make


async def stack_enter(stack: AsyncExitStack, cm: Any) -> Any:
    return await stack.enter_async_context(cm)
