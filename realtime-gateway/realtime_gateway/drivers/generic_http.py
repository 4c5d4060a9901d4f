"""The generic-http provider: our own JSON protocol for any SIP/web bridge (PROTOCOLS.md).

Inbound, the bridge POSTs JSON events to `/voice/webhook/generic-http`, each signed:

    X-Gateway-Timestamp: <unix seconds>
    X-Gateway-Signature: v1=<hex HMAC-SHA256(GENERIC_HTTP_SECRET, timestamp + "." + raw_body)>

Several `v1=` values (comma or space separated) are accepted, so a secret can be rotated.
Answers to a request that fails a check (nothing is changed, no event emitted):

- 401 `invalid_signature`: signature header missing, malformed or wrong (constant-time compare);
- 401 `stale_request`: timestamp missing, not a number, or more than 300 s from our clock;
- 400 `bad_request` / `validation_error`: body not JSON, a field missing or malformed (named),
  or an unknown event `type`;
- 409 `replayed_event`: an `event_id` already seen (kept for a day, across gateway instances when
  Redis is configured).

Events: `call.started` (`from, to, direction, metadata`), `call.input` (`turn_id`, `input`:
`{type: speech|dtmf|timeout|text, text, confidence, digits}`), `call.status` (`status`, Twilio's
words), `call.ended` (`reason, duration_s`); all carry `event_id, type, call_id, timestamp`.
The answer is always `{"actions": [...]}` (`shared.contract.Action`s, unset fields left out);
`call.input` for a call this gateway does not know (e.g. after a restart) creates it.

Outbound, the gateway signs its own requests the same way: `POST {GENERIC_HTTP_BASE_URL}/calls`
with `{to, from, callback_url, idempotency_key}`, and `POST /calls/{id}/hangup`.

In development with no `GENERIC_HTTP_SECRET` a random one is made once as
`DATA_DIR/generic_http_secret` (its path is logged, never its value); in production the secret is
required while generic-http is the current provider.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.base import BaseDriver, DriverDeps
from realtime_gateway.idempotency import event_key
from realtime_gateway.signatures import (
    signed_headers,
    verify_hmac_request,
)
from realtime_gateway.vocabulary import (
    SYNTHETIC_CALLEE,
    SYNTHETIC_CALLER,
    CallerInput,
    CallEvent,
    CallInfo,
    CallOptions,
    ConfigReport,
    Ended,
    FlowReply,
    Heard,
    OutboundCall,
    ProviderConfigError,
    ProviderError,
    SignatureError,
    Started,
    StatusChanged,
    WebhookRequest,
)
from shared.auth import load_or_create_dev_secret
from shared.contract import ID_RE, MAX_MESSAGE_CHARS, Action, CallStatus, Identifier
from shared.errors import ApiError, describe_validation_errors
from shared.logging import call_id_var
from shared.phone import to_e164

log = logging.getLogger(__name__)

PROVIDER = "generic-http"
SECRET_FILE = "generic_http_secret"  # noqa: S105 - a file name, not a secret
OUTBOUND_TIMEOUT_S = 10.0


def resolve_secret(settings: GatewaySettings) -> str | None:
    """The configured secret; in development, one made once under DATA_DIR; else None."""
    if settings.generic_http_secret is not None:
        return settings.generic_http_secret.get_secret_value()
    if settings.production:
        return None
    secret = load_or_create_dev_secret(settings.data_dir, SECRET_FILE)
    log.info(
        "generic-http: no GENERIC_HTTP_SECRET set; using the development secret file",
        extra={"path": str(settings.data_dir / SECRET_FILE)},
    )
    return secret


# -- events ----------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    event_id: Identifier
    call_id: Identifier
    timestamp: float | str | None = None


class CallStartedEvent(_Event):
    type: Literal["call.started"]
    from_: str | None = Field(None, alias="from", max_length=64)
    to: str | None = Field(None, max_length=64)
    direction: Literal["inbound", "outbound"] = "inbound"
    agent_id: str | None = Field(None, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)


class InputPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["speech", "dtmf", "timeout", "text"] = "speech"
    text: str = Field("", max_length=MAX_MESSAGE_CHARS)
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    digits: str | None = Field(None, max_length=64, pattern=r"^[0-9*#wW]*$")


class CallInputEvent(_Event):
    type: Literal["call.input"]
    turn_id: Identifier
    input: InputPayload


class CallStatusEvent(_Event):
    type: Literal["call.status"]
    status: CallStatus
    duration_s: float | None = Field(None, ge=0)


class CallEndedEvent(_Event):
    type: Literal["call.ended"]
    reason: str = Field("completed", max_length=64)
    duration_s: float | None = Field(None, ge=0)


GenericEvent = Annotated[
    CallStartedEvent | CallInputEvent | CallStatusEvent | CallEndedEvent,
    Field(discriminator="type"),
]
EVENT_TYPES = ("call.started", "call.input", "call.status", "call.ended")
_EVENT_ADAPTER: TypeAdapter[GenericEvent] = TypeAdapter(GenericEvent)


def parse_event(body: bytes) -> GenericEvent:
    """Parse and validate one event; `ApiError` 400/422 naming the field otherwise."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    kind = raw.get("type")
    if kind not in EVENT_TYPES:
        raise ApiError(
            400,
            "bad_request",
            f"type: unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}",
        )
    try:
        return _EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": tuple(e["loc"][1:])} for e in exc.errors()]  # drop the tag
        raise ApiError(400, "validation_error", describe_validation_errors(errors)) from None


def actions_body(actions: list[Action]) -> dict[str, Any]:
    return {"actions": [a.model_dump(exclude_none=True) for a in actions]}


# -- driver ----------------------------------------------------------------------------------


class GenericHttpDriver(BaseDriver):
    name = PROVIDER
    display_name = "Generic HTTP"

    def __init__(self, deps: DriverDeps) -> None:
        super().__init__(deps)
        self._secret: str | None = None

    async def initialize(self) -> None:
        self._secret = resolve_secret(self.settings)

    @property
    def secret(self) -> str | None:
        """The HMAC secret bridges sign with (also the streaming socket's upgrade)."""
        return self._secret

    def _require_secret(self) -> str:
        if not self._secret:
            raise ProviderConfigError(
                "GENERIC_HTTP_SECRET is required for the generic-http provider",
                missing=["GENERIC_HTTP_SECRET"],
            )
        return self._secret

    def get_capabilities(self) -> list[str]:
        caps = ["voice", "inbound", "dtmf", "transfer", "hangup"]
        if self.settings.generic_http_base_url:
            caps.append("outbound")
        return caps

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        missing = [] if self._secret else ["GENERIC_HTTP_SECRET"]
        problems: list[str] = []
        reachable: bool | None = None
        base = self.settings.generic_http_base_url
        if check_reachability and base:
            try:
                r = await self.deps.http.get(str(base), timeout=httpx.Timeout(2.0))
                reachable = r.status_code < 500
            except httpx.HTTPError as exc:
                reachable = False
                problems.append(f"GENERIC_HTTP_BASE_URL unreachable: {type(exc).__name__}")
        return ConfigReport(ok=not missing, missing=missing, problems=problems, reachable=reachable)

    async def verify_request(self, request: WebhookRequest) -> None:
        if request.method != "POST":
            raise SignatureError("generic-http events are POSTed", status=405)
        verify_hmac_request(self._require_secret(), request)

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """The bridge's `call.started` for an inbound call, HMAC-signed with the secret."""
        secret = self._require_secret()
        event = {
            "event_id": uuid.uuid4().hex,
            "type": "call.started",
            "call_id": call_id,
            "timestamp": int(time.time()),
            "from": SYNTHETIC_CALLER,
            "to": SYNTHETIC_CALLEE,
            "direction": "inbound",
            "metadata": {},
        }
        body = json.dumps(event).encode()
        headers = {"content-type": "application/json"}
        headers.update({k.lower(): v for k, v in signed_headers(secret, body).items()})
        return WebhookRequest(
            method="POST", url=self.webhook_url(), headers=headers, query={}, body=body
        )

    def parse(self, request: WebhookRequest, step: str) -> CallEvent:
        if step not in ("", "status", "events"):
            raise ApiError(404, "not_found", f"no generic-http webhook step {step!r}")
        event = parse_event(request.body)
        call_id_var.set(event.call_id)
        call = CallInfo(call_id=event.call_id, provider=PROVIDER)
        replay = event_key(PROVIDER, event.event_id)
        if isinstance(event, CallStartedEvent):
            call.direction = event.direction
            call.caller = to_e164(event.from_) or event.from_
            call.callee = to_e164(event.to) or event.to
            call.agent_id = event.agent_id
            call.metadata = event.metadata
            return Started(call=call, replay_key=replay)
        if isinstance(event, CallInputEvent):
            heard = CallerInput(
                turn_id=event.turn_id,
                type=event.input.type,
                text=event.input.text,
                digits=event.input.digits,
                confidence=event.input.confidence,
            )
            # The bridge decides what silence means: a `timeout` input goes to the agent.
            return Heard(call=call, heard=heard, silence_policy=False, replay_key=replay)
        if isinstance(event, CallStatusEvent):
            return StatusChanged(
                call=call,
                status=event.status,
                extra={"duration_s": event.duration_s},
                replay_key=replay,
            )
        return Ended(call=call, reason=event.reason, duration_s=event.duration_s, replay_key=replay)

    async def render(self, request: WebhookRequest, event: CallEvent, reply: FlowReply) -> Response:
        return JSONResponse(actions_body(reply.actions))

    def fallback_response(self, request: WebhookRequest, step: str) -> Response | None:
        reply = self.flow.fallback(None, self.speech_limits)
        return JSONResponse(actions_body(reply.actions))

    async def make_call(self, to: str, options: CallOptions) -> OutboundCall:
        base = self._base_url()
        secret = self._require_secret()
        if not self.settings.public_url():
            raise ProviderConfigError(
                "PUBLIC_BASE_URL is required for outbound generic-http calls (the callback_url)"
            )
        payload = {
            "to": to,
            "from": options.from_number,
            "callback_url": self.webhook_url(),
            "idempotency_key": options.idempotency_key or uuid.uuid4().hex,
        }
        r = await self._post(f"{base}/calls", json.dumps(payload).encode(), secret)
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderError("generic-http bridge answered without a JSON object", status=502)
        call_id = str(data.get("call_id") or data.get("id") or "")
        if not ID_RE.fullmatch(call_id):
            raise ProviderError("generic-http bridge answered without a valid call_id", status=502)
        log.info("outbound call placed", extra={"to": to, "call_id": call_id})
        return OutboundCall(
            call_id=call_id,
            provider=PROVIDER,
            status=str(data.get("status") or "queued"),
            raw=data,
        )

    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        base = self._base_url()
        secret = self._require_secret()
        body = json.dumps({"call_id": call_id}).encode()
        url = f"{base}/calls/{quote(call_id, safe='')}/hangup"
        await self._post(url, body, secret, ok_statuses=(404, 409))  # already gone: not an error

    def _base_url(self) -> str:
        base = self.settings.generic_http_base_url
        if base is None:
            raise ProviderConfigError("GENERIC_HTTP_BASE_URL is required to place or end calls")
        return str(base).rstrip("/")

    async def _post(
        self, url: str, body: bytes, secret: str, ok_statuses: tuple[int, ...] = ()
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json", **signed_headers(secret, body)}
        try:
            r = await self.deps.http.post(
                url, content=body, headers=headers, timeout=httpx.Timeout(OUTBOUND_TIMEOUT_S)
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"generic-http bridge unreachable: {type(exc).__name__}") from exc
        if r.status_code in ok_statuses or r.is_success:
            return r
        status = 400 if 400 <= r.status_code < 500 else 502
        raise ProviderError(f"generic-http bridge answered {r.status_code}", status=status)
