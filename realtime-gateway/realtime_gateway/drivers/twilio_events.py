"""Twilio's status and recording callbacks as call events, with the keys that make a
redelivery a no-op (Twilio redelivers callbacks and may send them out of order: its
`I-Twilio-Idempotency-Token`, and (CallSid, CallStatus, SequenceNumber))."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from realtime_gateway.idempotency import delivery_key
from realtime_gateway.vocabulary import (
    Acknowledged,
    CallEvent,
    CallInfo,
    StatusChanged,
    WebhookRequest,
    seconds_of,
)
from shared.contract import CALL_STATUSES

log = logging.getLogger(__name__)

PROVIDER = "twilio"
# Status-callback fields kept as the status's details.
_STATUS_FIELDS = (
    ("AnsweredBy", "answered_by"),
    ("SequenceNumber", "sequence"),
    ("SipResponseCode", "sip_response_code"),
    ("RecordingUrl", "recording_url"),
    ("RecordingSid", "recording_sid"),
)


def status_event(request: WebhookRequest, params: Mapping[str, str], call: CallInfo) -> CallEvent:
    status = params.get("CallStatus", "")
    if status not in CALL_STATUSES:
        log.warning("unknown Twilio CallStatus ignored", extra={"status": status[:32]})
        return Acknowledged(call=call, note="unknown status")
    extra: dict[str, Any] = {"provider_status": status}
    duration = params.get("CallDuration")
    if duration and duration.isdigit():
        extra["duration_s"] = float(duration)
    for name, key in _STATUS_FIELDS:
        if params.get(name):
            extra[key] = params[name]
    # Twilio redelivers callbacks: dedupe on its idempotency token and on
    # (CallSid, CallStatus, SequenceNumber).
    sequence = params.get("SequenceNumber") or params.get("Timestamp") or ""
    dedupe = (*_token(request), delivery_key(PROVIDER, call.call_id, status, sequence))
    return StatusChanged(call=call, status=status, extra=extra, dedupe=dedupe)


def recording_event(
    request: WebhookRequest, params: Mapping[str, str], call: CallInfo
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
    key = delivery_key(PROVIDER, call.call_id, "recording", recording_sid, recording_status)
    # "in-progress": a recording exists only once the call was answered, and a status
    # that is not terminal can never end the call early (a later "completed" does).
    return StatusChanged(
        call=call,
        status="in-progress",
        extra={"recording": {k: v for k, v in recording.items() if v is not None}},
        dedupe=(*_token(request), key),
    )


def _token(request: WebhookRequest) -> tuple[str, ...]:
    token = request.header("I-Twilio-Idempotency-Token")
    return (delivery_key(PROVIDER, "token", token),) if token else ()
