"""Rate limiting for both services, on the maintained `limits` library (moving window).

`RateLimiter` counts hits per key in process, or in Redis when `REDIS_URL` is set so every
instance of a service shares the counters. `ManagementRateLimitMiddleware` (pure ASGI) applies
the spec's management limit (default 100 requests per 15 minutes) per client: the JWT `sub` when
the request carries a valid management token (a `/ws` handshake's `?token=` included), else the
client address (from `X-Forwarded-For` only when the peer is a trusted proxy: `client_address`).
Exempt: health checks, metrics, provider webhooks/streams (they have their own failure limiter)
and the gateway's service token (live call turns must never be throttled). Over the limit:
429 JSON with `Retry-After`.

A counter store that cannot be reached fails open (logged): a Redis outage must not turn into
a management outage, and never into dead air on a call.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth import SERVICE_ROLE, TokenError, bearer_from_header, verify_token
from shared.errors import error_body
from shared.proxies import TrustedProxies

log = logging.getLogger(__name__)

DEFAULT_MANAGEMENT_RATE = "100/15minutes"
DEFAULT_EXEMPT_PREFIXES = ("/health", "/metrics")


def parse_rate(value: str) -> RateLimitItem:
    """`100/15minutes`, `100 per 15 minutes`, `5/second`; ValueError names the value."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"not a rate limit (e.g. 100/15minutes): {value!r}") from exc


def _storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    scheme, sep, rest = redis_url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must be redis:// or rediss://, got {scheme!r}")
    return RedisStorage(f"async+{scheme}://{rest}", implementation="redispy", key_prefix="VAO_RL")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


class RateLimiter:
    def __init__(self, rate: str, redis_url: str | None = None, namespace: str = "default") -> None:
        self.item = parse_rate(rate)
        self.rate = rate
        self.namespace = namespace
        self._storage = _storage(redis_url)
        self._limiter = MovingWindowRateLimiter(self._storage)
        self.backend = "redis" if redis_url else "memory"

    async def hit(self, key: str) -> Decision:
        try:
            allowed = await self._limiter.hit(self.item, self.namespace, key)
            stats = await self._limiter.get_window_stats(self.item, self.namespace, key)
        except Exception as exc:  # the counter store is down: fail open
            log.warning(
                "rate limit store unavailable; request allowed",
                extra={"namespace": self.namespace, "error": type(exc).__name__},
            )
            return Decision(True, self.item.amount, self.item.amount, 0)
        retry = max(1, math.ceil(stats.reset_time - time.time())) if not allowed else 0
        return Decision(allowed, self.item.amount, max(0, stats.remaining), retry)

    async def aclose(self) -> None:
        # `limits` keeps its Redis client on the storage's bridge (an in-process store has none)
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing a pool on shutdown
                log.debug("rate limit store close failed", exc_info=True)


def client_address(scope: Scope, trust_proxy: bool | TrustedProxies) -> str:
    """The peer address; when the peer is a trusted proxy, the client it forwarded for.

    `True` (the older `TRUST_PROXY`): the last hop of `X-Forwarded-For` (the one our proxy
    added; earlier entries are whatever the client claimed). A `TrustedProxies` list: only when
    the peer is on it, and then the nearest hop that is not itself on it (a TLS terminator in
    front of nginx adds one hop)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    trusted = trust_proxy if isinstance(trust_proxy, bool) else trust_proxy.trusts(peer)
    if trusted:
        hops = _forwarded_for(scope)
        if hops and isinstance(trust_proxy, TrustedProxies) and not trust_proxy.any_peer:
            untrusted = [h for h in hops if not trust_proxy.trusts(h)]
            hops = untrusted or hops[:1]
        if hops:
            return hops[-1][:64]
    return peer or "unknown"


def _forwarded_for(scope: Scope) -> list[str]:
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            return [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
    return []


def request_token(scope: Scope) -> str | None:
    """The bearer token of a request: `Authorization: Bearer`, or on a WebSocket handshake the
    `?token=` query parameter (browsers cannot set headers there)."""
    token = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            token = bearer_from_header(value.decode("latin-1"))
            break
    if token is None and scope["type"] == "websocket":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [None])[0]
    return token


def too_many_requests(decision: Decision, what: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(
        error_body(
            "rate_limited",
            f"too many {what}; retry in {decision.retry_after_s} s",
            retry_after_s=decision.retry_after_s,
        )
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(decision.retry_after_s).encode()),
        (b"x-ratelimit-limit", str(decision.limit).encode()),
        (b"x-ratelimit-remaining", b"0"),
    ]
    return body, headers


class ManagementRateLimitMiddleware:
    """Per-client limit on the management API (HTTP requests and `/ws` handshakes)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        secret: str,
        *,
        trust_proxy: bool | TrustedProxies = False,
        audience: str | None = None,
        issuer: str | None = None,
        is_exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self._limiter = limiter
        self._secret = secret
        self._trust_proxy = trust_proxy
        self._audience = audience
        self._issuer = issuer
        self._is_exempt = is_exempt or (lambda path: path.startswith(DEFAULT_EXEMPT_PREFIXES))

    def _identity(self, scope: Scope) -> str | None:
        """`sub:<sub>` for a valid management token, None for the service token (exempt),
        else `ip:<address>`. A WebSocket handshake's `?token=` counts as its bearer token, so
        viewers behind one address (an office NAT, a proxy) each have their own budget; only
        failed or anonymous handshakes are counted per address."""
        token = request_token(scope)
        if token is not None:
            try:
                principal = verify_token(self._secret, token)
            except TokenError:
                principal = None
            if principal is not None:
                if principal.role == SERVICE_ROLE:
                    return None
                return f"sub:{principal.sub}"
        return f"ip:{client_address(scope, self._trust_proxy)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self._is_exempt(path) or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        identity = self._identity(scope)
        if identity is None:
            await self.app(scope, receive, send)
            return
        decision = await self._limiter.hit(identity)
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        log.warning(
            "management rate limit exceeded",
            extra={"client": identity.partition(":")[0], "path": path},
        )
        body, headers = too_many_requests(decision, "requests")
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # the handshake's websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1013})
