"""Vonage's Voice REST API for the Vonage adapter: create, hang up, replace a call's NCCO.

The SDK (`vonage`) is synchronous and uses `requests`: every call runs in a thread, and the
clients are built off the event loop (building one reads the private key). One client per API
host: `VONAGE_API_HOST` (e.g. `api-eu.vonage.com`) by default, and a call's own `region_url`
(Vonage sends it on the answer webhook) for requests about that call, so a call handled in a
region is hung up in that region.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from realtime_gateway.vocabulary import ProviderConfigError, ProviderError
from shared.logging import scrub_text

if TYPE_CHECKING:
    from vonage_voice import Voice

    from realtime_gateway.config import GatewaySettings

log = logging.getLogger(__name__)

REST_TIMEOUT_S = 10
# Hosts a call's `region_url` may name: Vonage's own, nothing else gets our credentials.
_VONAGE_DOMAINS = (".vonage.com", ".nexmo.com")


def region_host(region_url: object) -> str | None:
    """`https://api-us-3.vonage.com` -> `api-us-3.vonage.com`; None for anything not Vonage's."""
    if not isinstance(region_url, str) or not region_url:
        return None
    parts = urlsplit(region_url if "://" in region_url else f"https://{region_url}")
    host = (parts.hostname or "").lower()
    return host if parts.scheme == "https" and host.endswith(_VONAGE_DOMAINS) else None


def private_key_text(value: str) -> str:
    """VONAGE_PRIVATE_KEY holds the PEM itself (`\\n` escapes allowed) or a path to it."""
    text = value.strip().replace("\\n", "\n")
    if text.startswith("-----BEGIN"):
        return text
    path = Path(text)
    try:
        if path.is_file():
            return path.read_text()
    except OSError:
        pass
    return text


class VonageRest:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._clients: dict[str | None, Voice] = {}

    def voice_client(self, host: str | None = None) -> Voice:
        """The SDK's Voice client for `host` (default: `VONAGE_API_HOST` or the SDK's)."""
        host = host or self.settings.vonage_api_host or None
        if host not in self._clients:
            s = self.settings
            if not s.vonage_application_id or not s.vonage_private_key:
                raise ProviderConfigError(
                    "VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY are required"
                )
            from vonage import Auth, HttpClientOptions, Vonage

            auth = Auth(
                application_id=s.vonage_application_id,
                private_key=private_key_text(s.vonage_private_key.get_secret_value()),
            )
            options: dict[str, Any] = {"timeout": REST_TIMEOUT_S, "max_retries": 1}
            if host:
                options["api_host"] = host
            self._clients[host] = Vonage(auth, HttpClientOptions(**options)).voice
        return self._clients[host]

    async def client(self, metadata: Mapping[str, Any] | None = None) -> Voice:
        host = region_host((metadata or {}).get("region_url"))
        return await asyncio.to_thread(self.voice_client, host)

    async def create_call(self, params: Any) -> Any:
        voice = await self.client()
        try:
            return await asyncio.to_thread(voice.create_call, params)
        except Exception as exc:
            raise provider_error(exc, "Vonage refused the call") from None

    async def hangup(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        voice = await self.client(metadata)
        try:
            await asyncio.to_thread(voice.hangup, call_id)
        except Exception as exc:
            if _status_of(exc) in (404, 410):  # unknown or already over: not an error
                return
            raise provider_error(exc, "Vonage could not end the call") from None

    async def replace_ncco(
        self, call_id: str, ncco: list[dict[str, Any]], metadata: Mapping[str, Any] | None = None
    ) -> None:
        voice = await self.client(metadata)
        try:
            await asyncio.to_thread(voice.transfer_call_ncco, call_id, _ncco_models(ncco))
        except Exception as exc:
            log.warning("vonage NCCO update failed", extra={"error": describe(exc)})

    async def check(self) -> None:
        from vonage_voice.models.requests import ListCallsFilter

        voice = await self.client()
        await asyncio.to_thread(voice.list_calls, ListCallsFilter(page_size=1))


def _ncco_models(ncco: list[dict[str, Any]]) -> list[Any]:
    """The SDK's `transfer_call_ncco` takes models: rebuild them from the rendered dicts."""
    from vonage_voice.models.ncco import Stream, Talk

    models: list[Any] = []
    for item in ncco:
        data = {k: v for k, v in item.items() if k != "action"}
        models.append(Talk(**data) if item.get("action") == "talk" else Stream(**data))
    return models


def _status_of(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def describe(exc: Exception) -> str:
    status = _status_of(exc)
    if status is None:
        return type(exc).__name__
    title = ""
    try:
        body = exc.response.json()  # type: ignore[attr-defined]
        title = str(body.get("title") or body.get("error_title") or "")[:200]
    except Exception:  # noqa: S110 - the status alone is still a useful description
        pass
    return scrub_text(f"HTTP {status} {title}".strip())


def provider_error(exc: Exception, what: str) -> ProviderError:
    status = _status_of(exc)
    if status is not None and 400 <= status < 500 and status not in (401, 403, 429):
        return ProviderError(f"{what}: {describe(exc)}", status=400)
    return ProviderError(f"{what}: {describe(exc)}", status=502)
