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

boto3 is imported here only, and every Connect API call runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

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
    ProviderError,
    SignatureError,
    Started,
    StatusChanged,
    WebhookRequest,
    confidence_of,
    number_or,
    unset_variables,
)
from shared.contract import Action
from shared.errors import ApiError
from shared.languages import DEFAULT_LANGUAGE
from shared.logging import mask_phone, scrub_text
from shared.phone import parse_e164, to_e164

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = logging.getLogger(__name__)

# Connect waits at most 8 s for the Lambda; the forwarder gives us 7 s; we answer within 6.5.
ANSWER_BUDGET_S = 6.5
# The forwarder passes at most this many characters a value (`deploy/aws-connect/forwarder.py`).
MAX_VALUE_CHARS = 3000
# `Parameters.event` values that report the end of the contact (the flow's disconnect flow).
END_EVENTS = frozenset({"ended", "disconnected", "hangup"})
BOTO_CONNECT_TIMEOUT_S = 2.0
BOTO_READ_TIMEOUT_S = 5.0
BOTO_MAX_ATTEMPTS = 3
# Connect API errors that mean "what you sent is wrong", not "Connect failed".
_CLIENT_ERRORS = frozenset(
    {
        "InvalidParameterException",
        "InvalidRequestException",
        "DestinationNotAllowedException",
        "ResourceNotFoundException",
        "OutboundContactNotPermittedException",
    }
)


def connect_map(
    action: str,
    text: str = "",
    *,
    next_turn: int,
    silent: int = 0,
    transfer_number: str = "",
    language: str = DEFAULT_LANGUAGE,
    fallback: bool = False,
) -> dict[str, str]:
    """The flat string map a contact flow reads as `$.External.*` (all values strings)."""
    return {
        "action": action,
        "text": text,
        "transfer_number": transfer_number,
        "next_turn": str(next_turn),
        "silent": str(silent),
        "language": language,
        "fallback": "true" if fallback else "false",
    }


def render_reply(
    actions: Sequence[Action], next_turn: int, fallback: bool, silent: int = 0
) -> dict[str, str]:
    """Actions -> one Connect map: the words to speak, then what the flow does next."""
    said: list[str] = []
    language = DEFAULT_LANGUAGE
    for action in actions:
        if action.language:
            language = action.language
        if action.type == "say" and action.text and action.text.strip():
            said.append(action.text.strip())
        elif action.type == "gather":
            break
        elif action.type == "transfer" and action.to:
            return connect_map(
                "transfer",
                " ".join(said),
                next_turn=next_turn,
                silent=silent,
                transfer_number=action.to,
                language=language,
                fallback=fallback,
            )
        elif action.type == "hangup":
            return connect_map(
                "hangup",
                " ".join(said),
                next_turn=next_turn,
                silent=silent,
                language=language,
                fallback=fallback,
            )
        # play / stream / send_digits have no form in this protocol: skipped.
    return connect_map(
        "speak",
        " ".join(said),
        next_turn=next_turn,
        silent=silent,
        language=language,
        fallback=fallback,
    )


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
        self._client = client
        self._client_lock = asyncio.Lock()
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

    def _missing(self) -> list[str]:
        s = self.settings
        missing = unset_variables(
            [
                ("AWS_REGION", s.aws_region),
                ("AWS_CONNECT_INSTANCE_ID", s.aws_connect_instance_id),
                ("AWS_CONNECT_CONTACT_FLOW_ID", s.aws_connect_contact_flow_id),
            ]
        )
        if not s.aws_connect_phone_number and not s.aws_connect_queue_id:
            missing.append("AWS_CONNECT_PHONE_NUMBER (or AWS_CONNECT_QUEUE_ID)")
        if self._signing_secret() is None:
            missing.append("GENERIC_HTTP_SECRET (signs the forwarder Lambda's requests)")
        return missing

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        missing = self._missing()
        problems: list[str] = []
        s = self.settings
        if bool(s.aws_access_key_id) != bool(s.aws_secret_access_key):
            problems.append(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither "
                "(then the default AWS credential chain is used, e.g. an ECS task role)"
            )
        if s.aws_connect_phone_number:
            try:
                parse_e164(s.aws_connect_phone_number, "AWS_CONNECT_PHONE_NUMBER", exact=False)
            except ValueError as exc:
                problems.append(str(exc))
        report = ConfigReport(ok=not missing and not problems, missing=missing, problems=problems)
        if check_reachability and report.ok:
            try:
                client = await self.connect_client()
                await asyncio.to_thread(
                    client.describe_instance, InstanceId=s.aws_connect_instance_id
                )
                report.reachable = True
            except Exception as exc:  # any failure means "not reachable", with the reason
                report.reachable = False
                report.ok = False
                report.problems.append(f"Amazon Connect not reachable: {_describe(exc)}")
        return report

    async def connect_client(self) -> BaseClient:
        """The boto3 Connect client, built once (in a thread: botocore loads its models)."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await asyncio.to_thread(self._build_client)
        return self._client

    def _build_client(self) -> BaseClient:
        s = self.settings
        if not s.aws_region:
            raise ProviderConfigError("AWS_REGION is required")
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=BOTO_CONNECT_TIMEOUT_S,
            read_timeout=BOTO_READ_TIMEOUT_S,
            retries={"total_max_attempts": BOTO_MAX_ATTEMPTS, "mode": "standard"},
        )
        kwargs: dict[str, Any] = {"region_name": s.aws_region, "config": config}
        if s.aws_access_key_id and s.aws_secret_access_key:
            kwargs["aws_access_key_id"] = s.aws_access_key_id
            kwargs["aws_secret_access_key"] = s.aws_secret_access_key.get_secret_value()
        client: BaseClient = boto3.session.Session().client("connect", **kwargs)
        return client

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
        destination = _dialable(to, "phone_number")
        missing = [m for m in self._missing() if not m.startswith("GENERIC_HTTP_SECRET")]
        if missing:
            raise ProviderConfigError(
                f"Amazon Connect is not configured: missing {', '.join(missing)}"
            )
        s = self.settings
        attributes = {
            "gateway_provider": self.name,
            "recording": "true" if options.recording else "false",
            "transcription": "true" if options.transcription else "false",
        }
        if options.agent_id:
            attributes["agent_id"] = options.agent_id
        kwargs: dict[str, Any] = {
            "DestinationPhoneNumber": destination,
            "ContactFlowId": s.aws_connect_contact_flow_id,
            "InstanceId": s.aws_connect_instance_id,
            "Attributes": attributes,
            "ClientToken": (options.idempotency_key or uuid.uuid4().hex)[:500],
        }
        source = options.from_number or s.aws_connect_phone_number
        if source:
            kwargs["SourcePhoneNumber"] = _dialable(source, "from_number")
        if s.aws_connect_queue_id:
            kwargs["QueueId"] = s.aws_connect_queue_id
        client = await self.connect_client()
        try:
            response = await asyncio.to_thread(client.start_outbound_voice_contact, **kwargs)
        except Exception as exc:
            raise _provider_error(exc, "Amazon Connect refused the call") from None
        contact_id = str(response["ContactId"])
        log.info(
            "connect contact started", extra={"call_id": contact_id, "to": mask_phone(destination)}
        )
        return OutboundCall(
            call_id=contact_id,
            provider=self.name,
            status="initiated",
            raw={"client_token": kwargs["ClientToken"]},
        )

    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        s = self.settings
        client = await self.connect_client()
        try:
            await asyncio.to_thread(
                client.stop_contact, ContactId=call_id, InstanceId=s.aws_connect_instance_id
            )
        except Exception as exc:
            if _error_code(exc) == "ContactNotFoundException":
                return  # already over
            raise _provider_error(exc, "Amazon Connect could not end the call") from None


def _dialable(number: str, field: str) -> str:
    """Connect does not check numbers itself: a valid international number, in E.164."""
    return parse_e164(number, field, exact=False)


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def _describe(exc: Exception) -> str:
    code = _error_code(exc)
    if code is None:
        return type(exc).__name__
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message") or "")[:200]
    return scrub_text(f"{code}: {message}".rstrip(": "))


def _provider_error(exc: Exception, what: str) -> ProviderError:
    code = _error_code(exc)
    status = 400 if code in _CLIENT_ERRORS else 502
    return ProviderError(f"{what}: {_describe(exc)}", status=status)
