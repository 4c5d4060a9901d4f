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
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from starlette.responses import Response
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.voice_response import VoiceResponse

from realtime_gateway.drivers.base import (
    SYNTHETIC_CALLEE,
    SYNTHETIC_CALLER,
    TERMINAL_STATUSES,
    BaseDriver,
    CallerInput,
    CallInfo,
    CallOptions,
    ConfigReport,
    DriverDeps,
    FlowReply,
    OutboundCall,
    ProviderConfigError,
    ProviderError,
    SignatureError,
    WebhookRequest,
    origin_of,
    unset_variables,
)
from realtime_gateway.drivers.twilio_twiml import (
    render_actions,
    render_goodbye,
    render_prompt_and_listen,
    render_voicemail,
)
from shared.errors import error_response
from shared.logging import mask_phone, scrub_text

if TYPE_CHECKING:
    from twilio.http import HttpClient
    from twilio.rest import Client

log = logging.getLogger(__name__)
# The SDK logs every REST request line by line at INFO: keep that out of normal logs.
_rest_log = logging.getLogger(f"{__name__}.rest")
_rest_log.setLevel(logging.WARNING)

TWIML_MEDIA_TYPE = "text/xml"
# After this many silent turns in a row the agent says goodbye and hangs up.
MAX_SILENT_TURNS = 2
REPROMPT_TEXT = "Sorry, I didn't catch that. Could you say it again?"
GOODBYE_TEXT = "I can't hear you, so I'll hang up now. Please call again any time. Goodbye."
APOLOGY_TEXT = "Sorry, we're having trouble right now. Please call again later. Goodbye."
TURN_APOLOGY_TEXT = "Sorry, one moment please. Could you say that again?"
TRANSFER_FAILED_TEXT = (
    "I'm sorry, I couldn't connect you right now. Is there anything else I can help with?"
)
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
OUTBOUND_RING_TIMEOUT_S = 30
REST_TIMEOUT_S = 10.0
# Twilio error codes meaning "this call is not in progress any more".
_ALREADY_ENDED_CODES = frozenset({20404, 21220})
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CALL_STATUSES = frozenset(
    {
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "failed",
        "no-answer",
        "canceled",
    }
)


def twiml(response: VoiceResponse, status: int = 200) -> Response:
    return Response(str(response), status_code=status, media_type=TWIML_MEDIA_TYPE)


def e164_or_none(value: str | None) -> str | None:
    """Twilio sends E.164 for phones, but `client:alice`, `sip:…` or `anonymous` otherwise."""
    if value and _E164.match(value.strip()):
        return value.strip()
    return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    if number is None:
        return None
    return min(1.0, max(0.0, number))


class TwilioDriver(BaseDriver):
    name = "twilio"
    display_name = "Twilio"

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
        if number and not e164_or_none(number):
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
            )
        return self._client

    def use_http_client(self, http_client: HttpClient) -> None:
        """Route REST calls through `http_client` (tests fake Twilio's API this way)."""
        self._http_client = http_client
        self._client = None

    # ---- signatures ----------------------------------------------------------------------

    async def verify_request(self, request: WebhookRequest) -> None:
        token = self.settings.twilio_auth_token
        signature = request.header("X-Twilio-Signature")
        if token is None:
            raise SignatureError("TWILIO_AUTH_TOKEN is not configured", status=403)
        if not signature:
            raise SignatureError("missing X-Twilio-Signature", status=403)
        algorithm = get_signature_algorithm(request.header("X-Twilio-Webhooks-Signature-Settings"))
        validator = RequestValidator(token.get_secret_value())
        params: Mapping[str, str] | str
        if "bodySHA256" in request.query:
            params = request.body.decode("utf-8", errors="replace")
        elif request.method.upper() == "POST":
            params = dict(request.form)
        else:
            params = {}  # GET webhooks: every parameter is in the signed URL
        if not any(
            validator.validate(url, params, signature, algorithm)
            for url in self._signed_url_candidates(request)
        ):
            raise SignatureError("invalid X-Twilio-Signature", status=403)

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

    def _signed_url_candidates(self, request: WebhookRequest) -> list[str]:
        """The URL Twilio signed: the public URL the gateway rebuilt and, when only
        `TWILIO_WEBHOOK_URL` says where Twilio reaches us (no `PUBLIC_BASE_URL`), the same path
        and query on that origin (e.g. a tunnel in front of a local gateway)."""
        candidates = [request.url]
        configured = self.settings.twilio_webhook_url
        if configured and not self.settings.public_base_url:
            parts = urlsplit(request.url)
            origin = origin_of(str(configured))
            rebuilt = f"{origin}{parts.path}" + (f"?{parts.query}" if parts.query else "")
            if rebuilt != request.url:
                candidates.append(rebuilt)
        return candidates

    # ---- webhooks ------------------------------------------------------------------------

    async def handle_webhook(self, request: WebhookRequest, step: str) -> Response:
        params = self._params(request)
        step = step.strip("/")
        call_sid = params.get("CallSid", "")
        if not call_sid:
            return error_response(400, "bad_request", "CallSid is required")
        try:
            if step in ("", "voice", "answer"):
                return await self._on_voice(request, params, call_sid)
            if step == "gather":
                return await self._on_gather(request, params, call_sid)
            if step == "status":
                return await self._on_status(request, params, call_sid)
            if step == "recording":
                return await self._on_recording(request, params, call_sid)
            if step == "dial":
                return self._on_dial_end(request, params)
        except Exception:
            log.exception("twilio webhook failed", extra={"step": step, "call_id": call_sid})
            return self.fallback_response(request, step)
        return error_response(404, "not_found", f"unknown Twilio webhook step '{step}'")

    def fallback_response(self, request: WebhookRequest, step: str) -> Response:
        """Valid TwiML when handling failed: the same turn is asked again (a Gather), a
        callback is acknowledged, a call that cannot start is told so and hung up."""
        step = step.strip("/")
        if step == "gather":
            turn = max(1, _int(request.query.get("turn"), 1))
            return twiml(
                render_prompt_and_listen(
                    TURN_APOLOGY_TEXT,
                    self._gather_url(request, turn, 0, self._params(request)),
                )
            )
        if step in ("status", "recording"):
            return twiml(VoiceResponse())
        return twiml(render_goodbye(APOLOGY_TEXT))

    @staticmethod
    def _params(request: WebhookRequest) -> dict[str, str]:
        params = dict(request.query)
        params.pop("bodySHA256", None)
        params.update(request.form)
        return params

    def _gather_url(
        self, request: WebhookRequest, turn: int, silent: int, params: Mapping[str, str]
    ) -> str:
        query: dict[str, str | int] = {"turn": turn}
        if silent:
            query["silent"] = silent
        agent = request.query.get("agent_id")
        if agent:
            query["agent_id"] = agent
        return self.webhook_url("gather", query, request)

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
            caller=e164_or_none(params.get("From")),
            callee=e164_or_none(params.get("To")),
            agent_id=request.query.get("agent_id") or None,
            metadata={k: v for k, v in metadata.items() if v},
        )

    async def _on_voice(
        self, request: WebhookRequest, params: Mapping[str, str], call_sid: str
    ) -> Response:
        call = self._call_info(request, params)
        reply = await self.flow.start(call)
        answered_by = params.get("AnsweredBy", "")
        if answered_by.startswith("machine") or answered_by == "fax":
            # An answering machine: leave the agent's message, then hang up.
            log.info("machine answered; leaving a message", extra={"answered_by": answered_by})
            return twiml(render_voicemail(reply.actions))
        return twiml(self._render(request, reply, next_turn=1, params=params))

    def _render(
        self, request: WebhookRequest, reply: FlowReply, next_turn: int, params: Mapping[str, str]
    ) -> VoiceResponse:
        return render_actions(
            reply.actions,
            self._gather_url(request, next_turn, 0, params),
            caller_id=self._dial_caller_id(params),
            dial_url=self.webhook_url("dial", {"turn": next_turn}, request),
        )

    def _on_dial_end(self, request: WebhookRequest, params: Mapping[str, str]) -> Response:
        """A transfer ended. Connected: the call is over, hang up. Not connected (busy, no
        answer, failed): the agent takes the caller back and listens again."""
        outcome = params.get("DialCallStatus", "")
        if outcome in ("completed", "answered"):
            response = VoiceResponse()
            response.hangup()
            return twiml(response)
        log.info("transfer not connected", extra={"dial_status": outcome[:32]})
        turn = max(1, _int(request.query.get("turn"), 1))
        return twiml(
            render_prompt_and_listen(
                TRANSFER_FAILED_TEXT, self._gather_url(request, turn, 0, params)
            )
        )

    def _dial_caller_id(self, params: Mapping[str, str]) -> str | None:
        """Inbound: the transferee sees the caller (Twilio's default). Outbound: our number."""
        if params.get("Direction", "inbound") == "inbound":
            return None
        return e164_or_none(self.settings.twilio_phone_number)

    async def _on_gather(
        self, request: WebhookRequest, params: Mapping[str, str], call_sid: str
    ) -> Response:
        turn = max(1, _int(request.query.get("turn"), 1))
        silent = max(0, _int(request.query.get("silent"), 0))
        speech = (params.get("SpeechResult") or "").strip()
        digits = (params.get("Digits") or "").strip()
        if not speech and not digits:
            silent += 1
            if silent >= MAX_SILENT_TURNS:
                log.info("caller silent; hanging up", extra={"silent_turns": silent})
                return twiml(render_goodbye(GOODBYE_TEXT))
            return twiml(
                render_prompt_and_listen(
                    REPROMPT_TEXT, self._gather_url(request, turn, silent, params)
                )
            )
        heard = CallerInput(
            turn_id=str(turn),
            type="dtmf" if digits and not speech else "speech",
            text=speech,
            digits=digits or None,
            confidence=_float(params.get("Confidence")),
        )
        # A turn for a call this instance does not know (restart without Redis) is tracked.
        await self.flow.ensure_call(self._call_info(request, params))
        reply = await self.flow.turn(call_sid, heard)
        return twiml(self._render(request, reply, next_turn=turn + 1, params=params))

    async def _on_status(
        self, request: WebhookRequest, params: Mapping[str, str], call_sid: str
    ) -> Response:
        status = params.get("CallStatus", "")
        if status not in _CALL_STATUSES:
            log.warning("unknown Twilio CallStatus ignored", extra={"status": status[:32]})
            return twiml(VoiceResponse())
        if not await self._first_delivery(request, call_sid, status, params):
            return twiml(VoiceResponse())
        if status not in TERMINAL_STATUSES:
            # An outbound call is known from its first callback ("initiated"), so one that is
            # never answered (busy, no-answer) still ends with `call.ended`.
            await self.flow.ensure_call(self._call_info(request, params))
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
        await self.flow.status(call_sid, status, extra)
        return twiml(VoiceResponse())

    async def _first_delivery(
        self,
        request: WebhookRequest,
        call_sid: str,
        status: str,
        params: Mapping[str, str],
    ) -> bool:
        """Twilio redelivers callbacks: dedupe on its idempotency token and on
        (CallSid, CallStatus, SequenceNumber)."""
        token = request.header("I-Twilio-Idempotency-Token")
        if token and not await self.flow.first_time(f"twilio:idem:{token}"):
            return False
        sequence = params.get("SequenceNumber") or params.get("Timestamp") or ""
        return await self.flow.first_time(f"twilio:status:{call_sid}:{status}:{sequence}")

    async def _on_recording(
        self, request: WebhookRequest, params: Mapping[str, str], call_sid: str
    ) -> Response:
        recording_status = params.get("RecordingStatus", "")
        recording_sid = params.get("RecordingSid", "")
        token = request.header("I-Twilio-Idempotency-Token")
        if token and not await self.flow.first_time(f"twilio:idem:{token}"):
            return twiml(VoiceResponse())
        if not await self.flow.first_time(
            f"twilio:recording:{call_sid}:{recording_sid}:{recording_status}"
        ):
            return twiml(VoiceResponse())
        recording = {
            "sid": recording_sid,
            "status": recording_status,
            "url": params.get("RecordingUrl"),
            "duration_s": _float_or_none(params.get("RecordingDuration")),
            "channels": params.get("RecordingChannels"),
            "source": params.get("RecordingSource"),
        }
        # "in-progress": a recording exists only once the call was answered, and a status
        # that is not terminal can never end the call early (a later "completed" does).
        await self.flow.status(
            call_sid,
            "in-progress",
            {"recording": {k: v for k, v in recording.items() if v is not None}},
        )
        return twiml(VoiceResponse())

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

    async def end_call(self, call_id: str) -> None:
        client = await asyncio.to_thread(self.rest_client)  # first use imports twilio.rest
        try:
            await asyncio.to_thread(client.calls(call_id).update, status="completed")
        except Exception as exc:
            if _already_ended(exc):
                return
            raise _provider_error(exc, "Twilio could not end the call") from None


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


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
