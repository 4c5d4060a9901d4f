"""The public URL a provider requested: what URL signatures (Twilio's) are checked against and
what drivers build their callback URLs on.

Request headers are chosen by whoever sends the request: a signature checked against a URL
rebuilt from `Host` or `X-Forwarded-Host` proves only that the sender once saw a signed request
for *some* URL (another deployment's, a staging one's). So the origin comes from configuration:

1. `PUBLIC_BASE_URL`;
2. else the origin of the provider's own `*_WEBHOOK_URL` (`TWILIO_WEBHOOK_URL`, ...);
3. else, outside production only (a laptop behind ngrok), the request: `X-Forwarded-Proto` /
   `X-Forwarded-Host` when the peer is a trusted proxy (`TRUSTED_PROXIES`, `TRUST_PROXY`),
   otherwise the scheme and `Host` this process received;
4. in production with nothing configured, the address the request arrived on: never a header,
   so a URL signature fails closed. Start-up refuses that state for the providers that need the
   URL (`unanchored_providers`, checked by the settings).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.requests import Request

from realtime_gateway.drivers.base import origin_of
from realtime_gateway.runtime import get_runtime
from shared.errors import ApiError

if TYPE_CHECKING:
    from realtime_gateway.config import GatewaySettings

# Providers whose webhooks depend on the public URL: Twilio signs it, Vonage is told its
# callback URLs (eventUrl, actions) built on it.
URL_PROVIDERS = ("twilio", "vonage")
WEBHOOK_URL_VARIABLES = {
    "twilio": "TWILIO_WEBHOOK_URL",
    "vonage": "VONAGE_WEBHOOK_URL",
    "aws-connect": "AWS_CONNECT_WEBHOOK_URL",
}
SELFTEST_PROVIDER = "test"  # /voice/webhook/test reports on the current provider
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def public_url(request: Request, settings: GatewaySettings) -> str:
    """The URL the provider requested (what its signature covers): base + path + query."""
    base = configured_base(settings, _provider(request)) or _request_base(request, settings)
    path, query = request.url.path, request.url.query
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def configured_base(settings: GatewaySettings, provider: str | None) -> str:
    """`PUBLIC_BASE_URL`, else the origin of `provider`'s own `*_WEBHOOK_URL`, else ''."""
    if settings.public_base_url:
        return settings.public_url()
    own = _provider_webhook_url(settings, provider)
    return origin_of(own) if own else ""


def unanchored_providers(settings: GatewaySettings) -> list[str]:
    """Configured providers that need a public URL and have none from configuration, each as
    `twilio (or TWILIO_WEBHOOK_URL)`: in production they could only fail every request."""
    configured = {
        "twilio": settings.twilio_auth_token is not None,
        "vonage": bool(settings.vonage_application_id or settings.vonage_signature_secret),
    }
    return [
        f"{name} (or {WEBHOOK_URL_VARIABLES[name]})"
        for name in URL_PROVIDERS
        if (settings.voice_provider == name or configured[name])
        and not configured_base(settings, name)
    ]


def _provider_webhook_url(settings: GatewaySettings, provider: str | None) -> str | None:
    urls = {
        "twilio": settings.twilio_webhook_url,
        "vonage": settings.vonage_webhook_url,
        "aws-connect": settings.aws_connect_webhook_url,
    }
    url = urls.get(provider or "")
    return str(url) if url else None


def _provider(request: Request) -> str | None:
    """The provider the request is for: the route's, else (`/voice/webhook`, the self-test)
    the current one."""
    name = request.path_params.get("provider")
    if name and name != SELFTEST_PROVIDER:
        return str(name)
    if "app" not in request.scope:  # a bare request outside an app
        return None
    try:
        return get_runtime(request).drivers.current_name
    except ApiError:  # not started: no provider to ask
        return None


def _request_base(request: Request, settings: GatewaySettings) -> str:
    if settings.production:
        return _arrival_base(request)
    scheme, netloc = request.url.scheme, request.url.netloc
    peer = request.client.host if request.client else None
    if settings.proxy_trust().trusts(peer):
        proto = _first(request.headers.get("x-forwarded-proto")).lower()
        host = _first(request.headers.get("x-forwarded-host"))
        scheme = proto if proto in ("http", "https") else scheme
        netloc = host if _HOST.match(host) else netloc
    return f"{scheme}://{netloc}"


def _arrival_base(request: Request) -> str:
    """Scheme and listening address of this process, from the socket, not from a header."""
    server = request.scope.get("server")
    host, port = (str(server[0]), server[1]) if server else ("localhost", None)
    host = f"[{host}]" if ":" in host else host
    scheme = request.url.scheme
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _first(value: str | None) -> str:
    """The first (client-nearest proxy's) entry of a comma-separated forwarded header."""
    return value.split(",")[0].strip() if value else ""
