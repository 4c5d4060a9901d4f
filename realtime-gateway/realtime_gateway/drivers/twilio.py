"""Twilio Programmable Voice in webhook mode: signed form webhooks in, TwiML out.

Steps under `/voice/webhook/twilio`: '' (voice webhook: the call starts, the greeting is asked
for), `gather` (a `<Gather>` result: one caller turn), `status` (call status callbacks),
`recording` (recording status callbacks). The turn number and the count of consecutive silent
turns travel in the `<Gather action>` URL, which Twilio signs, so a retried action is the same
turn (the flow answers it idempotently) and no per-call state is needed here.

The REST client (`twilio.rest`) is synchronous: every call to it runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.responses import Response
from twilio.twiml.voice_response import VoiceResponse

from realtime_gateway.drivers.base import BaseDriver, DriverDeps
from realtime_gateway.drivers.twilio_twiml import render_actions
from realtime_gateway.idempotency import delivery_key
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
    ProviderError,
    Started,
    StatusChanged,
    TransferEnded,
    WebhookRequest,
    confidence_of,
    number_or,
    seconds_of,
    unset_variables,
)
from shared.contract import CALL_STATUSES
from shared.errors import ApiError
from shared.logging import mask_phone, scrub_text
from shared.phone import to_e164

if TYPE_CHECKING:
    from twilio.http import HttpClient
    from twilio.rest import Client

log = logging.getLogger(__name__)
# The SDK logs every REST request line by line at INFO: keep that out of normal logs.
_rest_log = logging.getLogger(f"{__name__}.rest")
_rest_log.setLevel(logging.WARNING)

TWIML_MEDIA_TYPE = "text/xml"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
OUTBOUND_RING_TIMEOUT_S = 30
REST_TIMEOUT_S = 10.0
# Twilio error codes meaning "this call is not in progress any more".
_ALREADY_ENDED_CODES = frozenset({20404, 21220})
# <Dial> outcomes meaning the transferee answered.
_CONNECTED = frozenset({"completed", "answered"})


def twiml(response: VoiceResponse, status: int = 200) -> Response:
    return Response(str(response), status_code=status, media_type=TWIML_MEDIA_TYPE)


class TwilioDriver(BaseDriver):
    name = "twilio"
    display_name = "Twilio"
    # One <Say> speaks at most 4,096 characters, 3,000 with an Amazon Polly voice.
    speech_limits = SpeechLimits(say_chars=4096, voice_say_chars=(("Polly.", 3000),))

    def __init__(self, deps: DriverDeps, http_client: HttpClient | None = None) -> None:
        super().__init__(deps)
        self._http_client = http_client
        self._client: Client | None = None

    # ---- configuration -------------------------------------------------------------------

    def get_capabilities(self) -> list[str]:
        return [
            "voice",
            "sms",
            "recording",
            "transcription",
            "machine_detection",
            "dtmf",
            "transfer",
        ]

    def _missing(self) -> list[str]:
        s = self.settings
        missing = unset_variables(
            [
                ("TWILIO_ACCOUNT_SID", s.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", s.twilio_auth_token),
                ("TWILIO_PHONE_NUMBER", s.twilio_phone_number),
            ]
        )
        if not self.public_base():
            missing.append("PUBLIC_BASE_URL (or TWILIO_WEBHOOK_URL)")
        return missing

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        missing = self._missing()
        problems: list[str] = []
        sid = self.settings.twilio_account_sid
        if sid and not sid.startswith("AC"):
            problems.append("TWILIO_ACCOUNT_SID must start with 'AC'")
        number = self.settings.twilio_phone_number
        if number and not to_e164(number):
            problems.append("TWILIO_PHONE_NUMBER must be E.164, e.g. +15551234567")
        report = ConfigReport(ok=not missing and not problems, missing=missing, problems=problems)
        if check_reachability and not missing:
            try:
                client = await asyncio.to_thread(self.rest_client)  # first use imports twilio.rest
                await asyncio.to_thread(client.api.v2010.accounts(sid).fetch)
                report.reachable = True
            except Exception as exc:  # any failure means "not reachable", with the reason
                report.reachable = False
                report.ok = False
                report.problems.append(f"Twilio API not reachable: {_describe(exc)}")
        return report

    def configured_webhook_url(self) -> str | None:
        url = self.settings.twilio_webhook_url
        return str(url) if url else None

    def rest_client(self) -> Client:
        if self._client is None:
            s = self.settings
            if not s.twilio_account_sid or not s.twilio_auth_token:
                raise ProviderConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are required")
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            http_client = self._http_client or TwilioHttpClient(
                timeout=REST_TIMEOUT_S, logger=_rest_log
            )
            self._client = Client(
                s.twilio_account_sid,
                s.twilio_auth_token.get_secret_value(),
                http_client=http_client,
                region=s.twilio_region or None,  # e.g. "ie1": data stays in that region
                edge=s.twilio_edge or None,  # e.g. "dublin": the nearest point of presence
            )
        return self._client

    def use_http_client(self, http_client: HttpClient) -> None:
        """Route REST calls through `http_client` (tests fake Twilio's API this way)."""
        self._http_client = http_client
        self._client = None

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
            return self._status_event(request, params, call)
        if step == "recording":
            return self._recording_event(request, params, call)
        if step == "dial":
            outcome = params.get("DialCallStatus", "")
            return TransferEnded(
                call=call, turn=turn, connected=outcome in _CONNECTED, outcome=outcome[:32]
            )
        raise ApiError(404, "not_found", f"unknown Twilio webhook step '{step}'")

    def _status_event(
        self, request: WebhookRequest, params: Mapping[str, str], call: CallInfo
    ) -> CallEvent:
        status = params.get("CallStatus", "")
        if status not in CALL_STATUSES:
            log.warning("unknown Twilio CallStatus ignored", extra={"status": status[:32]})
            return Acknowledged(call=call, note="unknown status")
        extra: dict[str, Any] = {"provider_status": status}
        duration = params.get("CallDuration")
        if duration and duration.isdigit():
            extra["duration_s"] = float(duration)
        for name, key in (
            ("AnsweredBy", "answered_by"),
            ("SequenceNumber", "sequence"),
            ("SipResponseCode", "sip_response_code"),
            ("RecordingUrl", "recording_url"),
            ("RecordingSid", "recording_sid"),
        ):
            if params.get(name):
                extra[key] = params[name]
        # Twilio redelivers callbacks: dedupe on its idempotency token and on
        # (CallSid, CallStatus, SequenceNumber).
        sequence = params.get("SequenceNumber") or params.get("Timestamp") or ""
        dedupe = (*self._token(request), delivery_key(self.name, call.call_id, status, sequence))
        return StatusChanged(call=call, status=status, extra=extra, dedupe=dedupe)

    def _recording_event(
        self, request: WebhookRequest, params: Mapping[str, str], call: CallInfo
    ) -> CallEvent:
        recording_status = params.get("RecordingStatus", "")
        recording_sid = params.get("RecordingSid", "")
        recording = {
            "sid": recording_sid,
            "status": recording_status,
            "url": params.get("RecordingUrl"),
            "duration_s": seconds_of(params.get("RecordingDuration")),
            "channels": params.get("RecordingChannels"),
            "source": params.get("RecordingSource"),
        }
        key = delivery_key(self.name, call.call_id, "recording", recording_sid, recording_status)
        # "in-progress": a recording exists only once the call was answered, and a status
        # that is not terminal can never end the call early (a later "completed" does).
        return StatusChanged(
            call=call,
            status="in-progress",
            extra={"recording": {k: v for k, v in recording.items() if v is not None}},
            dedupe=(*self._token(request), key),
        )

    def _token(self, request: WebhookRequest) -> tuple[str, ...]:
        token = request.header("I-Twilio-Idempotency-Token")
        return (delivery_key(self.name, "token", token),) if token else ()

    async def render(self, request: WebhookRequest, event: CallEvent, reply: FlowReply) -> Response:
        if isinstance(event, StatusChanged | Acknowledged) or reply.duplicate:
            return twiml(VoiceResponse())
        params = twilio_signed_params(request)
        return twiml(
            render_actions(
                reply.actions,
                self._gather_url(request, reply.next_turn, reply.silent),
                caller_id=self._dial_caller_id(params),
                dial_url=self.webhook_url("dial", self._query(request, reply.next_turn), request),
            )
        )

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
        for name, key in (
            ("CallerName", "caller_name"),
            ("ParentCallSid", "parent_call_sid"),
            ("AnsweredBy", "answered_by"),
            ("ForwardedFrom", "forwarded_from"),
        ):
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
        missing = self._missing()
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
        client = await asyncio.to_thread(self.rest_client)  # first use imports twilio.rest
        try:
            call = await asyncio.to_thread(client.calls.create, **kwargs)
        except Exception as exc:
            raise _provider_error(exc, "Twilio refused the call") from None
        log.info("twilio call created", extra={"call_id": call.sid, "to": mask_phone(to)})
        return OutboundCall(
            call_id=str(call.sid),
            provider=self.name,
            status=str(call.status or "queued"),
            raw={"direction": call.direction, "from": from_number},
        )

    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        client = await asyncio.to_thread(self.rest_client)  # first use imports twilio.rest
        try:
            await asyncio.to_thread(client.calls(call_id).update, status="completed")
        except Exception as exc:
            if _already_ended(exc):
                return
            raise _provider_error(exc, "Twilio could not end the call") from None


def _already_ended(exc: Exception) -> bool:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        return exc.status == 404 or exc.code in _ALREADY_ENDED_CODES
    return False


def _describe(exc: Exception) -> str:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        return scrub_text(f"HTTP {exc.status}, code {exc.code}: {exc.msg}")
    return type(exc).__name__


def _provider_error(exc: Exception, what: str) -> ProviderError:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        status = 400 if 400 <= exc.status < 500 and exc.status not in (401, 403, 429) else 502
        return ProviderError(f"{what}: {_describe(exc)}", status=status)
    log.warning("twilio request failed", extra={"error": type(exc).__name__})
    return ProviderError(f"{what}: {type(exc).__name__}", status=502)
