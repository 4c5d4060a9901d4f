"""Vonage Voice API: signed answer/event webhooks in, NCCO out.

Steps under `/voice/webhook/vonage`: '' or `answer` (the answer webhook, GET query or POST
JSON: the call starts), `input` (the result of an NCCO `input`: one caller turn), `status` or
`event` (call events: statuses, answering-machine results, errors), `recording` (a `record`
action finished), `transfer` (a transferred leg's events: an unanswered transfer returns to the
agent). The turn number and the count of silent turns travel in the `eventUrl`, so a redelivered
input result is the same turn.

What a signature covers is all that drives state (`signatures.py`): Vonage's JWT covers a POST's
body and a GET's query, and each token (`jti`) is accepted once (409 after; Vonage's own retry
carries a new token). Our own state in a callback URL (`turn`, `silent`, `direction`,
`agent_id`, `record`, a recording's `uuid`) carries our `sig` over the step and those parameters,
so it cannot be changed or moved to another step; a POST's unsigned query is never read. A body
must also fit its step: an answer webhook carrying an event's `status`, an input's `speech` /
`dtmf` or a recording is refused (400), as is an input result with neither `speech` nor `dtmf`
and a recording without `recording_url`, so a body signed for one URL does nothing on another.

Vonage quirks handled here: answering-machine events carry `call_uuid`, not `uuid`; error events
carry no call id at all (acknowledged and logged); numbers come without `+`. This module keeps
verify + parse + render; signatures are checked in `signatures.py`, payloads read (step checks,
input results, status events) in `vonage_payload.py`, the REST API, configuration check and
scheduled hang-ups are `vonage_rest.py`, NCCO rendering `vonage_ncco.py` (so each stays under the
350-line rule for provider modules). A call the NCCO ends (no `input` left) is also hung up
through the API once its last words have been spoken, so its end is provable.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

import jwt
from starlette.responses import JSONResponse, Response

from realtime_gateway.drivers.base import BaseDriver, DriverDeps
from realtime_gateway.drivers.vonage_ncco import RenderedNcco, record_action, render_actions
from realtime_gateway.drivers.vonage_payload import (
    STATUS_MAP,
    TRANSFER_FAILED_STATUSES,
    caller_input,
    check_step,
    payload_of,
    status_event,
    step_of,
)
from realtime_gateway.drivers.vonage_rest import (
    HANGUP_GRACE_S,
    TTS_CHARS_PER_S,
    Hangups,
    VonageRest,
    call_request,
)
from realtime_gateway.idempotency import delivery_key, token_key
from realtime_gateway.signatures import (
    query_payload_hash,
    signed_callback_query,
    verify_vonage,
    verify_vonage_query,
    vonage_token_id,
)
from realtime_gateway.speech import SpeechLimits
from realtime_gateway.vocabulary import (
    SYNTHETIC_CALLEE,
    SYNTHETIC_CALLER,
    Acknowledged,
    CallEvent,
    CallInfo,
    CallOptions,
    ConfigReport,
    FlowReply,
    Heard,
    MachineAnswered,
    OutboundCall,
    ProviderConfigError,
    SignatureError,
    Started,
    StatusChanged,
    TransferEnded,
    WebhookRequest,
    number_or,
)
from shared.errors import ApiError
from shared.logging import mask_phone
from shared.phone import digits_only, to_e164

log = logging.getLogger(__name__)

_ANSWER_METADATA = ("conversation_uuid", "from_user", "region_url")


class VonageDriver(BaseDriver):
    name = "vonage"
    display_name = "Vonage"
    speech_limits = SpeechLimits(say_chars=1500)  # Vonage's limit per talk action

    def __init__(self, deps: DriverDeps) -> None:
        super().__init__(deps)
        self.rest = VonageRest(deps.settings)
        # Late-bound: the hang-up is whatever `end_call` is when it fires.
        self._hangups = Hangups(lambda uuid, metadata: self.end_call(uuid, metadata))
        self.tts_chars_per_s = TTS_CHARS_PER_S
        self.hangup_grace_s = HANGUP_GRACE_S

    async def aclose(self) -> None:
        await self._hangups.aclose()

    # ---- configuration -------------------------------------------------------------------

    def get_capabilities(self) -> list[str]:
        return ["voice", "recording", "machine_detection", "dtmf", "transfer", "streaming"]

    async def validate_configuration(self, check_reachability: bool = False) -> ConfigReport:
        return await self.rest.validate(self.public_base(), check_reachability)

    def configured_webhook_url(self) -> str | None:
        url = self.settings.vonage_webhook_url
        return str(url) if url else None

    # ---- signatures ----------------------------------------------------------------------

    async def verify_request(self, request: WebhookRequest) -> None:
        secret = self.settings.vonage_signature_secret
        if secret is None:
            raise SignatureError("VONAGE_SIGNATURE_SECRET is not configured", status=403)
        verify_vonage(secret.get_secret_value(), self.settings.vonage_api_key, request)
        verify_vonage_query(secret.get_secret_value(), step_of(request.url, self.name), request)

    def _signed_url(
        self, step: str, query: Mapping[str, str | int], request: WebhookRequest | None = None
    ) -> str:
        """A callback URL we give Vonage, its query covered by our `sig` (`signatures.py`)."""
        secret = self.settings.vonage_signature_secret
        if secret is None:
            raise ProviderConfigError(
                "VONAGE_SIGNATURE_SECRET is required", missing=["VONAGE_SIGNATURE_SECRET"]
            )
        signed = signed_callback_query(secret.get_secret_value(), step, query)
        return self.webhook_url(step, signed, request)

    def synthetic_request(self, call_id: str) -> WebhookRequest:
        """Vonage's answer webhook for an inbound call (a GET, Vonage's default) signed as
        Vonage signs it: an HS256 JWT with the signature secret whose `payload_hash` is the
        sha256 of the query parameters as compact JSON."""
        secret = self.settings.vonage_signature_secret
        missing = [] if secret else ["VONAGE_SIGNATURE_SECRET"]
        if not self.public_base():
            missing.append("PUBLIC_BASE_URL (or VONAGE_WEBHOOK_URL)")
        if secret is None or missing:
            raise ProviderConfigError(
                f"cannot sign a Vonage webhook: missing {', '.join(missing)}", missing=missing
            )
        params = {
            "to": digits_only(SYNTHETIC_CALLEE),
            "from": digits_only(SYNTHETIC_CALLER),
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

    # ---- parse ---------------------------------------------------------------------------

    def parse(self, request: WebhookRequest, step: str) -> CallEvent:
        """The event, whose replay key is the token's `jti`: a token is used once."""
        payload = payload_of(request)
        check_step(step, payload)
        token_id = vonage_token_id(request)
        if token_id is None:
            raise ApiError(401, "invalid_signature", "missing Vonage signature (token id)")
        event = self._parse(request, step, payload)
        event.replay_key = token_key(self.name, token_id)
        return event

    def _parse(self, request: WebhookRequest, step: str, payload: Mapping[str, Any]) -> CallEvent:
        # Answering-machine events name the call `call_uuid`; our own URLs carry `uuid`.
        uuid = str(
            payload.get("uuid") or payload.get("call_uuid") or request.query.get("uuid") or ""
        )
        call = self._call_info(request, payload, uuid)
        turn = max(1, number_or(request.query.get("turn"), 1))
        if step == "transfer":  # the transferred leg's events: its uuid is not the call's
            status = str(payload.get("status") or "")
            if status not in TRANSFER_FAILED_STATUSES:
                return Acknowledged(call=call, note="transfer progress")
            return TransferEnded(call=call, turn=turn, connected=False, outcome=status[:32])
        if not uuid:
            if step in ("status", "event") and (payload.get("reason") or payload.get("status")):
                # An error event (`reason`, `conversation_uuid`, no call id): acknowledged.
                log.warning(
                    "vonage reported an error", extra={"reason": str(payload.get("reason"))[:200]}
                )
                return Acknowledged(call=call, note="error event")
            raise ApiError(400, "bad_request", "uuid (or call_uuid) is required")
        if step in ("", "answer"):
            return Started(call=call)
        if step == "input":
            return Heard(
                call=call,
                heard=caller_input(payload, turn),
                turn=turn,
                silent=max(0, number_or(request.query.get("silent"), 0)),
            )
        if step in ("status", "event"):
            return status_event(self.name, payload, call)
        if step == "recording":
            recording = {
                key: payload.get(key)
                for key in ("recording_url", "recording_uuid", "start_time", "end_time", "size")
                if payload.get(key) not in (None, "")
            }
            key = delivery_key(
                self.name, uuid, "recording", str(payload.get("recording_uuid") or "")
            )
            # Not terminal on purpose: only the call's own events end it.
            return StatusChanged(
                call=call, status="in-progress", extra={"recording": recording}, dedupe=(key,)
            )
        raise ApiError(404, "not_found", f"unknown Vonage webhook step '{step}'")

    def _call_info(
        self, request: WebhookRequest, payload: Mapping[str, Any], uuid: str
    ) -> CallInfo:
        outbound = "outbound" in (payload.get("direction"), request.query.get("direction"))
        return CallInfo(
            call_id=uuid,
            provider=self.name,
            direction="outbound" if outbound else "inbound",
            caller=to_e164(payload.get("from")),
            callee=to_e164(payload.get("to")),
            agent_id=request.query.get("agent_id") or None,
            metadata={k: payload[k] for k in _ANSWER_METADATA if payload.get(k)},
        )

    # ---- render --------------------------------------------------------------------------

    async def render(self, request: WebhookRequest, event: CallEvent, reply: FlowReply) -> Response:
        if reply.duplicate or isinstance(event, StatusChanged | Acknowledged):
            return Response(status_code=204)
        if isinstance(event, MachineAnswered):
            # The call is already running an NCCO: replace it with the agent's message.
            rendered = render_actions(reply.actions, "", None)
            await self.rest.replace_ncco(event.call_id, rendered.ncco, event.call.metadata)
            self._hangups.schedule(
                event.call_id, self._speaking_time(rendered), event.call.metadata
            )
            return Response(status_code=204)
        ours = self._our_number(request, event)
        carried = None if self.settings.vonage_phone_number else ours
        rendered = render_actions(
            reply.actions,
            self._input_url(request, reply.next_turn, reply.silent, carried),
            ours,
            transfer_url=self._signed_url(
                "transfer", self._query(request, reply.next_turn, carried), request
            ),
        )
        if isinstance(event, Started) and request.query.get("record") == "1":
            # Outbound with recording: record the whole conversation from the first word.
            recording_url = self._signed_url("recording", {"uuid": event.call_id}, request)
            rendered.ncco.insert(0, record_action(recording_url))
        if rendered.hangup:
            self._hangups.schedule(
                event.call_id, self._speaking_time(rendered), event.call.metadata
            )
        return JSONResponse(rendered.ncco)

    def fallback_response(self, request: WebhookRequest, step: str) -> Response:
        """A valid answer when even parsing failed: an event is acknowledged, a turn asked again."""
        if step.strip("/") in ("status", "event", "recording", "transfer"):
            return Response(status_code=204)
        turn = max(1, number_or(request.query.get("turn"), 1))
        reply = self.flow.fallback(None, self.speech_limits)
        rendered = render_actions(
            reply.actions,
            self._input_url(request, turn, 0, to_e164(request.query.get("ours"))),
            None,
        )
        return JSONResponse(rendered.ncco)

    @staticmethod
    def _query(request: WebhookRequest, turn: int, ours: str | None = None) -> dict[str, str | int]:
        query: dict[str, str | int] = {"turn": turn}
        for key in ("direction", "agent_id"):  # carried along for a call we must re-track
            if request.query.get(key):
                query[key] = request.query[key]
        if ours:
            query["ours"] = ours
        return query

    def _our_number(self, request: WebhookRequest, event: CallEvent) -> str | None:
        """The number a transfer calls out from: `VONAGE_PHONE_NUMBER`, else this call's own
        number — the one the caller dialled (inbound) or called from (outbound) — which the
        answer webhook carries and our signed callback URLs then carry along (Vonage's input
        webhooks do not say it). Without one a transfer could not be placed at all."""
        if self.settings.vonage_phone_number:
            return self.settings.vonage_phone_number
        if carried := to_e164(request.query.get("ours")):
            return carried
        call = event.call
        return call.callee if call.direction == "inbound" else call.caller

    def _input_url(self, request: WebhookRequest, turn: int, silent: int, ours: str | None) -> str:
        query = self._query(request, turn, ours)
        if silent:
            query["silent"] = silent
        return self._signed_url("input", query, request)

    # ---- hang-ups --------------------------------------------------------------------------

    def _speaking_time(self, rendered: RenderedNcco) -> float:
        return rendered.spoken_chars / self.tts_chars_per_s + self.hangup_grace_s

    async def pending_hangups(self) -> None:
        """Wait for scheduled hang-ups (tests; graceful shutdown)."""
        await self._hangups.pending()

    # ---- REST ----------------------------------------------------------------------------

    async def make_call(self, to: str, options: CallOptions) -> OutboundCall:
        missing = self.rest.missing(self.public_base())
        if missing:
            raise ProviderConfigError(f"Vonage is not configured: missing {', '.join(missing)}")
        query: dict[str, str] = {"direction": "outbound"}
        if options.agent_id:
            query["agent_id"] = options.agent_id
        answer_query = {**query, "record": "1"} if options.recording else query
        params = call_request(
            to,
            options.from_number or self.settings.vonage_phone_number or "",
            answer_url=self._signed_url("answer", answer_query),
            event_url=self._signed_url("status", query),
            machine_detection=options.machine_detection,
        )
        created = await self.rest.create_call(params)
        log.info("vonage call created", extra={"call_id": created.uuid, "to": mask_phone(to)})
        return OutboundCall(
            call_id=str(created.uuid),
            provider=self.name,
            status=STATUS_MAP.get(str(created.status)) or "queued",
            raw={"conversation_uuid": created.conversation_uuid, "direction": "outbound"},
        )

    async def end_call(self, call_id: str, metadata: Mapping[str, Any] | None = None) -> None:
        await self.rest.hangup(call_id, metadata)
