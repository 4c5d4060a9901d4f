"""The gateway's call vocabulary: what a provider adapter parses into and renders from.

Below the drivers and the call flow, so both import from here and neither from the other: an
adapter turns a provider request into one `CallEvent` (`Started`, `Heard`, `StatusChanged`,
`Ended`, `MachineAnswered`, `TransferEnded`, `Acknowledged`), the call flow (`callflow.py`)
decides what happens and answers a `FlowReply` of provider-neutral `Action`s, and the adapter
renders that reply in its format. The status vocabulary itself is the contract's
(`shared.contract.CallStatus`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.contract import Action, InputType

# The parties of a synthetic self-test call (`BaseDriver.synthetic_request`): numbers from the
# 555-01xx range, reserved for fiction, so a self-test never names a real phone.
SYNTHETIC_CALLER = "+14155550100"
SYNTHETIC_CALLEE = "+14155550199"

Direction = Literal["inbound", "outbound"]


class SignatureError(Exception):
    """The request is unsigned, badly signed, stale or replayed: answer 401/403, change nothing."""

    def __init__(self, message: str, status: int = 403, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # the JSON error code; the route picks one from `status` when None


class ProviderConfigError(Exception):
    """The provider's configuration is missing or invalid (names the variables).

    `missing`, when given, lists the variables by name (e.g. for a self-test report)."""

    def __init__(self, message: str, missing: list[str] | tuple[str, ...] = ()) -> None:
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
    """A provider request as the adapter needs it, independent of Starlette."""

    method: str
    url: str  # the public URL the provider requested (what its signature covers)
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]
    body: bytes
    form: Mapping[str, str] = field(default_factory=dict)  # parsed urlencoded body, if any
    client_ip: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(slots=True)
class CallInfo:
    """One call as a provider describes it; the same record is stored as the live call."""

    call_id: str  # the provider's call id (CallSid, Vonage uuid, ContactId, generic call_id)
    provider: str
    direction: Direction = "inbound"
    caller: str | None = None  # E.164 where known (`shared.phone.to_e164`)
    callee: str | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def described(self) -> dict[str, Any]:
        """The call as its provider described it: what is stored, and what the orchestrator
        is told when the call starts."""
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "direction": self.direction,
            "caller": self.caller,
            "callee": self.callee,
            "agent_id": self.agent_id,
            "metadata": dict(self.metadata),
        }


@dataclass(slots=True)
class CallerInput:
    turn_id: str
    type: InputType = "speech"
    text: str = ""
    digits: str | None = None
    confidence: float | None = None

    @property
    def empty(self) -> bool:
        return not self.text.strip() and not (self.digits or "").strip()


@dataclass(slots=True)
class FlowReply:
    """What the caller should hear/do next, provider-neutral."""

    actions: list[Action]
    text: str = ""
    fallback: bool = False  # True when the orchestrator failed and this is the spoken apology
    turn_id: str | None = None
    next_turn: int = 1  # for adapters that number turns in their callback URLs
    silent: int = 0  # consecutive silent turns so far (carried the same way)
    duplicate: bool = False  # a redelivered event: acknowledged, nothing done
    voice_mode: str | None = None  # the agent's (`relay`, `gather`); None: the gateway's default
    resume: bool = False  # a streaming session ended by accident: reconnect the caller to it


# ---- events: what an adapter parses a provider request into ------------------------------------


@dataclass(slots=True, kw_only=True)
class CallEvent:
    call: CallInfo
    # Keys that make a redelivery of this event a no-op (e.g. Twilio's idempotency token).
    dedupe: tuple[str, ...] = ()
    # A key whose second sight is refused as a replay (409): a generic-http `event_id`.
    replay_key: str | None = None
    turn: int = 0  # the provider's turn number where it carries one (0: none)

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(slots=True, kw_only=True)
class Started(CallEvent):
    """The call was answered: greet (or, for an answering machine, leave the message)."""

    answered_by: str | None = None


@dataclass(slots=True, kw_only=True)
class Heard(CallEvent):
    """One caller turn; an empty input is silence (the silence policy answers it)."""

    heard: CallerInput
    silent: int = 0  # silent turns before this one
    silence_policy: bool = True  # False: an empty input goes to the agent (generic-http)


@dataclass(slots=True, kw_only=True)
class StatusChanged(CallEvent):
    status: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Ended(CallEvent):
    reason: str = "completed"
    duration_s: float | None = None


@dataclass(slots=True, kw_only=True)
class MachineAnswered(CallEvent):
    """Answering-machine detection said "machine" after the call started."""


@dataclass(slots=True, kw_only=True)
class TransferEnded(CallEvent):
    connected: bool
    outcome: str = ""


@dataclass(slots=True, kw_only=True)
class SessionEnded(CallEvent):
    """A streaming session (ConversationRelay) ended: `handoff` is what our side asked for when
    it ended it (`{"action": "transfer", "to": …}`, `hangup`, `resume`), empty when it ended on
    its own; `failed` when the provider reports an error (e.g. the socket dropped)."""

    handoff: dict[str, Any] = field(default_factory=dict)
    failed: bool = False


@dataclass(slots=True, kw_only=True)
class Acknowledged(CallEvent):
    """A provider event with nothing to do (an error report, an unknown event type)."""

    note: str = ""


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

    @classmethod
    async def of(
        cls,
        missing: list[str],
        problems: list[str],
        reach: Callable[[], Awaitable[object]] | None,
        what: str,
        describe: Callable[[Exception], str],
    ) -> ConfigReport:
        """The report; with `reach` (and nothing missing or wrong), whether the provider's API
        answers, with the reason when it does not."""
        report = cls(ok=not missing and not problems, missing=missing, problems=problems)
        if reach is not None and report.ok:
            try:
                await reach()
                report.reachable = True
            except Exception as exc:  # any failure means "not reachable", with the reason
                report.reachable = False
                report.ok = False
                report.problems.append(f"{what} not reachable: {describe(exc)}")
        return report


def unset_variables(pairs: list[tuple[str, object]]) -> list[str]:
    """The names of the (ENV_NAME, value) pairs whose value is unset or empty."""
    return [name for name, value in pairs if not value]


def unset_with_public_url(
    pairs: list[tuple[str, object]], public_base: str, webhook_variable: str
) -> list[str]:
    """`unset_variables`, and the public URL when there is none (a provider that signs the
    URLs it calls cannot be verified without it)."""
    missing = unset_variables(pairs)
    if not public_base:
        missing.append(f"PUBLIC_BASE_URL (or {webhook_variable})")
    return missing


def number_or(value: str | None, default: int) -> int:
    """A turn or silence counter from a provider field: `default` when absent or malformed."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def confidence_of(value: object) -> float | None:
    """A speech confidence (string or number) clamped to 0..1; None when absent or malformed."""
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return min(1.0, max(0.0, number))


def seconds_of(value: object) -> float | None:
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
