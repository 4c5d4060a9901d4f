"""Two doors that must stay shut (issue 20): a forged-webhook flood cannot buy a fresh budget
with a made-up `X-Forwarded-For` when no proxy is trusted, and a `?token=` query parameter
authenticates a `/ws` handshake only, never a plain HTTP route (query strings end up in access
logs, browser history and Referer headers). Both on the in-process and on the Redis backend."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from shared.auth import mint_token
from tests.gateway.conftest import (
    JWT_SECRET,
    PUBLIC,
    WEBHOOK,
    admin_token,
    gateway,
    new_call_id,
    served,
    settings_for,
    sign,
    started,
)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The gateway's store and counters: in process, or this run's own Redis database."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


def an_address() -> str:
    """A peer address of this test's own (TEST-NET-2), so no other test's counter is ours."""
    return f"198.51.100.{random.randrange(1, 255)}"


@asynccontextmanager
async def client_from(app: object, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(address, 40_000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
        yield client


async def forge(client: httpx.AsyncClient, forwarded_for: str | None) -> int:
    body = json.dumps(started(new_call_id())).encode()
    headers = sign(body, secret="not-the-secret")
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return (await client.post(WEBHOOK, content=body, headers=headers)).status_code


async def test_forged_webhooks_cannot_rotate_x_forwarded_for_without_a_trusted_proxy(
    data_dir: Path, orchestrator: httpx.ASGITransport, backend: str | None
) -> None:
    settings = settings_for(data_dir, redis_url=backend, rate_limit_webhook_failures="4/minute")
    address, other_address = an_address(), an_address()
    while other_address == address:
        other_address = an_address()
    async with gateway(settings, orchestrator) as g, client_from(g.app, address) as peer:
        statuses = [await forge(peer, f"203.0.113.{i}") for i in range(10)]
        # each claims another client; the peer is one and the same, so its budget runs out
        assert statuses[:4] == [401] * 4, statuses
        assert set(statuses[4:]) == {429}, statuses
        assert await forge(peer, None) == 429
        # the budget is the peer's: another peer still gets its 401
        async with client_from(g.app, other_address) as other:
            assert await forge(other, "203.0.113.1") == 401


async def test_with_a_trusted_proxy_the_forwarded_client_is_what_is_counted(
    data_dir: Path, orchestrator: httpx.ASGITransport, backend: str | None
) -> None:
    """The counterpart: behind the proxy named in TRUSTED_PROXIES each client has its budget."""
    proxy = an_address()
    settings = settings_for(
        data_dir,
        redis_url=backend,
        rate_limit_webhook_failures="2/minute",
        trusted_proxies=proxy,
    )
    async with gateway(settings, orchestrator) as g, client_from(g.app, proxy) as via_proxy:
        first = f"192.0.2.{random.randrange(1, 127)}"
        second = f"192.0.2.{random.randrange(128, 255)}"
        assert [await forge(via_proxy, first) for _ in range(3)] == [401, 401, 429]
        assert await forge(via_proxy, second) == 401


# -- ?token= -------------------------------------------------------------------------------------

HTTP_ROUTES = ("/voice/calls", "/voice/providers/current", "/ws/status")


async def test_a_query_token_does_not_authenticate_plain_http_routes(
    data_dir: Path, orchestrator: httpx.ASGITransport, backend: str | None
) -> None:
    token = admin_token()
    async with gateway(settings_for(data_dir, redis_url=backend), orchestrator) as g:
        for path in HTTP_ROUTES:
            r = await g.client.get(f"{path}?token={token}")
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            # the same token in the header is accepted: the query is what is refused
            r = await g.client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, (path, r.text)
        # nor does it reach a write route
        r = await g.client.post(f"/voice/calls?token={token}", json={"to": "+15550001111"})
        assert r.status_code == 401, r.text


async def test_a_query_token_opens_a_ws_handshake(data_dir: Path) -> None:
    """The one place a query token is taken (browsers cannot set headers on a WebSocket)."""
    viewer = mint_token(JWT_SECRET, sub="query-token-viewer", role="viewer")
    async with served(settings_for(data_dir)) as gw:
        async with websockets.connect(f"{gw.ws_url}?token={viewer}", open_timeout=10) as ws:
            assert ws.state.name == "OPEN"
        r = await gw.client.get(f"/ws/status?token={viewer}")
        assert r.status_code == 401, r.text


async def test_a_query_token_buys_no_per_subject_rate_budget_on_http(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """Unauthenticated HTTP requests count per address, whatever `?token=` they carry: a valid
    token in the query does not move them to the token's own budget."""
    settings = settings_for(data_dir, rate_limit_management="3/minute")
    async with gateway(settings, orchestrator) as g, client_from(g.app, an_address()) as peer:
        for i in range(3):
            sub = mint_token(JWT_SECRET, sub=f"query-sub-{i}", role="viewer")
            r = await peer.get(f"/voice/providers/current?token={sub}")
            assert r.status_code == 401, r.text
        fresh = mint_token(JWT_SECRET, sub="query-sub-fresh", role="viewer")
        r = await peer.get(f"/voice/providers/current?token={fresh}")
        assert r.status_code == 429, r.text
