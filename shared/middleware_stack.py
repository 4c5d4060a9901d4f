"""The HTTP middleware stack both services serve behind, built once, in the order that matters.

`middleware_stack()` returns Starlette `Middleware` entries, outermost first, for
`Starlette(middleware=...)` / `FastAPI(middleware=...)`. What a layer sees depends on what is
outside it, so the order is the point:

0. request timing (`shared.metrics.HttpMetricsMiddleware`): not in this list. Each service's
   `install_metrics` adds it after the app is made, with its own registry and its `/metrics`
   route; `add_middleware` puts it outside everything here, so every answer below (a 401, 413
   or 429 included) is timed.
1. request id: first of all, so every later layer logs with it and every response carries it.
2. the service's own per-request layers (`per_request`), e.g. the gateway's access log (one line
   per request, with its request id, rejections included) and its drain counter (requests in
   flight; `/health` 503 while draining).
3. security headers: on every response, the rejections of the layers below included.
4. CORS (only when `CORS_ORIGIN` is set): a preflight is answered before the limits and the
   auth (it carries no credentials), and an allowed origin can read a 401/413/429 body.
5. body limit: 413 before anything parses a body.
6. management rate limit: before the auth, so a flood of bad tokens is counted too. Never
   throttled: `/metrics` (Prometheus), the service's public paths (`is_public`) and the
   gateway's service token (live call turns; see `shared.ratelimit`).
7. the service's auth middleware (`auth`), innermost, when it authenticates in middleware.

Where the two services differed, and what holds now (both apps' behaviour is unchanged):
- Authentication: the gateway denies by default in a pure ASGI middleware (HTTP and WebSocket
  alike: `/ws` and provider streams are sockets), passed as `auth`; the orchestrator checks
  tokens and roles in FastAPI dependencies (`deps.py`), inside routing, and passes none. Both are
  right for their routes: a middleware is the gateway's only way to cover its sockets.
- The access log: only the gateway has one (uvicorn's is off in both), and so it stays a layer
  the gateway passes. The gateway is the edge providers, browsers and operators reach; the
  orchestrator's turns come from the gateway, which has logged each under the request id it
  forwards, and a line per turn there would add work to the turn's path. (Its management API
  is not access-logged today; giving it one means moving the gateway's layer to `shared/`.)
- HSTS from an https public URL: only the gateway has one (`PUBLIC_BASE_URL`, the URL providers
  sign); the orchestrator goes by the scheme it was reached with (or a trusted
  `X-Forwarded-Proto`), as both do.
- Public paths: each service names its own (gateway: webhooks, streams, health; orchestrator:
  health and `/`); `/metrics` used to be spelt by each, and is exempt here for both.
- Whom the rate limit believes about the client's address: the gateway's `TRUSTED_PROXIES`
  list (`trusted_proxies`; its public URL and uvicorn believe the same peers); the orchestrator
  has only `TRUST_PROXY` (any peer or none). The security headers go by `TRUST_PROXY` in both
  (`X-Forwarded-Proto` for HSTS), as before.
- A bad CORS setting stops either service at start-up with the same one line (`ConfigError`).
- The management counters keep their namespace, `<service>-management`: counters shared
  through Redis survive an upgrade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from starlette.middleware import Middleware

from shared.body_limit import BodyLimitMiddleware
from shared.config import ConfigError
from shared.logging import RequestIdMiddleware
from shared.metrics import METRICS_PATH
from shared.proxies import TrustedProxies
from shared.ratelimit import ManagementRateLimitMiddleware, RateLimiter
from shared.security_headers import CorsConfigError, SecurityHeadersMiddleware, cors_middleware


class StackSettings(Protocol):
    """What the stack reads from a service's settings (the same variables in both)."""

    @property
    def trust_proxy(self) -> bool: ...
    @property
    def cors_origin(self) -> str | None: ...
    @property
    def cors_credentials(self) -> bool: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def rate_limit_management(self) -> str: ...
    @property
    def redis_url(self) -> str | None: ...
    @property
    def jwt_audience(self) -> str | None: ...
    @property
    def jwt_issuer(self) -> str | None: ...


def middleware_stack(
    settings: StackSettings,
    jwt_secret: str,
    *,
    service: str,
    is_public: Callable[[str], bool],
    per_request: Sequence[Middleware] = (),
    auth: Middleware | None = None,
    https_public_url: bool = False,
    trusted_proxies: TrustedProxies | None = None,
) -> list[Middleware]:
    """The stack, outermost first (see the module docstring for the order and why).

    `service` names the management rate limit's counters (`<service>-management`); `is_public`
    says which paths are never throttled; `per_request` and `auth` are the service's own layers;
    `https_public_url`: the service is reached over https whatever the request says (HSTS);
    `trusted_proxies`: the peers whose `X-Forwarded-For` names the client the rate limit counts
    (default: any peer with `TRUST_PROXY=true`, none without)."""
    try:
        cors = cors_middleware(settings.cors_origin, settings.cors_credentials)
    except CorsConfigError as exc:
        raise ConfigError(f"configuration error: {exc}") from None
    return [
        Middleware(RequestIdMiddleware),
        *per_request,
        Middleware(
            SecurityHeadersMiddleware,
            https_public_url=https_public_url,
            trust_proxy=settings.trust_proxy,
        ),
        *([cors] if cors is not None else []),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        Middleware(
            ManagementRateLimitMiddleware,
            limiter=RateLimiter(
                settings.rate_limit_management, settings.redis_url, f"{service}-management"
            ),
            secret=jwt_secret,
            trust_proxy=settings.trust_proxy if trusted_proxies is None else trusted_proxies,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            is_exempt=lambda path: is_public(path) or path.startswith(METRICS_PATH),
        ),
        *([auth] if auth is not None else []),
    ]
