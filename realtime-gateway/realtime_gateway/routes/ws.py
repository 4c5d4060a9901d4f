"""`/ws`: live call events for operators; `GET /ws/status`: the fan-out's counters.

Filter by call: `/ws?call_id=A&call_id=B` (or `call_id=A,B`), and/or send
`{"subscribe": "<call id>"}` / `{"unsubscribe": "<call id>"}` (`"*"` means every call). Each
(un)subscription is acknowledged with `{"type": "subscribed", "call_ids": [...] | "*"}`.

Every frame is one JSON message (an event or a control message) unless the client opts in with
`/ws?batch=1`: then, while it is behind (several messages waiting for it), a frame is a JSON
array of the waiting messages, oldest first; caught up, it gets single objects again. Batching
is what lets one gateway process keep up with many subscribers each taking every event.
"""

from __future__ import annotations

import json
import logging
import os
import socket

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from realtime_gateway.events import WsClient
from realtime_gateway.runtime import get_runtime

log = logging.getLogger(__name__)

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"
MAX_FILTER_IDS = 100
CLOSE_POLICY_VIOLATION = 1008


def _ack(client: WsClient) -> str:
    ids: list[str] | str = "*" if client.call_ids is None else sorted(client.call_ids)
    return json.dumps({"type": "subscribed", "call_ids": ids})


def _error(message: str) -> str:
    return json.dumps({"type": "error", "error": {"code": "bad_request", "message": message}})


async def events(websocket: WebSocket) -> None:
    rt = get_runtime(websocket)
    hub = rt.bus.hub
    wanted: set[str] = set()
    for value in websocket.query_params.getlist("call_id"):
        wanted.update(part.strip() for part in value.split(",") if part.strip())
    if len(wanted) > MAX_FILTER_IDS:
        await websocket.close(CLOSE_POLICY_VIOLATION, f"at most {MAX_FILTER_IDS} call ids")
        return
    batch = websocket.query_params.get("batch", "").lower() in ("1", "true", "yes")
    client = hub.add(websocket, wanted or None, opened=False, batch=batch)
    try:
        await websocket.accept()
        client.opened.set()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                continue
            try:
                command = json.loads(text)
            except ValueError:
                hub.offer(client, _error("message is not JSON"))
                continue
            if not isinstance(command, dict):
                hub.offer(client, _error('expected {"subscribe": "<call id>"}'))
                continue
            if isinstance(command.get("subscribe"), str):
                if client.call_ids is not None and len(client.call_ids) >= MAX_FILTER_IDS:
                    hub.offer(client, _error(f"at most {MAX_FILTER_IDS} call ids per client"))
                    continue
                client.subscribe(command["subscribe"])
                hub.offer(client, _ack(client))
            elif isinstance(command.get("unsubscribe"), str):
                client.unsubscribe(command["unsubscribe"])
                hub.offer(client, _ack(client))
            elif command.get("type") == "ping":
                hub.offer(client, json.dumps({"type": "pong"}))
            else:
                hub.offer(client, _error('unknown message; send {"subscribe": "<call id>"}'))
    except Exception:  # the peer vanished mid-receive; nothing to answer
        log.debug("ws client gone", exc_info=True)
    finally:
        await hub.remove(client)


async def status(request: Request) -> JSONResponse:
    rt = get_runtime(request)
    return JSONResponse({**rt.bus.stats(), "instance": INSTANCE})
