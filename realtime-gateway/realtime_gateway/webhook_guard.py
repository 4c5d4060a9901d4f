"""Provider webhooks are limited on what FAILS verification, per source address.

A provider sends every call's webhooks from a few addresses, so a per-address limit on all
traffic would throttle a busy hour into dead air. Valid signed requests are therefore never
counted nor refused. Each request that fails verification (unsigned, forged, replayed) counts
against its source address (`RATE_LIMIT_WEBHOOK_FAILURES`, default 20 per minute); past that,
the address's failing requests get 429 with `Retry-After` instead of 401/403, while its valid
requests keep being answered (a signature check costs one HMAC, cheaper than any bookkeeping).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from shared.proxies import TrustedProxies
from shared.ratelimit import RateLimiter, client_address, too_many_requests

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_FAILURE_RATE = "20/minute"


class WebhookFailureLimiter:
    def __init__(self, limiter: RateLimiter, trust_proxy: bool | TrustedProxies) -> None:
        self._limiter = limiter
        self._trust_proxy = trust_proxy

    async def failed(self, request: Request) -> Response | None:
        """Count one failed verification; a 429 response once the address is over its limit."""
        address = client_address(request.scope, self._trust_proxy)
        decision = await self._limiter.hit(f"ip:{address}")
        if decision.allowed:
            return None
        log.warning("webhook verification failures over the limit", extra={"client_ip": address})
        body, headers = too_many_requests(decision, "requests failing verification")
        return Response(
            body,
            status_code=429,
            headers={k.decode(): v.decode() for k, v in headers if k != b"content-length"},
        )


async def count_failed_verification(request: Request) -> Response | None:
    """The app's limiter (None when the app was built without one)."""
    limiter = getattr(request.app.state, "webhook_failures", None)
    if not isinstance(limiter, WebhookFailureLimiter):
        return None
    return await limiter.failed(request)
