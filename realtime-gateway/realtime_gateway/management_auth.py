"""Management auth, deny by default: every route needs a management JWT except the ones a
provider or a load balancer must reach without one (provider webhooks and streams, which carry the
provider's own signature, health checks, and `/metrics` for Prometheus).

Pure ASGI, so it covers HTTP and WebSocket alike: `Authorization: Bearer <JWT>`, or `?token=` on
a WebSocket handshake (browsers cannot set headers there). The verified principal is left in
`scope["state"]["principal"]` for later role checks.
"""

from __future__ import annotations

import json
from typing import Literal

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth import Principal, TokenError, verify_management_token
from shared.errors import ApiError, error_body
from shared.ratelimit import request_token

PUBLIC_PREFIXES = ("/voice/webhook/", "/voice/stream/", "/health/")
# /metrics: Prometheus scrapes without a JWT; it exposes no personal data (shared/metrics.py).
PUBLIC_PATHS = frozenset({"/health", "/voice/webhook", "/metrics"})
# The console's page and files hold no data (what it shows comes through the API, with a token);
# its `/console/api/` proxy is a management route like the others.
CONSOLE_PATHS = frozenset({"/console", "/console/"})
CONSOLE_FILES = "/console/static/"
# `POST /voice/webhook/test` is a management route under the webhook prefix: it signs a request
# with the provider's secret and drives the driver, so it needs an operator token and counts
# against the management rate limit like every other management route.
SELFTEST_PATH = "/voice/webhook/test"
CLOSE_POLICY_VIOLATION = 1008


Role = Literal["viewer", "operator", "admin"]
# admin: everything; operator: place and end calls, and read; viewer: read only.
ROLE_RANK: dict[str, int] = {"viewer": 1, "operator": 2, "admin": 3}


def principal_of(conn: HTTPConnection) -> Principal:
    """The management principal the middleware verified for this request."""
    principal = conn.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer <JWT>)")
    return principal


def require_role(conn: HTTPConnection, minimum: Role, action: str) -> Principal:
    """The principal, if its role is `minimum` or above; 403 naming both roles otherwise."""
    principal = principal_of(conn)
    if ROLE_RANK.get(principal.role, 0) < ROLE_RANK[minimum]:
        above = " or admin" if minimum == "operator" else ""
        raise ApiError(
            403,
            "forbidden",
            f"{action} needs the {minimum}{above} role; this token's role is {principal.role}",
        )
    return principal


def is_public(path: str) -> bool:
    if path == SELFTEST_PATH or path.startswith(SELFTEST_PATH + "/"):
        return False
    if path in CONSOLE_PATHS or path.startswith(CONSOLE_FILES):
        return True
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class ManagementAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        secret: str,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self.app = app
        self._secret = secret
        self._audience = audience
        self._issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflight carries no credentials
            return
        token = request_token(scope)  # the one the rate limit counted the request under
        try:
            if token is None:
                raise TokenError("missing bearer token (Authorization: Bearer <JWT>)")
            principal = verify_management_token(
                self._secret, token, audience=self._audience, issuer=self._issuer
            )
        except TokenError as exc:
            if scope["type"] == "websocket":
                await receive()  # the handshake's websocket.connect, before answering it
            await self._deny(scope, send, str(exc))
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(scope: Scope, send: Send, message: str) -> None:
        body = json.dumps(error_body("unauthorized", message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
