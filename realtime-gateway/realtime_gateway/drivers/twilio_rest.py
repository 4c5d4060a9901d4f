"""Twilio's REST API for the Twilio adapter: place, end and check calls; its configuration.

The SDK client (`twilio.rest`) is synchronous and heavy to import: it is built on first use, in
a thread, and every request runs in a thread. It follows `TWILIO_REGION` / `TWILIO_EDGE`
(Twilio's regional API and edge locations) when set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from realtime_gateway.vocabulary import (
    ConfigReport,
    ProviderConfigError,
    ProviderError,
    unset_with_public_url,
)
from shared.logging import scrub_text
from shared.phone import to_e164

if TYPE_CHECKING:
    from twilio.http import HttpClient
    from twilio.rest import Client

    from realtime_gateway.config import GatewaySettings

log = logging.getLogger(__name__)
# The SDK logs every REST request line by line at INFO: keep that out of normal logs.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.WARNING)

REST_TIMEOUT_S = 10.0
# Twilio error codes meaning "this call is not in progress any more".
_ALREADY_ENDED_CODES = frozenset({20404, 21220})


class TwilioRest:
    def __init__(self, settings: GatewaySettings, http_client: HttpClient | None = None) -> None:
        self.settings = settings
        self._http_client = http_client
        self._client: Client | None = None

    def client(self) -> Client:
        """The SDK client, built once (call it off the event loop: it imports twilio.rest)."""
        if self._client is None:
            s = self.settings
            if not s.twilio_account_sid or not s.twilio_auth_token:
                raise ProviderConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required")
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            http_client = self._http_client or TwilioHttpClient(
                timeout=REST_TIMEOUT_S, logger=_sdk_log
            )
            self._client = Client(
                s.twilio_account_sid,
                s.twilio_auth_token.get_secret_value(),
                http_client=http_client,
                region=s.twilio_region or None,  # e.g. "ie1": data stays in that region
                edge=s.twilio_edge or None,  # e.g. "dublin": the nearest point of presence
            )
        return self._client

    def missing(self, public_base: str) -> list[str]:
        s = self.settings
        return unset_with_public_url(
            [
                ("TWILIO_ACCOUNT_SID", s.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", s.twilio_auth_token),
                ("TWILIO_PHONE_NUMBER", s.twilio_phone_number),
            ],
            public_base,
            "TWILIO_WEBHOOK_URL",
        )

    async def validate(self, public_base: str, check_reachability: bool) -> ConfigReport:
        missing = self.missing(public_base)
        problems: list[str] = []
        sid = self.settings.twilio_account_sid
        if sid and not sid.startswith("AC"):
            problems.append("TWILIO_ACCOUNT_SID must start with 'AC'")
        number = self.settings.twilio_phone_number
        if number and not to_e164(number):
            problems.append("TWILIO_PHONE_NUMBER must be E.164, e.g. +15551234567")
        reach = self.check if check_reachability else None
        return await ConfigReport.of(missing, problems, reach, "Twilio API", describe)

    def use_http_client(self, http_client: HttpClient) -> None:
        """Route REST calls through `http_client` (tests fake Twilio's API this way)."""
        self._http_client = http_client
        self._client = None

    async def create_call(self, **kwargs: Any) -> Any:
        client = await asyncio.to_thread(self.client)
        try:
            return await asyncio.to_thread(client.calls.create, **kwargs)
        except Exception as exc:
            raise provider_error(exc, "Twilio refused the call") from None

    async def end_call(self, call_id: str) -> None:
        client = await asyncio.to_thread(self.client)
        try:
            await asyncio.to_thread(client.calls(call_id).update, status="completed")
        except Exception as exc:
            if _already_ended(exc):
                return
            raise provider_error(exc, "Twilio could not end the call") from None

    async def check(self) -> None:
        client = await asyncio.to_thread(self.client)
        await asyncio.to_thread(client.api.v2010.accounts(self.settings.twilio_account_sid).fetch)


def _already_ended(exc: Exception) -> bool:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        return exc.status == 404 or exc.code in _ALREADY_ENDED_CODES
    return False


def describe(exc: Exception) -> str:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        return scrub_text(f"HTTP {exc.status}, code {exc.code}: {exc.msg}")
    return type(exc).__name__


def provider_error(exc: Exception, what: str) -> ProviderError:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        status = 400 if 400 <= exc.status < 500 and exc.status not in (401, 403, 429) else 502
        return ProviderError(f"{what}: {describe(exc)}", status=status)
    log.warning("twilio request failed", extra={"error": type(exc).__name__})
    return ProviderError(f"{what}: {type(exc).__name__}", status=502)
