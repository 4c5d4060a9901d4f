"""The `BaseDriver` interface every voice provider implements, and the provider-neutral types
drivers exchange with the gateway core.

A driver parses its provider's requests, checks their signatures, drives the call through the
`CallFlow` (provider-neutral: live call state, `/ws` events, orchestrator turns, fallbacks) and
renders the `Action`s it gets back in its provider's format (TwiML, NCCO, Connect map, JSON).
A driver never talks to the orchestrator directly and never answers a provider with a 5xx.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

from starlette.responses import Response

from shared.contract import Action, InputType

if TYPE_CHECKING:
    import httpx

    from realtime_gateway.config import GatewaySettings

# Our call status vocabulary is Twilio's (the generic-http protocol uses it too).
CallStatus = Literal[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "busy", "failed", "no-answer", "canceled"}
)
# Forward order; a callback that would move a call backwards is ignored.
STATUS_ORDER: dict[str, int] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "failed": 4,
    "no-answer": 4,
    "canceled": 4,
}


# What the caller hears when a turn cannot be answered (orchestrator down, store failing).
FALLBACK_APOLOGY = "Sorry, one moment please — could you say that again?"

# The parties of a synthetic self-test call (`BaseDriver.synthetic_request`): numbers from the
# 555-01xx range, reserved for fiction, so a self-test never names a real phone.
SYNTHETIC_CALLER = "+14155550100"
SYNTHETIC_CALLEE = "+14155550199"


WEBHOOK_PATH = "/voice/webhook"


def origin_of(url: str) -> str:
    """`https://host/voice/webhook/twilio?x=1` -> `https://host` (keeps a path prefix that
    sits before `/voice/webhook`, for gateways mounted under a sub-path)."""
    head, sep, _ = url.partition(WEBHOOK_PATH)
    if sep:
        return head.rstrip("/")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def unset_variables(pairs: Sequence[tuple[str, object]]) -> list[str]:
    """The names of the (ENV_NAME, value) pairs whose value is unset or empty."""
    return [name for name, value in pairs if not value]


class SignatureError(Exception):
    """The request is unsigned, badly signed, stale or replayed: answer 401/403, change nothing."""

    def __init__(self, message: str, status: int = 403, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # the JSON error code; the route picks one from `status` when None


class ProviderConfigError(Exception):
    """The provider's configuration is missing or invalid (names the variables).

    `missing`, when given, lists the variables by name (e.g. for a self-test report)."""

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing)


class ProviderError(Exception):
    """The provider's API refused or failed a request (`make_call`, `end_call`).

    `status` is the HTTP status to answer our own API client with (400 when the provider
    rejected what we sent, e.g. a number it cannot dial; 502 when the provider failed);
    `message` is safe to show (no secrets, numbers masked)."""

    def __init__(self, message: str, status: int = 502, code: str = "provider_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(slots=True)
class WebhookRequest:
    """A provider request as the driver needs it, independent of Starlette."""

    method: str
    url: str  # the public URL the provider requested (PUBLIC_BASE_URL / forwarded host applied)
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]
    body: bytes
    form: Mapping[str, str] = field(default_factory=dict)  # parsed urlencoded body, if any
    client_ip: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(slots=True)
class CallInfo:
    call_id: str  # the provider's call id (CallSid, Vonage uuid, ContactId, generic call_id)
    provider: str
    direction: Literal["inbound", "outbound"] = "inbound"
    caller: str | None = None  # E.164 where known
    callee: str | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallerInput:
    turn_id: str
    type: InputType = "speech"
    text: str = ""
    digits: str | None = None
    confidence: float | None = None


@dataclass(slots=True)
class FlowReply:
    """What the caller should hear/do next, provider-neutral."""

    actions: list[Action]
    text: str = ""
    fallback: bool = False  # True when the orchestrator failed and this is the spoken apology
    turn_id: str | None = None


@dataclass(slots=True)
class OutboundCall:
    call_id: str
    provider: str
    status: str = "queued"
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallOptions:
    recording: bool = False
    transcription: bool = False
    agent_id: str | None = None
    machine_detection: bool = False
    from_number: str | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class ConfigReport:
    ok: bool
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reachable: bool | None = None  # None: not checked


class CallFlow(Protocol):
    """The gateway core, as drivers see it (implemented in `realtime_gateway.turns`)."""

    async def start(self, call: CallInfo) -> FlowReply:
        """Create the live call (idempotent), emit `call.started` once, return the greeting."""
        ...

    async def turn(self, call_id: str, heard: CallerInput) -> FlowReply:
        """One caller turn: `message.received`, orchestrator (idempotent per turn), `message.sent`.
        On orchestrator failure returns an apology + listen again (`fallback=True`)."""
        ...

    async def status(
        self, call_id: str, status: str, extra: Mapping[str, Any] | None = None
    ) -> None:
        """Record a status; ignores backward transitions; a terminal one ends the call once."""
        ...

    async def end(
        self, call_id: str, reason: str = "completed", duration_s: float | None = None
    ) -> bool:
        """End the call: `call.ended` exactly once (True the first time), orchestrator told."""
        ...

    async def first_time(self, key: str, ttl_s: float = 86400) -> bool:
        """True the first time `key` is seen (across instances when Redis is configured)."""
        ...

    async def ensure_call(self, call: CallInfo) -> bool:
        """Track a call this gateway does not know yet (e.g. a turn arriving after a restart
        without Redis); emits `call.started` and returns True only when it was new."""
        ...


@dataclass(slots=True)
class DriverDeps:
    settings: GatewaySettings
    http: httpx.AsyncClient  # pooled client for provider REST calls made with httpx
    flow: CallFlow


class BaseDriver(ABC):
    name: str
    display_name: str

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
    async def handle_webhook(self, request: WebhookRequest, step: str) -> Response:
        """Answer one verified provider request. `step` is the path after
        `/voice/webhook/{provider}` ('' for the voice/answer webhook, 'status', 'gather', ...).
        Always a valid provider response."""

    @abstractmethod
    async def make_call(self, to: str, options: CallOptions) -> OutboundCall: ...

    @abstractmethod
    async def end_call(self, call_id: str) -> None:
        """Hang up at the provider. Idempotent: an already-ended call is not an error."""

    def fallback_response(self, request: WebhookRequest, step: str) -> Response | None:
        """A valid provider reply for when handling a verified request failed unexpectedly
        (e.g. the call store is unreachable): the route answers this instead of a 5xx.
        Typically an apology and a new listen; None when the provider has no such reply."""
        return None

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """A request exactly as this provider would send it for an inbound call starting
        (`call_id` its call id), signed the provider's way with the configured secret, for
        `POST /voice/webhook/test` to run through `verify_request` and `handle_webhook(req, "")`.
        Raises `ProviderConfigError` naming the variables (`missing`) when it cannot be signed.
        """
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
