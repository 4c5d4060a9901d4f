"""Amazon Connect -> realtime-gateway forwarder Lambda (Python 3.11+, standard library only).

A contact flow's "Invoke AWS Lambda function" block calls `lambda_handler` with the
`ContactFlowEvent`; this POSTs the event to the gateway, signed with the gateway's generic-http
scheme, and returns the gateway's flat map for the flow to read as `$.External.<key>`.

Environment:
  GATEWAY_URL      e.g. https://voice.example.com/voice/webhook/aws-connect
  GATEWAY_SECRET   the gateway's GENERIC_HTTP_SECRET
  GATEWAY_TIMEOUT_S  optional, default 7 (Connect gives a Lambda at most 8 s)

Each request's body is the event plus a fresh `ForwardId`, so no two forwards are the same
signed request even within one second: the gateway refuses a byte-for-byte replay (409), while
Connect's own retry of an invoke is a new forward and answered (idempotently, per turn).

It never raises: on any failure (gateway down, slow, bad answer, missing configuration) the
caller hears a short apology and the flow asks again, on the same turn.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

log = logging.getLogger()
log.setLevel(logging.INFO)

TIMESTAMP_HEADER = "X-Gateway-Timestamp"
SIGNATURE_HEADER = "X-Gateway-Signature"
FORWARD_ID = "ForwardId"  # a fresh id in each forwarded body: a replay is then recognisable
DEFAULT_TIMEOUT_S = 7.0
SAFETY_MARGIN_S = 0.5  # leave time to answer Connect before the Lambda itself times out
APOLOGY = "Sorry, we're having a little trouble. Could you say that again?"
MAX_VALUE_CHARS = 3000


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, as the gateway verifies it."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_request(
    event: dict[str, Any], url: str, secret: str, now: float | None = None
) -> urllib.request.Request:
    forward = {**event, FORWARD_ID: uuid.uuid4().hex}
    body = json.dumps(forward, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(now if now is not None else time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "vao-aws-connect-forwarder/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    if not url.startswith(("https://", "http://")):
        raise ValueError("GATEWAY_URL must be an http(s) URL")
    return urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310


def flat_map(answer: Any) -> dict[str, str]:
    """Connect accepts only a flat map of strings."""
    if not isinstance(answer, dict) or "action" not in answer:
        raise ValueError("gateway answer is not an action map")
    flat: dict[str, str] = {}
    for key, value in answer.items():
        if value is None or isinstance(value, dict | list):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        flat[str(key)] = clip(text)
    return flat


def clip(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """`text` within `limit` characters, cut after a sentence or, failing that, a word: never
    mid-word (the gateway already keeps what it says within the limit; this is the guard)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    for mark in (". ", "! ", "? "):
        cut = head.rfind(mark)
        if cut > limit // 2:
            return head[: cut + 1]
    cut = head.rfind(" ")
    return head[:cut].rstrip() if cut > 0 else head


def apology(event: Any) -> dict[str, str]:
    """Speak an apology and keep the turn, so the caller's next words are the same turn."""
    turn = "1"
    try:
        details = event["Details"]
        turn = str(
            details.get("Parameters", {}).get("turn")
            or details["ContactData"].get("Attributes", {}).get("turn")
            or "1"
        )
    except (KeyError, TypeError, AttributeError):
        pass
    return {
        "action": "speak",
        "text": APOLOGY,
        "transfer_number": "",
        "next_turn": turn,
        "silent": "0",
        "language": "en-US",
        "fallback": "true",
    }


def _timeout(context: Any) -> float:
    timeout = float(os.environ.get("GATEWAY_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        timeout = min(timeout, remaining() / 1000.0 - SAFETY_MARGIN_S)
    return max(0.5, timeout)


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, str]:
    contact_id = ""
    try:
        contact_id = str(event["Details"]["ContactData"]["ContactId"])
        url = os.environ["GATEWAY_URL"]
        secret = os.environ["GATEWAY_SECRET"]
        request = signed_request(event, url, secret)
        with urllib.request.urlopen(request, timeout=_timeout(context)) as response:  # noqa: S310
            answer = json.loads(response.read().decode("utf-8"))
        result = flat_map(answer)
        log.info(
            json.dumps(
                {"msg": "turn forwarded", "contact_id": contact_id, "action": result.get("action")}
            )
        )
        return result
    except urllib.error.HTTPError as exc:
        reason = f"gateway answered HTTP {exc.code}"
    except Exception as exc:  # never raise into Connect: the caller hears an apology instead
        reason = type(exc).__name__
    log.warning(json.dumps({"msg": "forward failed", "contact_id": contact_id, "reason": reason}))
    return apology(event)
