"""Twilio Programmable Voice in webhook mode: signed form webhooks in, TwiML out.

Steps under `/voice/webhook/twilio`: '' (voice webhook: the call starts, the greeting is asked
for), `gather` (a `<Gather>` result: one caller turn), `status` (call status callbacks),
`recording` (recording status callbacks). The turn number and the count of consecutive silent
turns travel in the `<Gather action>` URL, which Twilio signs, so a retried action is the same
turn (the flow answers it idempotently) and no per-call state is needed here.

Signatures are checked in `signatures.py`, the REST API is `twilio_rest.py`, TwiML rendering
`twilio_twiml.py`; the call flow (`callflow.py`) decides everything in between.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import Response
from twilio.twiml.voice_response import VoiceResponse

from realtime_gateway.drivers.base import BaseDriver, DriverDeps
from realtime_gateway.drivers.twilio_events import recording_event, status_event
from realtime_gateway.drivers.twilio_relay import relay_answer, relay_handoff
from realtime_gateway.drivers.twilio_rest import TwilioRest
from realtime_gateway.drivers.twilio_twiml import render_actions
from realtime_gateway.signatures import twilio_signed_params, verify_twilio
from realtime_gateway.speech import SpeechLimits
from realtime_gateway.vocabulary import (
    SYNTHETIC_CALLEE,
    SYNTHETIC_CALLER,
    Acknowledged,
    CallerInput,
    CallEvent,
    CallInfo,
    CallOptions,
    ConfigReport,
    FlowReply,
    Heard,
    OutboundCall,
    ProviderConfigError,
    SessionEnded,
    Started,
    StatusChanged,
    TransferEnded,
    WebhookRequest,
    confidence_of,
    number_or,
)
from shared.errors import ApiError
from shared.logging import mask_phone
from shared.phone import to_e164

if TYPE_CHECKING:
    from twilio.http import HttpClient

log = logging.getLogger(__name__)

TWIML_MEDIA_TYPE = "text/xml"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
OUTBOUND_RING_TIMEOUT_S = 30
# <Dial> outcomes meaning the transferee answered.
_CONNECTED = frozenset({"completed", "answered"})


CAPABILITIES = (
    "voice",
    "sms",
    "recording",
    "transcription",
    "machine_detection",
    "dtmf",
    "transfer",
)
# Status-callback fields kept as the status's details.
_CALL_FIELDS = (
    ("CallerName", "caller_name"),
    ("ParentCallSid", "parent_call_sid"),
    ("AnsweredBy", "answered_by"),
    ("ForwardedFrom", "forwarded_from"),
)


def twiml(response: VoiceResponse, status: int = 200) -> Response:
    return Response(str(response), status_code=status, media_type=TWIML_MEDIA_TYPE)


class TwilioDriver(BaseDriver):
    name = "twilio"
    display_name = "Twilio"
    # One <Say> speaks at most 4,096 characters, 3,000 with an Amazon Polly voice.
    speech_limits = SpeechLimits(say_chars=4096, voice_say_chars=(("Polly.", 3000),))

    def __init__(self, deps: DriverDeps, http_client: HttpClient | None = None) -> None:
        super().__init__(deps)
        self.rest = TwilioRest(deps.settings, http_client)

    # ---- configuration -------------------------------------------------------------------

    def get_capabilities(self) -> list[str]:
        return list(CAPABILITIES)

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        return await self.rest.validate(self.public_base(), check_reachability)

    def configured_webhook_url(self) -> str | None:
        url = self.settings.twilio_webhook_url
        return str(url) if url else None

    def use_http_client(self, http_client: HttpClient) -> None:
        """Route REST calls through `http_client` (tests fake Twilio's API this way)."""
        self.rest.use_http_client(http_client)

    # ---- signatures ----------------------------------------------------------------------

    async def verify_request(self, request: WebhookRequest) -> None:
        token = self.settings.twilio_auth_token
        # `request.url` is the configured public URL (`public_urls.py`): what Twilio signed.
        verify_twilio(token.get_secret_value() if token else None, request, [request.url])

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """Twilio's voice webhook for an inbound call ringing: a form POST to our voice URL,
        `X-Twilio-Signature` computed by the SDK's `RequestValidator` with the auth token."""
        token = self.settings.twilio_auth_token
        base = self.public_base()
        missing = [] if token else ["TWILIO_AUTH_TOKEN"]
        if not base:
            missing.append("PUBLIC_BASE_URL (or TWILIO_WEBHOOK_URL)")
        if token is None or missing:
            raise ProviderConfigError(
                f"cannot sign a Twilio webhook: missing {', '.join(missing)}", missing=missing
            )
        url = self.webhook_url()
        form = {
            "AccountSid": self.settings.twilio_account_sid or "AC" + "0" * 32,
            "ApiVersion": "2010-04-01",
            "CallSid": call_id,
            "CallStatus": "ringing",
            "Called": SYNTHETIC_CALLEE,
            "Caller": SYNTHETIC_CALLER,
            "Direction": "inbound",
            "From": SYNTHETIC_CALLER,
            "To": SYNTHETIC_CALLEE,
        }
        from twilio.request_validator import RequestValidator

        signature = RequestValidator(token.get_secret_value()).compute_signature(url, form)
        return WebhookRequest(
            method="POST",
            url=url,
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-twilio-signature": signature,
            },
            query={},
            body=urlencode(form).encode(),
            form=form,
        )

    # ---- webhooks ------------------------------------------------------------------------

    def parse(self, request: WebhookRequest, step: str) -> CallEvent:
        params = twilio_signed_params(request)
        call_sid = params.get("CallSid", "")
        if not call_sid:
            raise ApiError(400, "bad_request", "CallSid is required")
        call = self._call_info(request, params)
        turn = max(1, number_or(request.query.get("turn"), 1))
        if step in ("", "voice", "answer"):
            return Started(call=call, answered_by=params.get("AnsweredBy") or None)
        if step == "gather":
            speech = (params.get("SpeechResult") or "").strip()
            digits = (params.get("Digits") or "").strip()
            heard = CallerInput(
                turn_id=str(turn),
                type="dtmf" if digits and not speech else "speech",
                text=speech,
                digits=digits or None,
                confidence=confidence_of(params.get("Confidence")),
            )
            silent = max(0, number_or(request.query.get("silent"), 0))
            return Heard(call=call, heard=heard, turn=turn, silent=silent)
        if step == "status":
            return status_event(request, params, call)
        if step == "recording":
            return recording_event(request, params, call)
        if step == "dial":
            outcome = params.get("DialCallStatus", "")
            return TransferEnded(
                call=call, turn=turn, connected=outcome in _CONNECTED, outcome=outcome[:32]
            )
        if step == "relay-action":  # a ConversationRelay session ended (`<Connect action>`)
            status = params.get("SessionStatus", "")
            return SessionEnded(
                call=call,
                handoff=relay_handoff(params.get("HandoffData")),
                failed=status not in ("", "ended", "completed"),
            )
        raise ApiError(404, "not_found", f"unknown Twilio webhook step '{step}'")

    async def render(self, request: WebhookRequest, event: CallEvent, reply: FlowReply) -> Response:
        if isinstance(event, StatusChanged | Acknowledged) or reply.duplicate:
            return twiml(VoiceResponse())
        relay_start = isinstance(event, Started) and self._relay(reply)
        if reply.resume or relay_start:
            return twiml(self._relay_twiml(request, event, reply if relay_start else None))
        params = twilio_signed_params(request)
        return twiml(
            render_actions(
                reply.actions,
                self._gather_url(request, reply.next_turn, reply.silent),
                caller_id=self._dial_caller_id(params),
                dial_url=self.webhook_url("dial", self._query(request, reply.next_turn), request),
            )
        )

    def _relay(self, reply: FlowReply) -> bool:
        """The call talks over ConversationRelay: the agent's voice mode (or the gateway's
        default), for a greeting that listens (not a voicemail, a refusal or a fallback)."""
        mode = reply.voice_mode or self.settings.twilio_voice_mode
        listens = any(a.type == "gather" for a in reply.actions)
        return mode == "relay" and listens and not reply.fallback

    def _relay_twiml(
        self, request: WebhookRequest, event: CallEvent, greeting: FlowReply | None
    ) -> VoiceResponse:
        action_url = self.webhook_url("relay-action", self._query(request, 1), request)
        return relay_answer(self.public_base(request), action_url, event.call, greeting)

    def fallback_response(self, request: WebhookRequest, step: str) -> Response:
        """Valid TwiML when even parsing failed: the same turn is asked again."""
        step = step.strip("/")
        if step in ("status", "recording"):
            return twiml(VoiceResponse())
        turn = max(1, number_or(request.query.get("turn"), 1))
        reply = self.flow.fallback(None, self.speech_limits)
        return twiml(render_actions(reply.actions, self._gather_url(request, turn, 0)))

    def _query(self, request: WebhookRequest, turn: int, silent: int = 0) -> dict[str, str | int]:
        query: dict[str, str | int] = {"turn": turn}
        if silent:
            query["silent"] = silent
        agent = request.query.get("agent_id")
        if agent:
            query["agent_id"] = agent
        return query

    def _gather_url(self, request: WebhookRequest, turn: int, silent: int) -> str:
        return self.webhook_url("gather", self._query(request, turn, silent), request)

    def _call_info(self, request: WebhookRequest, params: Mapping[str, str]) -> CallInfo:
        direction = params.get("Direction", "inbound")
        metadata: dict[str, Any] = {"account_sid": params.get("AccountSid")}
        for name, key in _CALL_FIELDS:
            if params.get(name):
                metadata[key] = params[name]
        return CallInfo(
            call_id=params["CallSid"],
            provider=self.name,
            direction="inbound" if direction == "inbound" else "outbound",
            caller=to_e164(params.get("From")),
            callee=to_e164(params.get("To")),
            agent_id=request.query.get("agent_id") or None,
            metadata={k: v for k, v in metadata.items() if v},
        )

    def _dial_caller_id(self, params: Mapping[str, str]) -> str | None:
        """Inbound: the transferee sees the caller (Twilio's default). Outbound: our number."""
        if params.get("Direction", "inbound") == "inbound":
            return None
        return to_e164(self.settings.twilio_phone_number)

    # ---- REST ----------------------------------------------------------------------------

    async def make_call(self, to: str, options: CallOptions) -> OutboundCall:
        missing = self.rest.missing(self.public_base())
        if missing:
            raise ProviderConfigError(f"Twilio is not configured: missing {', '.join(missing)}")
        from_number = options.from_number or self.settings.twilio_phone_number
        # the agent is carried in the (signed) URLs, so the call knows it from the first callback
        agent = {"agent_id": options.agent_id} if options.agent_id else None
        voice_url = self.webhook_url("", agent)
        status_url = self.webhook_url("status", agent)
        kwargs: dict[str, Any] = {
            "to": to,
            "from_": from_number,
            "url": voice_url,
            "method": "POST",
            "status_callback": status_url,
            "status_callback_method": "POST",
            "status_callback_event": STATUS_EVENTS,
            "timeout": OUTBOUND_RING_TIMEOUT_S,
        }
        if options.recording:
            kwargs["record"] = True
            kwargs["recording_status_callback"] = self.webhook_url("recording")
            kwargs["recording_status_callback_method"] = "POST"
            kwargs["recording_status_callback_event"] = ["completed"]
        if options.machine_detection:
            # DetectMessageEnd: Twilio answers our voice webhook after the greeting's beep,
            # so the agent's message is recorded whole.
            kwargs["machine_detection"] = "DetectMessageEnd"
        call = await self.rest.create_call(**kwargs)
        log.info("twilio call created", extra={"call_id": call.sid, "to": mask_phone(to)})
        return OutboundCall(
            call_id=str(call.sid),
            provider=self.name,
            status=str(call.status or "queued"),
            raw={"direction": call.direction, "from": from_number},
        )

    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        await self.rest.end_call(call_id)
