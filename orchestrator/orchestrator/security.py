"""The orchestrator's own parts of the HTTP hardening (issue 8): which paths are public, and the
answer to a value Postgres refuses.

The middleware stack itself (security headers, CORS, the body limit, the management rate limit)
is common to both services: `shared.middleware_stack`. Auth and roles are `deps.py`'s.
"""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.responses import Response

from shared.errors import error_response

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/health", "/demo/")  # /demo: outside production only (main.py)


def is_public(path: str) -> bool:
    """Reached without a token by load balancers and uptime checks (health, the service root):
    never rate limited."""
    return path == "/" or path.startswith(PUBLIC_PREFIXES)


async def on_data_error(request: Request, exc: Exception) -> Response:
    """A value Postgres cannot take (e.g. `?offset=` beyond int64, found by fuzzing) is the
    client's input, not a server fault: 400 naming the request, never a 500."""
    log.warning(
        "value refused by the database", extra={"path": request.url.path, "error": str(exc)[:200]}
    )
    return error_response(
        400, "invalid_parameter", f"a value in the request is out of range: {exc}"
    )
