"""Vonage's Voice REST API for the Vonage adapter: create, hang up, replace a call's NCCO; its
configuration check; and the hang-ups scheduled after a call's last words.

They live here, not in `vonage.py`, so the adapter keeps verify + parse + render and stays under
the 350-line rule for provider modules. The SDK (`vonage`) is synchronous and uses `requests`:
every call runs in a thread, and the clients are built off the event loop (building one reads
the private key). One client per API host: `VONAGE_API_HOST` (e.g. `api-eu.vonage.com`) by
default, and a call's own `region_url` (Vonage sends it on the answer webhook) for requests
about that call, so a call handled in a region is hung up in that region.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from realtime_gateway.vocabulary import (
    ConfigReport,
    ProviderConfigError,
    ProviderError,
    unset_with_public_url,
)
from shared.logging import scrub_text
from shared.phone import digits_only, to_e164

if TYPE_CHECKING:
    from vonage_voice import Voice

    from realtime_gateway.config import GatewaySettings

log = logging.getLogger(__name__)

REST_TIMEOUT_S = 10
# Vonage's text-to-speech says roughly 14 characters a second; the API hang-up waits for the
# goodbye to be heard (the NCCO ending hangs up too: this makes the end provable).
TTS_CHARS_PER_S = 14.0
HANGUP_GRACE_S = 1.5
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

    def missing(self, public_base: str) -> list[str]:
        s = self.settings
        return unset_with_public_url(
            [
                ("VONAGE_APPLICATION_ID", s.vonage_application_id),
                ("VONAGE_PRIVATE_KEY", s.vonage_private_key),
                ("VONAGE_PHONE_NUMBER", s.vonage_phone_number),
                ("VONAGE_SIGNATURE_SECRET", s.vonage_signature_secret),
            ],
            public_base,
            "VONAGE_WEBHOOK_URL",
        )

    async def validate(self, public_base: str, check_reachability: bool) -> ConfigReport:
        missing = self.missing(public_base)
        problems: list[str] = []
        number = self.settings.vonage_phone_number
        if number and not to_e164(number):
            problems.append("VONAGE_PHONE_NUMBER must be a phone number, e.g. +14155550100")
        key = self.settings.vonage_private_key
        if key and not private_key_text(key.get_secret_value()).startswith("-----BEGIN"):
            problems.append("VONAGE_PRIVATE_KEY must be a PEM private key or a path to one")
        reach = self.check if check_reachability else None
        return await ConfigReport.of(missing, problems, reach, "Vonage API", describe)

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


def call_request(
    to: str, from_number: str, answer_url: str, event_url: str, machine_detection: bool
) -> Any:
    """The SDK's `CreateCallRequest` for an outbound call (answer and events POSTed to our
    signed URLs); `ProviderError` 400 when Vonage cannot dial it."""
    from vonage_voice.models.common import Phone
    from vonage_voice.models.requests import CreateCallRequest, ToPhone

    request_kwargs: dict[str, Any] = {
        "to": [ToPhone(number=digits_only(to))],
        "from_": Phone(number=digits_only(from_number)),
        "answer_url": [answer_url],
        "answer_method": "POST",
        "event_url": [event_url],
        "event_method": "POST",
    }
    if machine_detection:
        request_kwargs["machine_detection"] = "continue"
    try:
        return CreateCallRequest(**request_kwargs)
    except Exception as exc:
        raise ProviderError(f"Vonage cannot dial this call: {exc}", status=400) from None


class Hangups:
    """API hang-ups scheduled for once a call's last words have been spoken (the NCCO ending
    hangs up too: this makes the end provable). One per call: a newer one replaces the older.
    `end_call(uuid, metadata)` is the adapter's own hang-up."""

    def __init__(self, end_call: Callable[[str, Mapping[str, Any]], Awaitable[None]]) -> None:
        self._end_call = end_call
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def schedule(self, uuid: str, delay_s: float, metadata: Mapping[str, Any]) -> None:
        previous = self._tasks.pop(uuid, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(
            self._later(uuid, delay_s, dict(metadata)), name=f"vonage-hangup-{uuid}"
        )
        self._tasks[uuid] = task
        task.add_done_callback(lambda t: self._forget(uuid, t))

    def _forget(self, uuid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(uuid) is task:
            del self._tasks[uuid]

    async def _later(self, uuid: str, delay_s: float, metadata: Mapping[str, Any]) -> None:
        await asyncio.sleep(delay_s)
        try:
            await self._end_call(uuid, metadata)
            log.info("vonage call hung up", extra={"call_id": uuid})
        except Exception as exc:
            log.warning("vonage hang-up failed", extra={"call_id": uuid, "error": describe(exc)})

    async def pending(self) -> None:
        """Wait for scheduled hang-ups (tests; graceful shutdown)."""
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


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
