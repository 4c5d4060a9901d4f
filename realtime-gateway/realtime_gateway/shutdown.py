"""Graceful shutdown on SIGTERM: drain, finish, flush, exit.

uvicorn's own SIGTERM handling closes the listening socket at once, so a call arriving in that
moment meets a refused connection (dead air or the provider's error message). The gateway first
drains for `SHUTDOWN_DRAIN_S`:

1. `/health` answers 503 `draining`, so a load balancer stops routing new traffic here;
2. a NEW call (any provider's call-start webhook, through `GatewayFlow.start`) is answered with
   a polite "we're busy, please call back" and a hang-up, in the provider's own format;
3. turns of calls already in progress keep being answered (callers are not cut off mid-sentence);
4. when the drain is over, streamed calls still live here are handed over: ConversationRelay
   sessions end with a `resume` hand-off, so Twilio's action callback (served by any instance)
   reconnects the caller to a live instance, in the same conversation.

Then uvicorn's handler runs: it stops accepting connections, waits for in-flight requests
(`timeout_graceful_shutdown`), and the lifespan's shutdown flushes pending writes (the
orchestrator end retries and the Supabase call-log queue) before the process exits. A second
SIGTERM skips the drain.

The handler is installed only when the app is served by a uvicorn `Server` that captured
SIGTERM (never in tests that drive the app in process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

HAND_OVER_S = 3.0


class Drain:
    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.draining = False
        self.in_flight = 0
        self.started_at: float | None = None
        self._on_begin: list[Callable[[], None]] = []
        self._on_hand_over: list[Callable[[], Awaitable[None]]] = []

    def on_begin(self, callback: Callable[[], None]) -> None:
        self._on_begin.append(callback)

    def on_hand_over(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run when the drain is over, before the server stops (e.g. hand streamed calls to
        another instance: their sockets would otherwise be closed under the caller)."""
        self._on_hand_over.append(callback)

    async def hand_over(self) -> None:
        for callback in self._on_hand_over:
            try:
                async with asyncio.timeout(HAND_OVER_S):
                    await callback()
            except Exception:
                log.exception("hand-over step failed; stopping anyway")

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.started_at = time.monotonic()
        for callback in self._on_begin:
            callback()
        log.warning(
            "SIGTERM: draining (new calls get a busy reply; calls in progress continue)",
            extra={"drain_s": self.drain_s, "in_flight": self.in_flight},
        )


class DrainMiddleware:
    """Counts in-flight HTTP requests; while draining, `/health` is 503 for load balancers."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining and scope.get("path") == "/health":
            body = json.dumps({"status": "draining", "service": "realtime-gateway"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", b"5"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


def _is_uvicorn_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return type(owner).__module__.startswith("uvicorn") and callable(handler)


def install_sigterm_drain(drain: Drain) -> Callable[[], None]:
    """Wrap uvicorn's SIGTERM handler with the drain; returns the undo (a no-op when the app is
    not served by a uvicorn server in the main thread)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:
        return lambda: None
    if not _is_uvicorn_handler(previous):
        return lambda: None
    loop = asyncio.get_running_loop()
    uvicorn_exit: Callable[[int, FrameType | None], Any] = previous  # type: ignore[assignment]
    handover: asyncio.TimerHandle | None = None

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal handover
        if drain.draining:  # a second SIGTERM: stop now
            if handover is not None:
                handover.cancel()
            uvicorn_exit(signum, frame)
            return
        drain.begin()
        handover = loop.call_later(drain.drain_s, _hand_over, signum)

    def _hand_over(signum: int) -> None:
        log.info("drain over; stopping", extra={"in_flight": drain.in_flight})
        task = loop.create_task(drain.hand_over())  # streamed calls move to another instance
        task.add_done_callback(lambda _: uvicorn_exit(signum, None))

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        if handover is not None:
            handover.cancel()
        try:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass

    return undo
