"""`BaseDriver`: what a provider adapter is — verify, parse, render, and its REST client.

An adapter checks a request's signature (`verify_request`, with `signatures.py`), parses it into
one provider-neutral `CallEvent` (`parse`), and renders the `FlowReply` the call flow decides
(`render`) as TwiML, NCCO, a Connect map or JSON. It holds its provider's REST client
(`make_call`, `end_call`). It holds no policy: silence, apologies, dedupe, status rules, language
tags and reply lengths are the call flow's (`callflow.py`); an adapter declares only its
provider's facts (`speech_limits`). It never talks to the orchestrator and never answers a
provider with a 5xx.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from starlette.responses import Response

from realtime_gateway import metrics
from realtime_gateway.speech import SpeechLimits
from realtime_gateway.vocabulary import (
    CallEvent,
    CallOptions,
    ConfigReport,
    FlowReply,
    OutboundCall,
    WebhookRequest,
)
from shared.errors import ApiError, error_response

if TYPE_CHECKING:
    import httpx

    from realtime_gateway.callflow import CallFlow
    from realtime_gateway.config import GatewaySettings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/voice/webhook"


def origin_of(url: str) -> str:
    """`https://host/voice/webhook/twilio?x=1` -> `https://host` (keeps a path prefix that
    sits before `/voice/webhook`, for gateways mounted under a sub-path)."""
    head, sep, _ = url.partition(WEBHOOK_PATH)
    if sep:
        return head.rstrip("/")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


@dataclass(slots=True)
class DriverDeps:
    settings: GatewaySettings
    http: httpx.AsyncClient  # pooled client for provider REST calls made with httpx
    flow: CallFlow


class BaseDriver(ABC):
    name: str
    display_name: str
    speech_limits: SpeechLimits = SpeechLimits()

    def __init__(self, deps: DriverDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.flow = deps.flow

    async def initialize(self) -> None:  # noqa: B027 - optional hook
        """Create SDK clients etc. Must not do network I/O."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what `initialize` made."""

    @abstractmethod
    def get_capabilities(self) -> list[str]: ...

    @abstractmethod
    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport: ...

    @abstractmethod
    async def verify_request(self, request: WebhookRequest) -> None:
        """Raise `SignatureError` unless the request is signed by the provider (fail closed)."""

    @abstractmethod
    def parse(self, request: WebhookRequest, step: str) -> CallEvent:
        """The call event a verified request reports (`ApiError` 400/404 naming the problem
        for a payload that is not one). `step` is the path after `/voice/webhook/{provider}`."""

    @abstractmethod
    async def render(self, request: WebhookRequest, event: CallEvent, reply: FlowReply) -> Response:
        """The provider's answer for `reply` to `event`."""

    @abstractmethod
    async def make_call(self, to: str, options: CallOptions) -> OutboundCall: ...

    @abstractmethod
    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Hang up at the provider. Idempotent: an already-ended call is not an error.
        `metadata` is the live call's (e.g. Vonage's `region_url` for the call's region)."""

    async def handle_webhook(self, request: WebhookRequest, step: str) -> Response:
        """Parse, let the call flow decide, render. If deciding fails (e.g. the call store is
        unreachable) the flow's fallback is rendered: always a valid provider answer."""
        try:
            event = self.parse(request, step.strip("/"))
        except ApiError as exc:  # not a call event: refused, nothing done
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        try:
            reply = await self.flow.handle(event, self.speech_limits)
        except ApiError as exc:  # a replayed event: refused, nothing done
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except Exception:
            log.exception(
                "webhook handling failed; the caller gets the fallback",
                extra={"provider": self.name, "step": step, "call_id": event.call_id},
            )
            metrics.webhook_failed()
            reply = self.flow.fallback(event, self.speech_limits)
        return await self.render(request, event, reply)

    def fallback_response(self, request: WebhookRequest, step: str) -> Response | None:
        """A valid provider reply for a request that could not even be parsed and rendered
        (the route answers this instead of a 5xx); None when the provider has no such reply."""
        return None

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """A request exactly as this provider would send it for an inbound call starting
        (`call_id` its call id), signed the provider's way with the configured secret, for
        `POST /voice/webhook/test`. Raises `ProviderConfigError` naming the variables
        (`missing`) when it cannot be signed."""
        raise NotImplementedError(f"the {self.name} driver has no synthetic request")

    def configured_webhook_url(self) -> str | None:
        """The provider's own `*_WEBHOOK_URL` setting, if it has one."""
        return None

    def public_base(self, request: WebhookRequest | None = None) -> str:
        """`PUBLIC_BASE_URL`, else the origin of the provider's `*_WEBHOOK_URL`, else the origin
        of the (already public) URL of the request being answered."""
        base = self.settings.public_url()
        if base:
            return base
        configured = self.configured_webhook_url()
        if configured:
            return origin_of(configured)
        if request is not None:
            return origin_of(request.url)
        return ""

    def webhook_url(
        self,
        step: str = "",
        query: Mapping[str, str | int] | None = None,
        request: WebhookRequest | None = None,
    ) -> str:
        """Public URL of one of this driver's webhook routes (on `public_base(request)`)."""
        suffix = f"/{step}" if step else ""
        url = f"{self.public_base(request)}{WEBHOOK_PATH}/{self.name}{suffix}"
        return f"{url}?{urlencode(query)}" if query else url
