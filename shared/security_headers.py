"""Browser-facing hardening for both services, the equivalent of the spec's helmet + cors.

`SecurityHeadersMiddleware` (pure ASGI) adds to every HTTP response:
`X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` with CSP `frame-ancestors 'none'`
(the API is never framed), `Referrer-Policy: no-referrer`, `Cross-Origin-Opener-Policy`, and
`Strict-Transport-Security` only when the request came over HTTPS (the scheme uvicorn saw,
`X-Forwarded-Proto` with `TRUST_PROXY`, or an https `PUBLIC_BASE_URL`): HSTS over plain HTTP
is ignored by browsers and would pin a development host.

`cors_middleware` builds Starlette's `CORSMiddleware` from `CORS_ORIGIN` (comma-separated) and
`CORS_CREDENTIALS`; `*` together with credentials is refused at start-up.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS_VALUE = b"max-age=31536000; includeSubDomains"
BASE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# /docs (the orchestrator's Swagger UI, development only) loads scripts and styles from a CDN.
DOCS_CSP = b"frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/redoc")


class CorsConfigError(ValueError):
    """CORS settings that would be unsafe (`*` with credentials)."""


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https_public_url: bool = False, trust_proxy: bool = False):
        self.app = app
        self._https_public_url = https_public_url
        self._trust_proxy = trust_proxy

    def _https(self, scope: Scope) -> bool:
        if self._https_public_url or scope.get("scheme") == "https":
            return True
        if self._trust_proxy:
            for name, value in scope.get("headers", ()):
                if name == b"x-forwarded-proto":
                    first: str = value.decode("latin-1").split(",")[0].strip().lower()
                    return first == "https"
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = self._https(scope)
        docs = scope.get("path", "").startswith(DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in BASE_HEADERS:
                    if name in present:
                        continue
                    if docs and name == b"content-security-policy":
                        value = DOCS_CSP
                    headers.append((name, value))
                if https and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", HSTS_VALUE))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def parse_origins(value: str | None) -> list[str]:
    return [o.strip().rstrip("/") for o in (value or "").split(",") if o.strip()]


def cors_middleware(origins_setting: str | None, credentials: bool) -> Middleware | None:
    """Starlette's CORS middleware for `CORS_ORIGIN`, or None when no origin is configured."""
    origins = parse_origins(origins_setting)
    if not origins:
        return None
    if credentials and "*" in origins:
        raise CorsConfigError(
            "CORS_ORIGIN=* cannot be combined with CORS_CREDENTIALS=true; list the origins"
        )
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials=credentials,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=600,
    )
