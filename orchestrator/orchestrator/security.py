"""The orchestrator's HTTP hardening, installed by `create_app` (issue 8).

Outermost first, inside the request id middleware: security headers on every response, CORS
(`CORS_ORIGIN`/`CORS_CREDENTIALS`), the body limit (`MAX_BODY_BYTES`: 413 before FastAPI parses
anything; over-deep JSON -> 400), and the management rate limit (`RATE_LIMIT_MANAGEMENT` per JWT
`sub`, else per address; counters in Redis with `REDIS_URL`). The gateway's service token is
exempt: live call turns are never throttled. Auth and roles themselves are `deps.py`'s.
"""

from __future__ import annotations

import logging

import asyncpg
from fastapi import FastAPI, Request
from starlette.responses import Response

from orchestrator.config import OrchestratorSettings
from shared.body_limit import BodyLimitMiddleware
from shared.config import ConfigError
from shared.errors import error_response
from shared.ratelimit import DEFAULT_EXEMPT_PREFIXES, ManagementRateLimitMiddleware, RateLimiter
from shared.security_headers import CorsConfigError, SecurityHeadersMiddleware, cors_middleware

log = logging.getLogger(__name__)


def _exempt(path: str) -> bool:
    return path == "/" or path.startswith(DEFAULT_EXEMPT_PREFIXES)


def install_security(app: FastAPI, settings: OrchestratorSettings, jwt_secret: str) -> None:
    """Call before adding the request id middleware (FastAPI: the last added is outermost)."""
    app.add_middleware(
        ManagementRateLimitMiddleware,
        limiter=RateLimiter(
            settings.rate_limit_management, settings.redis_url, "orchestrator-management"
        ),
        secret=jwt_secret,
        trust_proxy=settings.trust_proxy,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        is_exempt=_exempt,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    try:
        cors = cors_middleware(settings.cors_origin, settings.cors_credentials)
    except CorsConfigError as exc:
        raise ConfigError(f"configuration error: {exc}") from None
    if cors is not None:
        app.add_middleware(cors.cls, *cors.args, **cors.kwargs)
    app.add_middleware(SecurityHeadersMiddleware, trust_proxy=settings.trust_proxy)
    app.add_exception_handler(asyncpg.DataError, on_data_error)


async def on_data_error(request: Request, exc: Exception) -> Response:
    """A value Postgres cannot take (e.g. `?offset=` beyond int64, found by fuzzing) is the
    client's input, not a server fault: 400 naming the request, never a 500."""
    log.warning(
        "value refused by the database", extra={"path": request.url.path, "error": str(exc)[:200]}
    )
    return error_response(
        400, "invalid_parameter", f"a value in the request is out of range: {exc}"
    )
