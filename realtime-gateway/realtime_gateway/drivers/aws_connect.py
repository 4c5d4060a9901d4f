"""Amazon Connect: outbound contacts through the Connect API, inbound turns through a Lambda.

Inbound: a contact flow's "Invoke AWS Lambda function" block runs our forwarder Lambda
(`deploy/aws-connect/forwarder.py`), which POSTs the `ContactFlowEvent` to
`/voice/webhook/aws-connect`, signed with the generic-http scheme (`X-Gateway-Timestamp`,
`X-Gateway-Signature: v1=HMAC-SHA256(GENERIC_HTTP_SECRET, ts + "." + body)`), and hands our
flat answer back to the flow. Each invocation is one turn:

- no `input`/`digits` parameter and no turn yet -> the call starts (greeting);
- `Parameters.input` (the caller's words from a Lex "Get customer input" block) or
  `Parameters.digits` -> one turn, numbered by `Parameters.turn` or the contact attribute
  `turn` the flow stores from our previous answer's `next_turn`;
- a turn with neither words nor digits -> silence: re-prompt, then goodbye after
  `MAX_SILENT_TURNS`;
- `Parameters.event = ended` (invoked from the flow's disconnect flow) -> the call ends
  (`call.ended` once): Connect sends no status callbacks, so this is how the gateway learns it.

The answer is a flat `{str: str}` map the flow reads as `$.External.<key>`: `action`
(`speak` | `transfer` | `hangup`), `text`, `transfer_number`, `next_turn`, `silent`,
`language`, `fallback`. Connect retries a failed invoke, so a turn is idempotent per
(ContactId, turn): the flow answers a repeated turn from the orchestrator's stored reply.
A retried invoke is a new forwarder request (a new timestamp, so a new signature); the very same
signed request seen again is a replay and is refused (409, nothing done): the ledger is keyed on
the request's signature (`signatures.hmac_request_id`), kept longer than the timestamp window.

This module keeps verify + parse + render; the answer map is rendered in `aws_connect_map.py`,
the Connect API (boto3, imported there only; every call in a thread) and the configuration check
are `aws_connect_rest.py`, so each stays under the 350-line rule for provider modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from realtime_gateway.drivers.aws_connect_map import connect_map, render_reply
from realtime_gateway.drivers.aws_connect_rest import ConnectRest, dialable
from realtime_gateway.drivers.base import BaseDriver, DriverDeps
from realtime_gateway.drivers.generic_http import resolve_secret
from realtime_gateway.idempotency import signature_key
from realtime_gateway.signatures import hmac_request_id, signed_headers, verify_hmac_request
from realtime_gateway.speech import SpeechLimits
from realtime_gateway.vocabulary import (
    SYNTHETIC_CALLEE,
    SYNTHETIC_CALLER,
    CallerInput,
    CallEvent,
    CallInfo,
    CallOptions,
    ConfigReport,
    FlowReply,
    Heard,
    OutboundCall,
    ProviderConfigError,
    SignatureError,
    Started,
    StatusChanged,
    WebhookRequest,
    confidence_of,
    number_or,
)
from shared.errors import ApiError
from shared.logging import mask_phone
from shared.phone import to_e164

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = logging.getLogger(__name__)
# `connect_map` and `render_reply` (aws_connect_map.py) are re-exported: callers import them here.
__all__ = ["END_EVENTS", "AwsConnectDriver", "connect_map", "render_reply"]

# Connect waits at most 8 s for the Lambda; the forwarder gives us 7 s; we answer within 6.5.
ANSWER_BUDGET_S = 6.5
# The forwarder passes at most this many characters a value (`deploy/aws-connect/forwarder.py`).
MAX_VALUE_CHARS = 3000
# `Parameters.event` values that report the end of the contact (the flow's disconnect flow).
END_EVENTS = frozenset({"ended", "disconnected", "hangup"})


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _details(request: WebhookRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(ContactData, Parameters, Attributes) of a ContactFlowEvent; `ApiError` 400 otherwise."""
    try:
        event = json.loads(request.body)
    except ValueError:
        raise ApiError(400, "bad_request", "body must be a ContactFlowEvent (JSON)") from None
    details = event.get("Details") if isinstance(event, dict) else None
    contact = details.get("ContactData") if isinstance(details, dict) else None
    if not isinstance(details, dict) or not isinstance(contact, dict):
        raise ApiError(400, "bad_request", "Details.ContactData.ContactId is required")
    if not _str(contact.get("ContactId")):
        raise ApiError(400, "bad_request", "Details.ContactData.ContactId is required")
    params = details.get("Parameters")
    attributes = contact.get("Attributes")
    return (
        contact,
        params if isinstance(params, dict) else {},
        attributes if isinstance(attributes, dict) else {},
    )


class AwsConnectDriver(BaseDriver):
    name = "aws-connect"
    display_name = "Amazon Connect"
    # One answer is one flat map: everything spoken fits in one value the forwarder passes.
    speech_limits = SpeechLimits(say_chars=MAX_VALUE_CHARS, reply_chars=MAX_VALUE_CHARS)

    def __init__(self, deps: DriverDeps, client: BaseClient | None = None) -> None:
        super().__init__(deps)
        self.rest = ConnectRest(deps.settings, client)
        self._secret: str | None = None

    async def initialize(self) -> None:
        # The forwarder's signing secret (in development a generated file under DATA_DIR):
        # read once, off the event loop.
        self._secret = await asyncio.to_thread(resolve_secret, self.settings)

    def _signing_secret(self) -> str | None:
        if self._secret is None:
            self._secret = resolve_secret(self.settings)
        return self._secret

    # ---- configuration -------------------------------------------------------------------

    def get_capabilities(self) -> list[str]:
        return ["voice", "dtmf", "transfer", "recording", "transcription"]

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        return await self.rest.validate(self._signing_secret() is not None, check_reachability)

    async def connect_client(self) -> BaseClient:
        """The boto3 Connect client, built once (`aws_connect_rest.ConnectRest`)."""
        return await self.rest.connect_client()

    # ---- signatures ----------------------------------------------------------------------

    async def verify_request(self, request: WebhookRequest) -> None:
        if request.method.upper() != "POST":
            raise SignatureError("Amazon Connect events are POSTed", status=405)
        secret = self._signing_secret()
        if secret is None:
            raise SignatureError("GENERIC_HTTP_SECRET is not configured", status=403)
        verify_hmac_request(secret, request)

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """The forwarder Lambda's POST of a contact flow's first invocation for an inbound
        contact: the `ContactFlowEvent` as compact JSON, signed with the generic-http scheme."""
        secret = self._signing_secret()
        if secret is None:
            raise ProviderConfigError(
                "cannot sign an Amazon Connect forwarder request: missing GENERIC_HTTP_SECRET",
                missing=["GENERIC_HTTP_SECRET"],
            )
        event = {
            "Name": "ContactFlowEvent",
            "Details": {
                "ContactData": {
                    "Attributes": {},
                    "Channel": "VOICE",
                    "ContactId": call_id,
                    "CustomerEndpoint": {"Address": SYNTHETIC_CALLER, "Type": "TELEPHONE_NUMBER"},
                    "InitialContactId": call_id,
                    "InitiationMethod": "INBOUND",
                    "PreviousContactId": call_id,
                    "Queue": None,
                    "SystemEndpoint": {"Address": SYNTHETIC_CALLEE, "Type": "TELEPHONE_NUMBER"},
                },
                "Parameters": {},
            },
        }
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "vao-aws-connect-forwarder/1",
        }
        headers.update({k.lower(): v for k, v in signed_headers(secret, body).items()})
        return WebhookRequest(
            method="POST", url=self.webhook_url(), headers=headers, query={}, body=body
        )

    # ---- webhooks ------------------------------------------------------------------------

    def parse(self, request: WebhookRequest, step: str) -> CallEvent:
        """The event, whose replay key is the request's signature: a signed request is used
        once (a replay within the timestamp window is a 409)."""
        if step not in ("", "invoke", "turn"):
            raise ApiError(404, "not_found", f"unknown Amazon Connect step '{step}'")
        secret = self._signing_secret()
        if secret is None:  # verify_request refused it already; never parse unverified
            raise ApiError(403, "forbidden", "GENERIC_HTTP_SECRET is not configured")
        event = self._parse(request)
        event.replay_key = signature_key(self.name, hmac_request_id(secret, request))
        return event

    def _parse(self, request: WebhookRequest) -> CallEvent:
        contact, params, attributes = _details(request)
        call = self._call_info(contact, attributes)
        turn = number_or(_str(params.get("turn")) or _str(attributes.get("turn")), 0)
        text = _str(params.get("input"))
        digits = _str(params.get("digits"))
        if _str(params.get("event")).lower() in END_EVENTS:
            # The flow's disconnect flow (or its last block) reports the end: Connect sends no
            # status callbacks, so this is how the gateway learns it.
            return StatusChanged(
                call=call, status="completed", extra={"provider_status": "disconnected"}, turn=turn
            )
        if turn <= 0 and not text and not digits:
            return Started(call=call)
        heard = CallerInput(
            turn_id=str(max(turn, 1)),
            type="dtmf" if digits and not text else "speech",
            text=text,
            digits=digits or None,
            confidence=confidence_of(params.get("confidence")),
        )
        silent = number_or(_str(params.get("silent")) or _str(attributes.get("silent")), 0)
        return Heard(call=call, heard=heard, turn=max(turn, 1), silent=max(0, silent))

    async def handle_webhook(self, request: WebhookRequest, step: str) -> Response:
        """Connect gives the Lambda 8 s: past `ANSWER_BUDGET_S` the caller hears the apology."""
        try:
            async with asyncio.timeout(ANSWER_BUDGET_S):
                return await super().handle_webhook(request, step)
        except TimeoutError:
            log.warning("aws-connect turn too slow; apologising")
            return self.fallback_response(request, step)

    async def render(self, request: WebhookRequest, event: CallEvent, reply: FlowReply) -> Response:
        if isinstance(event, StatusChanged):
            return JSONResponse(connect_map("hangup", "", next_turn=max(event.turn, 1)))
        return JSONResponse(
            render_reply(reply.actions, reply.next_turn, reply.fallback, silent=reply.silent)
        )

    def fallback_response(self, request: WebhookRequest, step: str) -> Response:
        """The apology map: the flow speaks it and asks the same turn again."""
        turn = 1
        try:
            _, params, attributes = _details(request)
            turn = max(1, number_or(_str(params.get("turn")) or _str(attributes.get("turn")), 1))
        except ApiError:
            pass
        reply = self.flow.fallback(None, self.speech_limits)
        return JSONResponse(render_reply(reply.actions, turn, fallback=True))

    def _call_info(self, contact: Mapping[str, Any], attributes: Mapping[str, Any]) -> CallInfo:
        customer = contact.get("CustomerEndpoint") or {}
        system = contact.get("SystemEndpoint") or {}
        method = _str(contact.get("InitiationMethod")) or "INBOUND"
        metadata: dict[str, Any] = {
            "initiation_method": method,
            "channel": _str(contact.get("Channel")) or "VOICE",
        }
        if _str(contact.get("InitialContactId")):
            metadata["initial_contact_id"] = contact["InitialContactId"]
        return CallInfo(
            call_id=_str(contact.get("ContactId")),
            provider=self.name,
            direction="outbound" if method in ("OUTBOUND", "API", "CALLBACK") else "inbound",
            caller=to_e164(customer.get("Address") if isinstance(customer, dict) else None),
            callee=to_e164(system.get("Address") if isinstance(system, dict) else None),
            agent_id=_str(attributes.get("agent_id")) or None,
            metadata=metadata,
        )

    # ---- REST ----------------------------------------------------------------------------

    async def make_call(self, to: str, options: CallOptions) -> OutboundCall:
        destination = dialable(to, "phone_number")
        missing = [
            m
            for m in self.rest.missing(self._signing_secret() is not None)
            if not m.startswith("GENERIC_HTTP_SECRET")
        ]
        if missing:
            raise ProviderConfigError(
                f"Amazon Connect is not configured: missing {', '.join(missing)}"
            )
        attributes = {
            "gateway_provider": self.name,
            "recording": "true" if options.recording else "false",
            "transcription": "true" if options.transcription else "false",
        }
        if options.agent_id:
            attributes["agent_id"] = options.agent_id
        client_token = (options.idempotency_key or uuid.uuid4().hex)[:500]
        source = options.from_number or self.settings.aws_connect_phone_number
        contact_id = await self.rest.start_contact(destination, source, attributes, client_token)
        log.info(
            "connect contact started", extra={"call_id": contact_id, "to": mask_phone(destination)}
        )
        return OutboundCall(
            call_id=contact_id,
            provider=self.name,
            status="initiated",
            raw={"client_token": client_token},
        )

    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        await self.rest.stop_contact(call_id)
