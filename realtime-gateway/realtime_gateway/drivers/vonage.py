"""Vonage Voice API: signed answer/event webhooks in, NCCO out.

Steps under `/voice/webhook/vonage`: '' or `answer` (the answer webhook, GET query or POST
JSON: the call starts), `input` (the result of an NCCO `input`: one caller turn), `status` or
`event` (call events, mapped to our statuses), `recording` (a `record` action finished),
`transfer` (a transferred leg's events: an unanswered transfer returns to the agent).
As with Twilio, the turn number and the count of silent turns travel in the `eventUrl`, so a
redelivered input result is the same turn.

Signatures: Vonage signs every webhook with an HS256 JWT (`Authorization: Bearer …`, the
account's signature secret). The JWT proves who sent it; its `payload_hash` claim is compared
here with sha256 of what was sent (the raw body for POST; for GET, the query parameters as
compact JSON in their order, as Vonage documents it, or the empty body), which the SDK does
not do. A token older than `MAX_TOKEN_AGE_S` is refused, so a captured request cannot be
replayed later; a replay within that window is answered idempotently (same turn, deduplicated
status).

The SDK (`vonage`) is synchronous and uses `requests`: it runs in threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid as uuidlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from starlette.responses import JSONResponse, Response

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
    unset_variables,
)
from realtime_gateway.drivers.vonage_ncco import (
    RenderedNcco,
    digits_only,
    record_action,
    render_actions,
    render_goodbye,
)
from shared.contract import Action
from shared.errors import error_response
from shared.logging import mask_phone, scrub_text

if TYPE_CHECKING:
    from vonage_voice import Voice

log = logging.getLogger(__name__)

MAX_SILENT_TURNS = 2
MAX_TOKEN_AGE_S = 300
CLOCK_SKEW_S = 30
REPROMPT_TEXT = "Sorry, I didn't catch that. Could you say it again?"
GOODBYE_TEXT = "I can't hear you, so I'll hang up now. Please call again any time. Goodbye."
APOLOGY_TEXT = "Sorry, we're having trouble right now. Please call again later. Goodbye."
TURN_APOLOGY_TEXT = "Sorry, one moment please. Could you say that again?"
TRANSFER_FAILED_TEXT = (
    "I'm sorry, I couldn't connect you right now. Is there anything else I can help with?"
)
TRANSFER_FAILED_STATUSES = frozenset(
    {"busy", "cancelled", "failed", "rejected", "timeout", "unanswered"}
)
REST_TIMEOUT_S = 10
# Vonage's text-to-speech says roughly 14 characters a second; the API hang-up waits for the
# goodbye to be heard (the NCCO ending hangs up too: this makes the end provable).
TTS_CHARS_PER_S = 14.0
HANGUP_GRACE_S = 1.5
# Vonage event statuses -> ours (None: informational, no status change).
STATUS_MAP: dict[str, str | None] = {
    "started": "initiated",
    "ringing": "ringing",
    "answered": "in-progress",
    "completed": "completed",
    "busy": "busy",
    "cancelled": "canceled",
    "failed": "failed",
    "rejected": "failed",
    "timeout": "no-answer",
    "unanswered": "no-answer",
    "machine": None,
    "human": None,
    "disconnected": None,
}


def e164(number: Any) -> str | None:
    """Vonage sends `14155550100`; we keep `+14155550100`. Non-numbers (SIP users,
    'Unknown') -> None."""
    if not isinstance(number, str | int):
        return None
    text = str(number).strip()
    digits = text.lstrip("+")
    if digits.isdigit() and 7 <= len(digits) <= 15 and not digits.startswith("0"):
        return f"+{digits}"
    return None


def ncco_response(ncco: list[dict[str, Any]]) -> Response:
    return JSONResponse(ncco)


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _confidence(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return min(1.0, max(0.0, number))


def query_payload_hash(url: str) -> str:
    """Vonage's payload hash of a GET webhook: its query as compact JSON, in order."""
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    text = json.dumps(dict(pairs), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class VonageDriver(BaseDriver):
    name = "vonage"
    display_name = "Vonage"

    def __init__(self, deps: DriverDeps) -> None:
        super().__init__(deps)
        self._voice: Voice | None = None
        self._hangups: dict[str, asyncio.Task[None]] = {}
        self.tts_chars_per_s = TTS_CHARS_PER_S
        self.hangup_grace_s = HANGUP_GRACE_S

    async def aclose(self) -> None:
        tasks = list(self._hangups.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._hangups.clear()

    # ---- configuration -------------------------------------------------------------------

    def get_capabilities(self) -> list[str]:
        return ["voice", "recording", "machine_detection", "dtmf", "transfer", "streaming"]

    def _missing(self) -> list[str]:
        s = self.settings
        missing = unset_variables(
            [
                ("VONAGE_APPLICATION_ID", s.vonage_application_id),
                ("VONAGE_PRIVATE_KEY", s.vonage_private_key),
                ("VONAGE_PHONE_NUMBER", s.vonage_phone_number),
                ("VONAGE_SIGNATURE_SECRET", s.vonage_signature_secret),
            ]
        )
        if not self.public_base():
            missing.append("PUBLIC_BASE_URL (or VONAGE_WEBHOOK_URL)")
        return missing

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        missing = self._missing()
        problems: list[str] = []
        number = self.settings.vonage_phone_number
        if number and not e164(number):
            problems.append("VONAGE_PHONE_NUMBER must be a phone number, e.g. +14155550100")
        key = self.settings.vonage_private_key
        if key and not _private_key_text(key.get_secret_value()).startswith("-----BEGIN"):
            problems.append("VONAGE_PRIVATE_KEY must be a PEM private key or a path to one")
        report = ConfigReport(ok=not missing and not problems, missing=missing, problems=problems)
        if check_reachability and report.ok:
            try:
                from vonage_voice.models.requests import ListCallsFilter

                voice = await asyncio.to_thread(self.voice_client)
                await asyncio.to_thread(voice.list_calls, ListCallsFilter(page_size=1))
                report.reachable = True
            except Exception as exc:  # any failure means "not reachable", with the reason
                report.reachable = False
                report.ok = False
                report.problems.append(f"Vonage API not reachable: {_describe(exc)}")
        return report

    def configured_webhook_url(self) -> str | None:
        url = self.settings.vonage_webhook_url
        return str(url) if url else None

    def voice_client(self) -> Voice:
        """The SDK's Voice API client (built once; reads the key file, so call it off-loop)."""
        if self._voice is None:
            s = self.settings
            if not s.vonage_application_id or not s.vonage_private_key:
                raise ProviderConfigError(
                    "VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY are required"
                )
            from vonage import Auth, HttpClientOptions, Vonage

            auth = Auth(
                application_id=s.vonage_application_id,
                private_key=_private_key_text(s.vonage_private_key.get_secret_value()),
            )
            client = Vonage(auth, HttpClientOptions(timeout=REST_TIMEOUT_S, max_retries=1))
            self._voice = client.voice
        return self._voice

    # ---- signatures ----------------------------------------------------------------------

    async def verify_request(self, request: WebhookRequest) -> None:
        secret = self.settings.vonage_signature_secret
        if secret is None:
            raise SignatureError("VONAGE_SIGNATURE_SECRET is not configured", status=403)
        header = request.header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SignatureError("missing Vonage signature (Authorization: Bearer JWT)", 401)
        try:
            claims = jwt.decode(
                token.strip(),
                secret.get_secret_value(),
                algorithms=["HS256"],
                options={"require": ["iat"]},
                leeway=CLOCK_SKEW_S,
            )
        except jwt.PyJWTError as exc:
            raise SignatureError(f"invalid Vonage signature: {type(exc).__name__}") from None
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or time.time() - float(iat) > MAX_TOKEN_AGE_S:
            raise SignatureError("stale Vonage signature (iat too old)")
        api_key = self.settings.vonage_api_key
        if api_key and claims.get("api_key") not in (None, api_key):
            raise SignatureError("Vonage signature is for another account")
        claimed = claims.get("payload_hash")
        if not isinstance(claimed, str):
            raise SignatureError("Vonage signature has no payload_hash")
        if not any(hmac.compare_digest(claimed, h) for h in self._payload_hashes(request)):
            raise SignatureError("payload does not match the Vonage signature")

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """Vonage's answer webhook for an inbound call (a GET, Vonage's default) signed as
        Vonage signs it: an HS256 JWT with the signature secret whose `payload_hash` is the
        sha256 of the query parameters as compact JSON."""
        secret = self.settings.vonage_signature_secret
        base = self.public_base()
        missing = [] if secret else ["VONAGE_SIGNATURE_SECRET"]
        if not base:
            missing.append("PUBLIC_BASE_URL (or VONAGE_WEBHOOK_URL)")
        if secret is None or missing:
            raise ProviderConfigError(
                f"cannot sign a Vonage webhook: missing {', '.join(missing)}", missing=missing
            )
        params = {
            "to": SYNTHETIC_CALLEE.lstrip("+"),
            "from": SYNTHETIC_CALLER.lstrip("+"),
            "uuid": call_id,
            "conversation_uuid": f"CON-{uuidlib.uuid4()}",
        }
        url = self.webhook_url("", params)
        claims: dict[str, Any] = {
            "iat": int(time.time()),
            "jti": str(uuidlib.uuid4()),
            "iss": "Vonage",
            "payload_hash": query_payload_hash(url),
        }
        if self.settings.vonage_api_key:
            claims["api_key"] = self.settings.vonage_api_key
        if self.settings.vonage_application_id:
            claims["application_id"] = self.settings.vonage_application_id
        token = jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
        return WebhookRequest(
            method="GET",
            url=url,
            headers={"authorization": f"Bearer {token}"},
            query=params,
            body=b"",
        )

    @staticmethod
    def _payload_hashes(request: WebhookRequest) -> list[str]:
        if request.method.upper() == "GET":
            # Vonage documents the hash of a GET as its query parameters as compact JSON; a
            # GET has no body, so the hash of an empty body is accepted too (the JWT still
            # proves Vonage sent it, within MAX_TOKEN_AGE_S).
            return [query_payload_hash(request.url), hashlib.sha256(b"").hexdigest()]
        return [hashlib.sha256(request.body).hexdigest()]

    # ---- webhooks ------------------------------------------------------------------------

    async def handle_webhook(self, request: WebhookRequest, step: str) -> Response:
        step = step.strip("/")
        try:
            payload = self._payload(request)
        except ValueError as exc:
            return error_response(400, "bad_request", str(exc))
        if step == "transfer":  # the transferred leg's events: its uuid is not the call's
            return await self._on_transfer_event(request, payload)
        uuid = str(payload.get("uuid") or request.query.get("uuid") or "")
        if not uuid and step not in ("recording",):
            return error_response(400, "bad_request", "uuid is required")
        try:
            if step in ("", "answer"):
                return await self._on_answer(request, payload, uuid)
            if step == "input":
                return await self._on_input(request, payload, uuid)
            if step in ("status", "event"):
                return await self._on_event(request, payload, uuid)
            if step == "recording":
                return await self._on_recording(request, payload)
        except Exception:
            log.exception("vonage webhook failed", extra={"step": step, "call_id": uuid})
            return self.fallback_response(request, step)
        return error_response(404, "not_found", f"unknown Vonage webhook step '{step}'")

    def fallback_response(self, request: WebhookRequest, step: str) -> Response:
        """A valid NCCO when handling failed: the same turn is asked again, an event is
        acknowledged, a call that cannot start is told so (and the NCCO ends it)."""
        step = step.strip("/")
        if step == "input":
            turn = max(1, _int(request.query.get("turn"), 1))
            rendered = render_actions(
                [Action.say(TURN_APOLOGY_TEXT), Action.gather()],
                self._input_url(request, turn, 0),
                self.settings.vonage_phone_number,
            )
            return ncco_response(rendered.ncco)
        if step in ("status", "event", "recording"):
            return Response(status_code=204)
        return ncco_response(render_goodbye(APOLOGY_TEXT).ncco)

    @staticmethod
    def _payload(request: WebhookRequest) -> dict[str, Any]:
        payload: dict[str, Any] = dict(request.query)
        if request.method.upper() != "GET" and request.body.strip():
            try:
                body = json.loads(request.body)
            except ValueError:
                raise ValueError("body must be JSON") from None
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            payload.update(body)
        return payload

    def _input_url(self, request: WebhookRequest, turn: int, silent: int) -> str:
        query: dict[str, str | int] = {"turn": turn}
        if silent:
            query["silent"] = silent
        for key in ("direction", "agent_id"):  # carried along for a call we must re-track
            if request.query.get(key):
                query[key] = request.query[key]
        return self.webhook_url("input", query, request)

    def _render(self, request: WebhookRequest, uuid: str, reply: FlowReply, turn: int) -> Response:
        return self._respond(uuid, self._rendered(request, reply, turn))

    def _rendered(self, request: WebhookRequest, reply: FlowReply, turn: int) -> RenderedNcco:
        return render_actions(
            reply.actions,
            self._input_url(request, turn, 0),
            self.settings.vonage_phone_number,
            transfer_url=self.webhook_url("transfer", {"turn": turn}, request),
        )

    async def _on_transfer_event(
        self, request: WebhookRequest, payload: Mapping[str, Any]
    ) -> Response:
        """Events of a transferred leg. Not connected (busy, no answer, failed): the caller
        hears an apology and the agent listens again; otherwise acknowledged."""
        status = str(payload.get("status") or "")
        if status not in TRANSFER_FAILED_STATUSES:
            return Response(status_code=204)
        log.info("transfer not connected", extra={"transfer_status": status[:32]})
        turn = max(1, _int(request.query.get("turn"), 1))
        rendered = render_actions(
            [Action.say(TRANSFER_FAILED_TEXT), Action.gather()],
            self._input_url(request, turn, 0),
            self.settings.vonage_phone_number,
        )
        return ncco_response(rendered.ncco)

    def _respond(self, uuid: str, rendered: RenderedNcco) -> Response:
        if rendered.hangup:
            self._schedule_hangup(uuid, self._speaking_time(rendered))
        return ncco_response(rendered.ncco)

    async def _on_answer(
        self, request: WebhookRequest, payload: Mapping[str, Any], uuid: str
    ) -> Response:
        outbound = request.query.get("direction") == "outbound"
        metadata: dict[str, Any] = {}
        for key in ("conversation_uuid", "from_user", "region_url"):
            if payload.get(key):
                metadata[key] = payload[key]
        call = CallInfo(
            call_id=uuid,
            provider=self.name,
            direction="outbound" if outbound else "inbound",
            caller=e164(payload.get("from")),
            callee=e164(payload.get("to")),
            agent_id=request.query.get("agent_id") or None,
            metadata=metadata,
        )
        reply = await self.flow.start(call)
        rendered = self._rendered(request, reply, 1)
        if request.query.get("record") == "1":
            # Outbound with recording: record the whole conversation from the first word.
            recording_url = self.webhook_url("recording", {"uuid": uuid}, request)
            rendered.ncco.insert(0, record_action(recording_url))
        return self._respond(uuid, rendered)

    async def _on_input(
        self, request: WebhookRequest, payload: Mapping[str, Any], uuid: str
    ) -> Response:
        turn = max(1, _int(request.query.get("turn"), 1))
        silent = max(0, _int(request.query.get("silent"), 0))
        speech = payload.get("speech") if isinstance(payload.get("speech"), dict) else {}
        dtmf = payload.get("dtmf") if isinstance(payload.get("dtmf"), dict) else {}
        results = speech.get("results") if isinstance(speech, dict) else None
        best = results[0] if isinstance(results, list) and results else {}
        text = str(best.get("text") or "").strip() if isinstance(best, dict) else ""
        digits = str((dtmf or {}).get("digits") or "").strip()
        if not text and not digits:
            silent += 1
            if silent >= MAX_SILENT_TURNS:
                log.info("caller silent; hanging up", extra={"silent_turns": silent})
                return self._respond(uuid, render_goodbye(GOODBYE_TEXT))
            rendered = render_actions(
                [Action.say(REPROMPT_TEXT), Action.gather()],
                self._input_url(request, turn, silent),
                self.settings.vonage_phone_number,
            )
            return ncco_response(rendered.ncco)
        heard = CallerInput(
            turn_id=str(turn),
            type="dtmf" if digits and not text else "speech",
            text=text,
            digits=digits or None,
            confidence=_confidence(best.get("confidence")) if isinstance(best, dict) else None,
        )
        outbound = request.query.get("direction") == "outbound"
        await self.flow.ensure_call(
            CallInfo(
                call_id=uuid,
                provider=self.name,
                direction="outbound" if outbound else "inbound",
                caller=e164(payload.get("from")),
                callee=e164(payload.get("to")),
                agent_id=request.query.get("agent_id") or None,
            )
        )
        reply = await self.flow.turn(uuid, heard)
        return self._render(request, uuid, reply, turn=turn + 1)

    async def _on_event(
        self, request: WebhookRequest, payload: Mapping[str, Any], uuid: str
    ) -> Response:
        raw = str(payload.get("status") or "")
        if raw not in STATUS_MAP:
            return Response(status_code=204)  # other event types (input, transfer, ...)
        stamp = str(payload.get("timestamp") or "")
        if not await self.flow.first_time(f"vonage:status:{uuid}:{raw}:{stamp}"):
            return Response(status_code=204)
        if raw == "machine":
            await self._leave_voicemail(uuid)
            return Response(status_code=204)
        status = STATUS_MAP[raw]
        if status is None:
            return Response(status_code=204)
        if status not in TERMINAL_STATUSES:
            # Known from its first event, so a call never answered still ends with call.ended.
            outbound = payload.get("direction") == "outbound" or (
                request.query.get("direction") == "outbound"
            )
            await self.flow.ensure_call(
                CallInfo(
                    call_id=uuid,
                    provider=self.name,
                    direction="outbound" if outbound else "inbound",
                    caller=e164(payload.get("from")),
                    callee=e164(payload.get("to")),
                    agent_id=request.query.get("agent_id") or None,
                )
            )
        extra: dict[str, Any] = {"provider_status": raw}
        duration = _seconds(payload.get("duration"))
        if duration is not None:
            extra["duration_s"] = duration
        for key in ("detail", "reason", "network", "rate", "price"):
            if payload.get(key) not in (None, ""):
                extra[key] = payload[key]
        if status in TERMINAL_STATUSES:
            pending = self._hangups.pop(uuid, None)
            if pending is not None:
                pending.cancel()
        await self.flow.status(uuid, status, extra)
        return Response(status_code=204)

    async def _leave_voicemail(self, uuid: str) -> None:
        """A machine answered an outbound call: replace the NCCO with the agent's message."""
        call = CallInfo(call_id=uuid, provider=self.name, direction="outbound")
        reply = await self.flow.start(call)  # idempotent: the greeting already chosen
        says = [a for a in reply.actions if a.type in ("say", "play")]
        rendered = render_actions([*says, Action.hangup()], "", None)
        voice = await asyncio.to_thread(self.voice_client)
        try:
            await asyncio.to_thread(voice.transfer_call_ncco, uuid, _ncco_models(rendered.ncco))
        except Exception as exc:
            log.warning("voicemail message failed", extra={"error": _describe(exc)})
        self._schedule_hangup(uuid, self._speaking_time(rendered))

    async def _on_recording(self, request: WebhookRequest, payload: Mapping[str, Any]) -> Response:
        uuid = str(request.query.get("uuid") or payload.get("uuid") or "")
        recording_uuid = str(payload.get("recording_uuid") or "")
        if not uuid:
            return error_response(400, "bad_request", "uuid is required")
        if not await self.flow.first_time(f"vonage:recording:{uuid}:{recording_uuid}"):
            return Response(status_code=204)
        recording = {
            key: payload.get(key)
            for key in ("recording_url", "recording_uuid", "start_time", "end_time", "size")
            if payload.get(key) not in (None, "")
        }
        # Not terminal on purpose: only the call's own events end it.
        await self.flow.status(uuid, "in-progress", {"recording": recording})
        return Response(status_code=204)

    # ---- hang-ups --------------------------------------------------------------------------

    def _speaking_time(self, rendered: RenderedNcco) -> float:
        return rendered.spoken_chars / self.tts_chars_per_s + self.hangup_grace_s

    def _schedule_hangup(self, uuid: str, delay_s: float) -> None:
        previous = self._hangups.pop(uuid, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._hangup_later(uuid, delay_s), name=f"vonage-hangup-{uuid}")
        self._hangups[uuid] = task
        task.add_done_callback(lambda t: self._forget(uuid, t))

    def _forget(self, uuid: str, task: asyncio.Task[None]) -> None:
        if self._hangups.get(uuid) is task:
            del self._hangups[uuid]

    async def _hangup_later(self, uuid: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await self.end_call(uuid)
            log.info("vonage call hung up", extra={"call_id": uuid})
        except Exception as exc:
            log.warning("vonage hang-up failed", extra={"call_id": uuid, "error": _describe(exc)})

    async def pending_hangups(self) -> None:
        """Wait for scheduled hang-ups (tests; graceful shutdown)."""
        await asyncio.gather(*list(self._hangups.values()), return_exceptions=True)

    # ---- REST ----------------------------------------------------------------------------

    async def make_call(self, to: str, options: CallOptions) -> OutboundCall:
        missing = self._missing()
        if missing:
            raise ProviderConfigError(f"Vonage is not configured: missing {', '.join(missing)}")
        from vonage_voice.models.common import Phone
        from vonage_voice.models.requests import CreateCallRequest, ToPhone

        from_number = options.from_number or self.settings.vonage_phone_number or ""
        query: dict[str, str] = {"direction": "outbound"}
        if options.agent_id:
            query["agent_id"] = options.agent_id
        event_query = dict(query)
        if options.recording:
            query["record"] = "1"
        request_kwargs: dict[str, Any] = {
            "to": [ToPhone(number=digits_only(to))],
            "from_": Phone(number=digits_only(from_number)),
            "answer_url": [self.webhook_url("answer", query)],
            "answer_method": "POST",
            "event_url": [self.webhook_url("status", event_query)],
            "event_method": "POST",
        }
        if options.machine_detection:
            request_kwargs["machine_detection"] = "continue"
        try:
            params = CreateCallRequest(**request_kwargs)
        except Exception as exc:
            raise ProviderError(f"Vonage cannot dial this call: {exc}", status=400) from None
        voice = await asyncio.to_thread(self.voice_client)
        try:
            created = await asyncio.to_thread(voice.create_call, params)
        except Exception as exc:
            raise _provider_error(exc, "Vonage refused the call") from None
        log.info("vonage call created", extra={"call_id": created.uuid, "to": mask_phone(to)})
        return OutboundCall(
            call_id=str(created.uuid),
            provider=self.name,
            status=STATUS_MAP.get(str(created.status)) or "queued",
            raw={"conversation_uuid": created.conversation_uuid, "direction": "outbound"},
        )

    async def end_call(self, call_id: str) -> None:
        voice = await asyncio.to_thread(self.voice_client)
        try:
            await asyncio.to_thread(voice.hangup, call_id)
        except Exception as exc:
            if _already_ended(exc):
                return
            raise _provider_error(exc, "Vonage could not end the call") from None


def _ncco_models(ncco: list[dict[str, Any]]) -> list[Any]:
    """The SDK's `transfer_call_ncco` takes models: rebuild them from the rendered dicts."""
    from vonage_voice.models.ncco import Stream, Talk

    models: list[Any] = []
    for item in ncco:
        data = {k: v for k, v in item.items() if k != "action"}
        models.append(Talk(**data) if item.get("action") == "talk" else Stream(**data))
    return models


def _private_key_text(value: str) -> str:
    """VONAGE_PRIVATE_KEY holds the PEM itself (`\\n` escapes allowed) or a path to it."""
    text = value.strip().replace("\\n", "\n")
    if text.startswith("-----BEGIN"):
        return text
    from pathlib import Path

    path = Path(text)
    try:
        if path.is_file():
            return path.read_text()
    except OSError:
        pass
    return text


def _status_of(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _already_ended(exc: Exception) -> bool:
    # Vonage answers 404 for an unknown/finished call, 400 for one that cannot be modified
    # any more because it is over.
    return _status_of(exc) in (404, 410)


def _describe(exc: Exception) -> str:
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


def _provider_error(exc: Exception, what: str) -> ProviderError:
    status = _status_of(exc)
    if status is not None and 400 <= status < 500 and status not in (401, 403, 429):
        return ProviderError(f"{what}: {_describe(exc)}", status=400)
    return ProviderError(f"{what}: {_describe(exc)}", status=502)
