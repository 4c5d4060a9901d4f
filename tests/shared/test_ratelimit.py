"""`shared.ratelimit` rule by rule on plain ASGI scopes: what a hit decides, who a client is
(token subject, peer, or the client a trusted proxy forwarded for), what is exempt, what a 429
looks like over HTTP and on a WebSocket handshake, and that a counter store that is down fails
open (logged) — on the real Redis where a store is shared."""

from __future__ import annotations

import json
import logging
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.auth import ServiceTokenSource, mint_token
from shared.proxies import TrustedProxies, parse_trusted_proxies
from shared.ratelimit import (
    Decision,
    ManagementRateLimitMiddleware,
    RateLimiter,
    client_address,
    parse_rate,
    request_token,
    too_many_requests,
)

SECRET = "ratelimit-unit-tests-" + "k7" * 16
now = time.time


def scope(
    kind: str = "http",
    path: str = "/agents",
    *,
    peer: str | None = "203.0.113.9",
    headers: dict[str, str] | None = None,
    query: str = "",
    method: str = "GET",
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "type": kind,
        "path": path,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()],
        "query_string": query.encode(),
        "client": (peer, 50000) if peer else None,
    }
    if kind == "http":
        s["method"] = method
    if extensions is not None:
        s["extensions"] = extensions
    return s


# ---- the limiter -------------------------------------------------------------------------------


def test_parse_rate_names_a_bad_value() -> None:
    item = parse_rate("100/15minutes")
    assert (item.amount, item.get_expiry()) == (100, 900)
    with pytest.raises(ValueError, match=r"not a rate limit \(e\.g\. 100/15minutes\): 'lots'"):
        parse_rate("lots")


def test_only_a_redis_url_makes_a_shared_store() -> None:
    assert RateLimiter("5/minute").backend == "memory"
    assert RateLimiter("5/minute", "").backend == "memory"
    for bad in ("http://127.0.0.1:6379", "127.0.0.1:6379", "unix:///tmp/r.sock"):
        with pytest.raises(ValueError, match="REDIS_URL must be redis:// or rediss://"):
            RateLimiter("5/minute", bad)
    assert RateLimiter("5/minute", "rediss://127.0.0.1:6380/0").backend == "redis"


async def test_hits_count_down_then_refuse_with_a_retry_after() -> None:
    limiter = RateLimiter("3/minute", namespace=f"t-{uuid.uuid4()}")
    decisions = [await limiter.hit("k") for _ in range(4)]
    assert decisions[:3] == [Decision(True, 3, r, 0) for r in (2, 1, 0)]
    refused = decisions[3]
    assert (refused.allowed, refused.limit, refused.remaining) == (False, 3, 0)
    assert 1 <= refused.retry_after_s <= 60
    assert (await limiter.hit("another key")).allowed  # each key its own budget
    await limiter.aclose()


async def test_the_retry_after_is_at_least_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when the window resets in less than a second (or, read late, has just reset)."""
    from shared import ratelimit

    limiter = RateLimiter("1/minute", namespace=f"t-{uuid.uuid4()}")
    assert (await limiter.hit("k")).allowed
    for late_by in (59.9, 61.0):  # the limiter reads its clock this much later than the store's
        monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda d=late_by: now() + d))
        refused = await limiter.hit("k")
        assert not refused.allowed and refused.retry_after_s == 1
    monkeypatch.undo()
    assert 30 <= (await limiter.hit("k")).retry_after_s <= 60  # on the real clock


def test_a_decision_cannot_be_changed() -> None:
    decision = Decision(False, 5, 0, 30)
    with pytest.raises(AttributeError):
        decision.allowed = True  # type: ignore[misc]


async def test_closing_closes_the_redis_client_and_never_raises(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RateLimiter("5/minute", redis_url, namespace=f"t-{uuid.uuid4()}")
    await limiter.hit("k")
    client = limiter._storage.bridge.storage  # type: ignore[attr-defined]
    closed: list[str] = []
    real_close = client.aclose

    async def spy() -> None:
        closed.append("closed")
        await real_close()

    client.aclose = spy
    await limiter.aclose()
    assert closed == ["closed"]

    async def broken() -> None:
        raise ConnectionError("pool already gone")

    client.aclose = broken
    with caplog.at_level(logging.DEBUG, logger="shared.ratelimit"):
        await limiter.aclose()  # on shutdown: logged, not raised
    (record,) = [r for r in caplog.records if "close failed" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ConnectionError
    await RateLimiter("5/minute").aclose()  # an in-process store has nothing to close


async def test_a_redis_store_is_shared_and_prefixed(redis_url: str) -> None:
    namespace = f"t-{uuid.uuid4()}"
    a = RateLimiter("2/minute", redis_url, namespace=namespace)
    b = RateLimiter("2/minute", redis_url, namespace=namespace)
    assert a.backend == "redis"
    assert [(await a.hit("k")).allowed, (await b.hit("k")).allowed] == [True, True]
    assert not (await a.hit("k")).allowed and not (await b.hit("k")).allowed
    client = aioredis.from_url(redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"*{namespace}*")]
    finally:
        await client.aclose()
    assert keys and all(k.startswith("VAO_RL") for k in keys), keys
    await a.aclose()
    await b.aclose()


async def test_a_store_that_is_down_fails_open_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter("1/minute", "redis://127.0.0.1:1/0", namespace="down")
    with caplog.at_level(logging.WARNING, logger="shared.ratelimit"):
        decisions = [await limiter.hit("k") for _ in range(3)]
    assert decisions == [Decision(True, 1, 1, 0)] * 3
    records = [r for r in caplog.records if "rate limit store unavailable" in r.getMessage()]
    assert len(records) == 3 and records[0].namespace == "down"  # type: ignore[attr-defined]
    assert records[0].levelno == logging.WARNING
    await limiter.aclose()  # closing a store that never connected does not raise


# ---- who the client is -------------------------------------------------------------------------


def test_client_address_believes_forwarded_for_only_from_a_trusted_proxy() -> None:
    xff = {"X-Forwarded-For": "198.51.100.1, 10.0.0.5"}
    assert client_address(scope(headers=xff), False) == "203.0.113.9"
    assert client_address(scope(headers=xff), True) == "10.0.0.5"  # the last hop: our proxy's
    assert client_address(scope(), True) == "203.0.113.9"  # nothing forwarded
    assert client_address(scope(peer=None, headers=xff), False) == "unknown"
    assert client_address(scope(peer=None), True) == "unknown"
    assert client_address(scope(headers={"X-Forwarded-For": "a" * 100}), True) == "a" * 64
    assert client_address(scope(headers={"X-Forwarded-For": " , 10.0.0.7 ,"}), True) == "10.0.0.7"
    # a list: only a listed peer is believed, and then the nearest hop not on the list
    ours = parse_trusted_proxies("203.0.113.0/24, 10.0.0.0/8")
    assert client_address(scope(headers=xff), ours) == "198.51.100.1"
    assert client_address(scope(peer="192.0.2.1", headers=xff), ours) == "192.0.2.1"
    only_ours = {"X-Forwarded-For": "10.0.0.1, 10.0.0.2"}
    assert client_address(scope(headers=only_ours), ours) == "10.0.0.1"
    assert client_address(scope(headers=xff), TrustedProxies(any_peer=True)) == "10.0.0.5"
    assert client_address(scope(headers=xff), TrustedProxies()) == "203.0.113.9"


def test_request_token_reads_a_bearer_header_or_a_handshakes_query() -> None:
    header = {"Authorization": "Bearer abc"}
    assert request_token(scope(headers=header)) == "abc"
    assert request_token(scope(headers={"Authorization": "Basic abc"})) is None
    assert request_token(scope(query="token=q1")) is None  # never on plain HTTP
    assert request_token(scope("websocket", query="token=q1")) == "q1"
    assert request_token(scope("websocket", headers=header, query="token=q1")) == "abc"
    assert request_token(scope("websocket", headers={"Authorization": "x"}, query="token=q")) == "q"
    assert request_token(scope("websocket", query="other=1")) is None
    twice = scope(headers=header)  # a repeated header: the first one counts
    twice["headers"].append((b"authorization", b"Basic xyz"))
    assert request_token(twice) == "abc"
    assert request_token(scope("websocket", query="token=")) is None


def test_a_429_names_its_limit_and_when_to_retry() -> None:
    body, headers = too_many_requests(Decision(False, 100, 0, 42), "requests")
    assert json.loads(body) == {
        "error": {
            "code": "rate_limited",
            "message": "too many requests; retry in 42 s",
            "retry_after_s": 42,
        }
    }
    assert dict(headers) == {
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
        b"retry-after": b"42",
        b"x-ratelimit-limit": b"100",
        b"x-ratelimit-remaining": b"0",
    }


# ---- the middleware ----------------------------------------------------------------------------


class Recorder:
    """The app behind the middleware, and what the middleware sent in its place."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.received = 0

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached.append(scope["path"] if "path" in scope else scope["type"])

    async def receive(self) -> dict[str, Any]:
        self.received += 1
        return {"type": "websocket.connect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def middleware(rate: str = "2/minute", **kw: Any) -> tuple[ManagementRateLimitMiddleware, Recorder]:
    rec = Recorder()
    limiter = RateLimiter(rate, namespace=f"mw-{uuid.uuid4()}")
    return ManagementRateLimitMiddleware(rec.app, limiter, SECRET, **kw), rec


async def run(mw: ManagementRateLimitMiddleware, rec: Recorder, s: dict[str, Any]) -> None:
    await mw(s, rec.receive, rec.send)


async def test_each_client_has_its_budget_and_the_next_request_is_429(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mw, rec = middleware()
    alice = {"Authorization": f"Bearer {mint_token(SECRET, 'alice', 'viewer')}"}
    for _ in range(2):
        await run(mw, rec, scope(headers=alice))
    assert rec.reached == ["/agents"] * 2 and not rec.sent
    with caplog.at_level(logging.WARNING, logger="shared.ratelimit"):
        await run(mw, rec, scope(headers=alice))
    assert len(rec.reached) == 2
    start, body = rec.sent
    assert start["type"] == "http.response.start" and start["status"] == 429
    assert dict(start["headers"])[b"retry-after"] and body["type"] == "http.response.body"
    assert json.loads(body["body"])["error"]["code"] == "rate_limited"
    (record,) = [r for r in caplog.records if "management rate limit exceeded" in r.getMessage()]
    assert (record.client, record.path) == ("sub", "/agents")  # type: ignore[attr-defined]
    assert "alice" not in str(record.__dict__)
    # another subject from the same address has its own budget; a bad token counts by address
    bob = {"Authorization": f"Bearer {mint_token(SECRET, 'bob', 'viewer')}"}
    await run(mw, rec, scope(headers=bob))
    assert len(rec.reached) == 3
    forged = {"Authorization": f"Bearer {mint_token('another-secret-' + 'x' * 30, 'bob', 'admin')}"}
    for _ in range(2):
        await run(mw, rec, scope(headers=forged))
    await run(mw, rec, scope())  # the same address, no token: that budget is spent
    assert len(rec.reached) == 5 and rec.sent[-2]["status"] == 429


async def test_what_is_never_counted() -> None:
    mw, rec = middleware("1/minute")
    service = {"Authorization": f"Bearer {ServiceTokenSource(SECRET).token()}"}
    for _ in range(3):
        await run(mw, rec, scope(headers=service))  # live call turns: never throttled
        await run(mw, rec, scope(path="/health"))
        await run(mw, rec, scope(path="/metrics"))
        await run(mw, rec, scope(method="OPTIONS"))
        await mw({"type": "lifespan"}, rec.receive, rec.send)
    assert len(rec.reached) == 15 and not rec.sent
    await run(mw, rec, scope())  # the address's one request
    await run(mw, rec, scope(path="/health/ready"))  # a prefix: exempt
    await run(mw, rec, scope(path="/agents/health"))
    assert rec.reached[15:] == ["/agents", "/health/ready"]
    assert [m.get("status") for m in rec.sent] == [429, None]
    custom, rec2 = middleware("1/minute", is_exempt=lambda path: path.startswith("/voice/"))
    for _ in range(3):
        await run(custom, rec2, scope(path="/voice/webhook/twilio"))
    await run(custom, rec2, scope(path="/health"))
    await run(custom, rec2, scope(path="/health"))  # no longer exempt with its own rule
    assert rec2.reached == ["/voice/webhook/twilio"] * 3 + ["/health"]


async def test_the_forwarded_client_is_counted_only_behind_a_trusted_proxy() -> None:
    mw, rec = middleware("1/minute")
    for i in range(3):  # rotating X-Forwarded-For buys nothing without a trusted proxy
        await run(mw, rec, scope(headers={"X-Forwarded-For": f"198.51.100.{i}"}))
    assert len(rec.reached) == 1
    trusting, rec2 = middleware("1/minute", trust_proxy=True)
    for i in range(3):  # behind our proxy, each forwarded client is its own
        await run(trusting, rec2, scope(headers={"X-Forwarded-For": f"198.51.100.{i}"}))
    assert len(rec2.reached) == 3


async def test_a_websocket_handshake_over_the_limit_is_refused() -> None:
    mw, rec = middleware("1/minute")
    token = mint_token(SECRET, "viewer-1", "viewer")
    await run(mw, rec, scope("websocket", "/ws", query=f"token={token}"))
    assert rec.reached == ["/ws"]
    ext = {"websocket.http.response": {}}
    await run(mw, rec, scope("websocket", "/ws", query=f"token={token}", extensions=ext))
    assert rec.received == 1  # the handshake's connect message is read first
    start, body = rec.sent
    assert (start["type"], start["status"]) == ("websocket.http.response.start", 429)
    assert body["type"] == "websocket.http.response.body" and b"rate_limited" in body["body"]
    rec.sent.clear()
    await run(mw, rec, scope("websocket", "/ws", query=f"token={token}"))
    assert rec.sent == [{"type": "websocket.close", "code": 1013}] and rec.received == 2
    # another viewer's token on the same address: its own budget
    other = mint_token(SECRET, "viewer-2", "viewer")
    await run(mw, rec, scope("websocket", "/ws", query=f"token={other}"))
    assert rec.reached == ["/ws", "/ws"]


async def test_a_token_that_does_not_verify_counts_by_address() -> None:
    mw, rec = middleware("1/minute")
    await run(mw, rec, scope(headers={"Authorization": "Bearer not.a.jwt"}))
    await run(mw, rec, scope(headers={"Authorization": "Bearer not.a.jwt"}))
    assert len(rec.reached) == 1 and rec.sent[0]["status"] == 429
