"""`/ws`: live call events for operators; `GET /ws/status`: the fan-out's counters.

Filter by call: `/ws?call_id=A&call_id=B` (or `call_id=A,B`), and/or send
`{"subscribe": "<call id>"}` / `{"unsubscribe": "<call id>"}` (`"*"` means every call). Each
(un)subscription is acknowledged with `{"type": "subscribed", "call_ids": [...] | "*"}`.

Every frame is one JSON message (an event or a control message) unless the client opts in with
`/ws?batch=1`: then, while it is behind (several messages waiting for it), a frame is a JSON
array of the waiting messages, oldest first; caught up, it gets single objects again. Batching
is what lets one gateway process keep up with many subscribers each taking every event.

Bounds (what one socket may cost the gateway is fixed, whatever the client sends):
- a call id is a call id (`shared.contract.ID_RE`: at most 128 characters of a small alphabet),
  at most `MAX_FILTER_IDS` of them per socket; a control message is at most
  `MAX_CONTROL_CHARS`. Anything else gets an error frame naming the rule (the offending value is
  never echoed back) and changes nothing.
- the token's `exp`: a timer per socket closes it with 1008 (policy violation, reason `token
  expired`) the moment its token expires; the client reconnects with a fresh token. No check
  runs per message.

`/ws/status` answers 503 `call_store_unavailable` (with the counters) while Redis is
unreachable: this instance then shows its own calls' events only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from realtime_gateway.events import FanoutHub, WsClient
from realtime_gateway.management_auth import principal_of
from realtime_gateway.read_model import sees_personal_data
from realtime_gateway.runtime import get_runtime
from realtime_gateway.store_outage import CODE, MESSAGE, RETRY_AFTER_S
from shared.contract import ID_RE

log = logging.getLogger(__name__)

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
MAX_FILTER_IDS = 100
MAX_CONTROL_CHARS = 1024
CLOSE_POLICY_VIOLATION = 1008
EXPIRED_REASON = "token expired"


def _ack(client: WsClient) -> str:
    ids: list[str] | str = "*" if client.call_ids is None else sorted(client.call_ids)
    return json.dumps({"type": "subscribed", "call_ids": ids})


def _error(message: str, code: str = "bad_request") -> str:
    return json.dumps({"type": "error", "error": {"code": code, "message": message}})


def _valid_id(value: str) -> bool:
    return value == "*" or ID_RE.fullmatch(value) is not None


INVALID_ID = (
    'call id: 1 to 128 characters of letters, digits and . _ : @ + - (or "*" for every call)'
)


def _query_filter(websocket: WebSocket) -> set[str] | str:
    """The `call_id` query filter, or the reason to refuse the handshake."""
    wanted: set[str] = set()
    for value in websocket.query_params.getlist("call_id"):
        wanted.update(part.strip() for part in value.split(",") if part.strip())
    if len(wanted) > MAX_FILTER_IDS:
        return f"at most {MAX_FILTER_IDS} call ids"
    if not all(ID_RE.fullmatch(call_id) for call_id in wanted):
        return "invalid call id"
    return wanted


def close_at_token_expiry(
    websocket: WebSocket, hub: FanoutHub, client: WsClient
) -> asyncio.TimerHandle:
    """One timer per socket, at the token's `exp` (the middleware verified it is there)."""
    exp = float(principal_of(websocket).claims["exp"])
    delay = max(0.0, exp - time.time())
    return asyncio.get_running_loop().call_later(
        delay, hub.close_client, client, CLOSE_POLICY_VIOLATION, EXPIRED_REASON
    )


def _command(client: WsClient, text: str) -> str:
    """The answer to one control message (and the (un)subscription it makes, if valid)."""
    if len(text) > MAX_CONTROL_CHARS:
        return _error(f"message larger than {MAX_CONTROL_CHARS} characters", "message_too_large")
    try:
        command = json.loads(text)
    except ValueError:
        return _error("message is not JSON")
    if not isinstance(command, dict):
        return _error('expected {"subscribe": "<call id>"}')
    if command.get("type") == "ping":
        return json.dumps({"type": "pong"})
    for verb in ("subscribe", "unsubscribe"):
        value = command.get(verb)
        if verb not in command:
            continue
        if not isinstance(value, str) or not _valid_id(value):
            return _error(INVALID_ID, "invalid_call_id")
        if verb == "unsubscribe":
            client.unsubscribe(value)
            return _ack(client)
        ids = client.call_ids
        if ids is not None and value not in ids and len(ids) >= MAX_FILTER_IDS:
            return _error(f"at most {MAX_FILTER_IDS} call ids per client", "too_many_call_ids")
        client.subscribe(value)
        return _ack(client)
    return _error('unknown message; send {"subscribe": "<call id>"}')


async def events(websocket: WebSocket) -> None:
    rt = get_runtime(websocket)
    hub = rt.bus.hub
    wanted = _query_filter(websocket)
    if isinstance(wanted, str):
        await websocket.close(CLOSE_POLICY_VIOLATION, wanted)
        return
    batch = websocket.query_params.get("batch", "").lower() in ("1", "true", "yes")
    viewer = not sees_personal_data(principal_of(websocket).role)
    client = hub.add(websocket, wanted or None, opened=False, batch=batch, viewer=viewer)
    expiry = close_at_token_expiry(websocket, hub, client)
    try:
        await websocket.accept()
        client.opened.set()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is not None and not client.dropped:
                hub.offer(client, _command(client, text))
    except Exception:  # the peer vanished mid-receive; nothing to answer
        log.debug("ws client gone", exc_info=True)
    finally:
        expiry.cancel()
        await hub.remove(client)


async def status(request: Request) -> JSONResponse:
    rt = get_runtime(request)
    body = {**rt.bus.stats(), "instance": INSTANCE, "call_store": await rt.calls.health()}
    if body["call_store"] == "unavailable":
        body["error"] = {"code": CODE, "message": MESSAGE}
        return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER_S})
    return JSONResponse(body)
