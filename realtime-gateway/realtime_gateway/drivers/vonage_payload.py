"""What Vonage's webhooks carry, read for the Vonage adapter (`vonage.py`).

The signed payload (a GET's query, a POST's JSON body: what Vonage's JWT covers), the webhook
step of a URL, whether a body fits its step (an answer webhook carrying an event's `status`, an
input's `speech` / `dtmf` or a recording is refused, as is an input result with neither `speech`
nor `dtmf` and a recording without `recording_url`), an `input` result as a caller turn, and a
call event (`STATUS_MAP`) as ours. Pure functions over the request, kept out of `vonage.py` so
the adapter (verify + parse + render) stays under the 350-line rule for provider modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from realtime_gateway.drivers.base import WEBHOOK_PATH
from realtime_gateway.idempotency import delivery_key
from realtime_gateway.vocabulary import (
    Acknowledged,
    CallerInput,
    CallEvent,
    CallInfo,
    MachineAnswered,
    StatusChanged,
    WebhookRequest,
    confidence_of,
    seconds_of,
)
from shared.errors import ApiError

TRANSFER_FAILED_STATUSES = frozenset(
    {"busy", "cancelled", "failed", "rejected", "timeout", "unanswered"}
)
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

# Keys that say a body was made for another webhook than the answer URL.
_NOT_AN_ANSWER = ("status", "speech", "dtmf", "recording_url")


def status_event(provider: str, payload: Mapping[str, Any], call: CallInfo) -> CallEvent:
    """A call event (`status` / `event` step) as ours: a status change, an answering machine, or
    acknowledged (informational events), deduplicated by status and timestamp."""
    raw = str(payload.get("status") or "")
    dedupe = (delivery_key(provider, call.call_id, raw, str(payload.get("timestamp") or "")),)
    if raw == "machine":
        return MachineAnswered(call=call, dedupe=dedupe)
    status = STATUS_MAP.get(raw)
    if status is None:  # human, disconnected, other event types (input, transfer, ...)
        return Acknowledged(call=call, note=raw[:32])
    extra: dict[str, Any] = {"provider_status": raw}
    duration = seconds_of(payload.get("duration"))
    if duration is not None:
        extra["duration_s"] = duration
    for key in ("detail", "reason", "network", "rate", "price"):
        if payload.get(key) not in (None, ""):
            extra[key] = payload[key]
    return StatusChanged(call=call, status=status, extra=extra, dedupe=dedupe)


def step_of(url: str, provider: str) -> str:
    """The webhook step of a request URL: the path after `/voice/webhook/vonage` ('' for the
    answer URL and the current provider's `/voice/webhook`)."""
    path = urlsplit(url).path
    _, sep, rest = path.partition(f"{WEBHOOK_PATH}/{provider}")
    return rest.strip("/") if sep else ""


def payload_of(request: WebhookRequest) -> dict[str, Any]:
    """What Vonage's JWT covers: a GET's query, a POST's JSON body (never its query: our own
    parameters there are read one by one, under our `sig`)."""
    if request.method.upper() == "GET":
        return dict(request.query)
    if not request.body.strip():
        return {}
    try:
        body = json.loads(request.body)
    except ValueError:
        raise ApiError(400, "bad_request", "body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return body


def check_step(step: str, payload: Mapping[str, Any]) -> None:
    """A body signed for one webhook does nothing on another: `ApiError` 400 naming why."""
    if step in ("", "answer"):
        found = [key for key in _NOT_AN_ANSWER if key in payload]
        if found:
            raise ApiError(
                400,
                "wrong_webhook",
                f"not an answer webhook: it carries '{found[0]}' (an event, input or "
                "recording body sent to the answer URL)",
            )
    elif step == "input" and "speech" not in payload and "dtmf" not in payload:
        raise ApiError(400, "wrong_webhook", "not an input result: no 'speech' or 'dtmf'")
    elif step == "recording" and not payload.get("recording_url"):
        raise ApiError(400, "wrong_webhook", "not a recording event: no 'recording_url'")


def caller_input(payload: Mapping[str, Any], turn: int) -> CallerInput:
    """An NCCO `input` result as one caller turn: the best speech result, or the keyed digits."""
    speech = payload.get("speech") if isinstance(payload.get("speech"), dict) else {}
    dtmf = payload.get("dtmf") if isinstance(payload.get("dtmf"), dict) else {}
    results = speech.get("results") if isinstance(speech, dict) else None
    best = results[0] if isinstance(results, list) and results else {}
    best = best if isinstance(best, dict) else {}
    text = str(best.get("text") or "").strip()
    digits = str((dtmf or {}).get("digits") or "").strip()
    return CallerInput(
        turn_id=str(turn),
        type="dtmf" if digits and not text else "speech",
        text=text,
        digits=digits or None,
        confidence=confidence_of(best.get("confidence")),
    )
