"""Streaming sockets: `/voice/stream/twilio` (ConversationRelay) and `/voice/stream/generic-http`
(our own frames, for SIP/web bridges and browsers); `POST /voice/calls/stream-tokens` mints a
call token.

Every socket is authenticated on the upgrade, before it is accepted: an unsigned or forged
upgrade is refused (HTTP 403) and creates nothing. ConversationRelay signs the upgrade with
`X-Twilio-Signature` over the public `wss://` URL; the generic socket takes the generic-http HMAC
(`X-Gateway-Timestamp` + `X-Gateway-Signature` over `GET <path>?<query>`) or, for browsers that
cannot sign, a short-lived call token (`?token=`, minted by an operator through
`POST /voice/calls/stream-tokens`). After that, a bad frame gets an error frame and the call
goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime_gateway.calls import LiveCall
from realtime_gateway.drivers import generic_stream, twilio_relay
from realtime_gateway.drivers.base import BaseDriver
from realtime_gateway.management_auth import require_role
from realtime_gateway.public_urls import public_url
from realtime_gateway.runtime import GatewayRuntime, get_runtime
from realtime_gateway.streaming import Sink, StreamSession
from realtime_gateway.vocabulary import (
    CallInfo,
    ProviderConfigError,
    SignatureError,
    WebhookRequest,
)
from shared.auth import CALL_AUDIENCE, CALLER_ROLE, TokenError, mint_token, verify_call_token
from shared.contract import ID_RE
from shared.errors import ApiError
from shared.logging import call_id_var
from shared.phone import to_e164

log = logging.getLogger(__name__)

CLOSE_POLICY_VIOLATION = 1008
CALL_TOKEN_TTL_S = 300
MAX_FRAME_CHARS = 16_384


def ws_url(websocket: WebSocket, settings: Any) -> str:
    """The public `ws(s)://` URL the provider opened (what its signature covers)."""
    url = public_url(websocket, settings)  # type: ignore[arg-type]
    return "ws" + url[4:] if url.startswith("http") else url


def _webhook_request(websocket: WebSocket, url: str) -> WebhookRequest:
    headers = {k.lower(): v for k, v in websocket.headers.items()}
    return WebhookRequest("GET", url, headers, dict(websocket.query_params), b"")


async def _session(
    rt: GatewayRuntime, websocket: WebSocket, call: CallInfo, sink: Sink, driver: BaseDriver
) -> StreamSession:
    """A session for `call`, continuing its conversation if the call is known (a reconnect)."""
    live = await rt.flow.get_call(call.call_id)
    if live is None:  # e.g. its voice webhook was answered by an instance without Redis
        await rt.flow.track(LiveCall.of(call))
    else:  # the call is now streamed (an end through the API reaches its socket)
        await rt.calls.merge_metadata(call.call_id, call.metadata)
    metadata = live.metadata if live is not None else {}
    language = metadata.get("language")
    return StreamSession(
        rt.flow,
        call,
        sink,
        first_token_timeout_s=rt.settings.stream_first_token_timeout_s,
        turn_budget_s=rt.settings.turn_timeout_s,
        limits=driver.speech_limits,
        next_turn=(live.turns + 1) if live is not None else 1,
        language=language if isinstance(language, str) else None,
        last_prompt=metadata.get("last_prompt") if live is not None else None,
    )


async def _frames(websocket: WebSocket, sink: Sink) -> Any:
    """JSON objects from the socket; a bad frame gets an error frame and is skipped."""
    while True:
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return
        if len(text) > MAX_FRAME_CHARS:
            await sink.error(f"frame larger than {MAX_FRAME_CHARS} characters")
            continue
        try:
            frame = json.loads(text)
        except ValueError:
            await sink.error("frame is not JSON")
            continue
        if not isinstance(frame, dict):
            await sink.error("frame must be a JSON object")
            continue
        yield frame


async def _serve(
    websocket: WebSocket,
    rt: GatewayRuntime,
    sink: Sink,
    open_session: Callable[[dict[str, Any]], Awaitable[StreamSession | None]],
    on_frame: Callable[[StreamSession, dict[str, Any]], Awaitable[bool]],
) -> None:
    """One accepted socket's life, for every streaming wire format: the first good frame opens
    the session (`open_session`, None: refused with an error frame, the socket stays open), the
    others go to `on_frame` (False: the client ended the call); the session is closed, and
    forgotten by this instance, however the socket ends."""
    session: StreamSession | None = None
    try:
        async for frame in _frames(websocket, sink):
            if session is None:
                session = await open_session(frame)
                if session is not None:
                    rt.flow.streams.add(session)
            elif not await on_frame(session, frame):
                break
    finally:
        if session is not None:
            rt.flow.streams.discard(session)
            await session.close()


async def _refuse(websocket: WebSocket, exc: Exception) -> None:
    log.warning("stream upgrade refused", extra={"reason": str(exc)[:200]})
    await websocket.close(CLOSE_POLICY_VIOLATION)


# ---- ConversationRelay -----------------------------------------------------------------------


async def twilio(websocket: WebSocket) -> None:
    rt = get_runtime(websocket)
    try:
        driver = await rt.drivers.get("twilio")
        await driver.verify_request(_webhook_request(websocket, ws_url(websocket, rt.settings)))
    except (SignatureError, ProviderConfigError, LookupError) as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    sink = twilio_relay.RelaySink(websocket)

    async def open_session(frame: dict[str, Any]) -> StreamSession | None:
        if frame.get("type") != "setup" or not ID_RE.fullmatch(str(frame.get("callSid"))):
            await sink.error("the first frame must be setup, with a callSid")
            return None
        return await _session(rt, websocket, _relay_call(frame), sink, driver)

    await _serve(websocket, rt, sink, open_session, twilio_relay.on_frame)


def _relay_call(setup: dict[str, Any]) -> CallInfo:
    params = setup.get("customParameters")
    params = params if isinstance(params, dict) else {}
    call_id = str(setup["callSid"])
    call_id_var.set(call_id)
    inbound = str(setup.get("direction", "inbound")) == "inbound"
    agent = params.get("agent_id")
    return CallInfo(
        call_id=call_id,
        provider="twilio",
        direction="inbound" if inbound else "outbound",
        caller=to_e164(setup.get("from")),
        callee=to_e164(setup.get("to")),
        agent_id=str(agent) if agent else None,
        metadata={"session_id": str(setup.get("sessionId") or "")[:64], "voice_mode": "relay"},
    )


# ---- the generic streaming socket --------------------------------------------------------------


async def generic(websocket: WebSocket) -> None:
    rt = get_runtime(websocket)
    try:
        driver = await rt.drivers.get("generic-http")
        token_call = generic_stream.authenticate(
            websocket, ws_url(websocket, rt.settings), driver, rt.jwt_secret
        )
    except (SignatureError, TokenError, ProviderConfigError, LookupError) as exc:
        await _refuse(websocket, exc)
        return
    await websocket.accept()
    sink = generic_stream.GenericSink(websocket)
    socket_id = uuid.uuid4().hex
    opened: list[str] = []

    async def open_session(frame: dict[str, Any]) -> StreamSession | None:
        call = generic_stream.start_call(frame, token_call)
        if call is None:
            await sink.error("the first frame must be start (with a valid call_id)")
            return None
        call.metadata[generic_stream.SOCKET_KEY] = socket_id  # this socket is the call's newest
        greeting = await rt.flow.start(call)
        session = await _session(rt, websocket, call, sink, driver)
        sink.finish = functools.partial(rt.flow.end, call.call_id)  # (reason)
        opened.append(call.call_id)
        await sink.started(call.call_id)
        if greeting.text:
            await sink.text(greeting.text, True)
        return session

    await _serve(websocket, rt, sink, open_session, generic_stream.on_frame)
    with contextlib.suppress(Exception):  # the client may have closed it already
        await websocket.close()
    if opened and not sink.ended:  # dropped: the call ends unless the client comes back
        rt.flow.keep(_end_if_abandoned(rt, opened[0], socket_id))


async def _end_if_abandoned(rt: GatewayRuntime, call_id: str, socket_id: str) -> None:
    """End a call whose socket closed without `end`, after the grace, unless a newer socket
    (a reconnect, on any instance) has taken the call meanwhile."""
    await asyncio.sleep(generic_stream.RECONNECT_GRACE_S)
    live = await rt.flow.get_call(call_id)
    if live is None or live.metadata.get(generic_stream.SOCKET_KEY) != socket_id:
        return
    log.info("stream socket closed without end and not reopened: the call ends")
    await rt.flow.end(call_id, reason="socket_closed")


async def call_token(request: Request) -> JSONResponse:
    """`POST /voice/calls/stream-tokens` `{"agent_id"}` (operator): a short-lived token that opens
    one call on `/voice/stream/generic-http` (for a browser, which cannot sign)."""
    rt = get_runtime(request)
    principal = require_role(request, "operator", "minting a call token")
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        raise ApiError(400, "bad_request", "body must be JSON") from None
    agent = body.get("agent_id") if isinstance(body, dict) else None
    if agent is not None and (not isinstance(agent, str) or not ID_RE.fullmatch(agent)):
        raise ApiError(422, "validation_error", "agent_id: not a valid agent id")
    call_id = f"web-{uuid.uuid4().hex[:20]}"
    extra = {"agent_id": agent, "by": principal.sub} if agent else {"by": principal.sub}
    token = mint_token(
        rt.jwt_secret,
        sub=call_id,
        role=CALLER_ROLE,
        ttl_s=CALL_TOKEN_TTL_S,
        audience=CALL_AUDIENCE,
        extra=extra,
    )
    return JSONResponse(
        {
            "call_id": call_id,
            "token": token,
            "expires_in": CALL_TOKEN_TTL_S,
            "url": f"{ws_url(request, rt.settings).rsplit('/voice/', 1)[0]}"  # type: ignore[arg-type]
            "/voice/stream/generic-http",
        },
        status_code=201,
    )


__all__ = ["call_token", "generic", "twilio", "verify_call_token"]
