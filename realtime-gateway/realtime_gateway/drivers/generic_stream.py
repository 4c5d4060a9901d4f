"""The generic streaming socket's wire format (`/voice/stream/generic-http`), for SIP/web bridges
and browsers: the same turn model as ConversationRelay, in our own JSON frames.

In (client → gateway): `{"type":"start","call_id","from","to","agent_id","metadata"}` (first;
with a call token, its call id and agent are the token's), `{"type":"prompt","text"}` (a final
utterance), `{"type":"dtmf","digits"}`, `{"type":"interrupt","heard"?}` (the caller talked over
the reply; `heard` is what was played of it, if the client knows), `{"type":"end"}`.
Out (gateway → client): `{"type":"started","call_id"}`, `{"type":"text","token","last"}` (the
reply as it is written; `last:true` ends it), `{"type":"action","action":{…}}` (transfer, hangup,
send_digits, play, language), `{"type":"error","error":{"code","message"}}` (a bad frame: the
call goes on), `{"type":"end","reason"}` (`reconnect`: this instance is stopping; open the socket
again and `start` the same call id, the conversation goes on).

The socket is the call: the agent's hang-up or transfer ends it (`end` with that reason), and a
socket that closes without `end` ends it `RECONNECT_GRACE_S` later unless the client opened a
new socket for the same call id meanwhile (on any instance: each socket's id is kept on the
live call, the last one wins).

Authentication on the upgrade: the generic-http HMAC over `GET <path>?<query>` in
`X-Gateway-Timestamp` / `X-Gateway-Signature` (a bridge), or `?token=<call token>` (a browser).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.websockets import WebSocket

from realtime_gateway.drivers.base import BaseDriver
from realtime_gateway.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_hmac
from realtime_gateway.streaming import StreamSession
from realtime_gateway.vocabulary import CallInfo, SignatureError
from shared.auth import Principal, verify_call_token
from shared.contract import ID_RE, Action
from shared.phone import to_e164

PROVIDER = "generic-http"
RECONNECT_GRACE_S = 30.0  # how long a dropped socket's call waits for the client to come back
SOCKET_KEY = "stream_socket"  # the live call's metadata key naming its newest socket


def signed_target(url: str) -> bytes:
    """What the upgrade's HMAC covers: `GET <path>?<query>` (the query without `token`)."""
    parts = urlsplit(url)
    return f"GET {parts.path}{'?' + parts.query if parts.query else ''}".encode()


def authenticate(
    websocket: WebSocket, url: str, driver: BaseDriver, jwt_secret: str
) -> Principal | None:
    """The call token's principal, or None for a bridge that signed the upgrade; raises
    `SignatureError` / `TokenError` otherwise (the upgrade is refused)."""
    token = websocket.query_params.get("token")
    if token:
        return verify_call_token(jwt_secret, token)
    secret = getattr(driver, "secret", None)
    if not isinstance(secret, str) or not secret:
        raise SignatureError("GENERIC_HTTP_SECRET is not configured")
    verify_hmac(
        secret,
        websocket.headers.get(TIMESTAMP_HEADER),
        websocket.headers.get(SIGNATURE_HEADER),
        signed_target(url),
    )
    return None


def start_call(frame: dict[str, Any], token: Principal | None) -> CallInfo | None:
    """The call a `start` frame opens (a call token decides its id and agent)."""
    if frame.get("type") != "start":
        return None
    if token is not None:
        call_id, agent = token.sub, token.claims.get("agent_id")
    else:
        call_id, agent = str(frame.get("call_id") or ""), frame.get("agent_id")
    if not ID_RE.fullmatch(call_id) or (agent is not None and not isinstance(agent, str)):
        return None
    metadata = frame.get("metadata")
    return CallInfo(
        call_id=call_id,
        provider=PROVIDER,
        direction="outbound" if frame.get("direction") == "outbound" else "inbound",
        caller=to_e164(frame.get("from")),
        callee=to_e164(frame.get("to")),
        agent_id=agent or None,
        metadata={**(metadata if isinstance(metadata, dict) else {}), "voice_mode": "stream"},
    )


class GenericSink:
    """A `streaming.Sink` writing our frames. `finish` ends the call (set once it has one): the
    agent's hang-up or transfer ends it, since nobody else will."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.finish: Callable[[str], Awaitable[Any]] | None = None
        self.ended = False  # the call is over from our side or the client's (no grace to wait)

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(frame, separators=(",", ":")))

    async def started(self, call_id: str) -> None:
        await self._send({"type": "started", "call_id": call_id})

    async def text(self, token: str, last: bool) -> None:
        await self._send({"type": "text", "token": token, "last": last})

    async def action(self, action: Action) -> None:
        await self._send({"type": "action", "action": action.model_dump(exclude_none=True)})
        if action.type in ("transfer", "hangup"):
            await self._send({"type": "end", "reason": action.type})
            self.ended = True
            if self.finish is not None:
                await self.finish(action.type)

    async def error(self, message: str) -> None:
        await self._send({"type": "error", "error": {"code": "bad_frame", "message": message}})

    async def hand_over(self) -> None:
        # the client reconnects (the load balancer picks a live instance) and sends `start`
        # with the same call id: the conversation goes on
        await self._send({"type": "end", "reason": "reconnect"})
        self.ended = True  # the client comes back through another instance


async def on_frame(session: StreamSession, frame: dict[str, Any]) -> bool:
    """One frame after `start`; False when the client ended the call."""
    kind = frame.get("type")
    if kind == "prompt":
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > 4000:
            await session.sink.error("prompt needs a text of 1 to 4000 characters")
        else:
            await session.prompt(text)
    elif kind == "dtmf":
        digits = frame.get("digits")
        if not isinstance(digits, str) or not digits or not set(digits) <= set("0123456789*#"):
            await session.sink.error("dtmf needs digits (0-9, * and #)")
        else:
            await session.prompt(digits, dtmf=True)
    elif kind == "interrupt":
        heard = frame.get("heard")
        await session.interrupt(heard if isinstance(heard, str) else None)
    elif kind == "end":
        await session.close()
        await session.flow.end(session.call.call_id, reason="hangup")
        if isinstance(session.sink, GenericSink):
            session.sink.ended = True
        return False
    else:
        await session.sink.error(f"unknown frame type {kind!r}")
    return True
