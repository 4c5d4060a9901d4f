"""Reaching a streamed call's socket from any gateway instance.

A streaming socket (ConversationRelay, the generic socket) is held by the instance that accepted
it. An end asked through the API, or a provider callback, may land on another instance behind
the load balancer. With `REDIS_URL`, the instance that cannot find the socket publishes the
command on `<events channel>:streams`; every instance listens, and the one holding the socket
acts on it. Without Redis there is one instance, and the command is acted on locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING

from realtime_gateway.streaming import StreamRegistry
from shared.pubsub import listen
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT_S = 2.0


class StreamControl:
    def __init__(
        self, registry: StreamRegistry, redis: aioredis.Redis | None, channel: str
    ) -> None:
        self.registry = registry
        self._r = redis
        self._channel = f"{channel}:streams"
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        if self._r is None:
            return
        self._listener = asyncio.create_task(self._listen(), name="stream-control-listener")
        with contextlib.suppress(TimeoutError):  # Redis down: local sockets still work
            async with asyncio.timeout(SUBSCRIBE_WAIT_S):
                await self._ready.wait()

    async def end(self, call_id: str, reason: str = "completed") -> bool:
        """End the streamed call `call_id` wherever its socket is; True when it was here (or,
        with Redis, when the command was published for the instance that holds it)."""
        if await self.registry.end(call_id, reason):
            return True
        if self._r is None:
            return False
        payload = json.dumps({"command": "end", "call_id": call_id, "reason": reason})
        try:
            receivers = await self._r.publish(self._channel, payload)
        except Exception:
            log.warning("stream end not published to Redis", exc_info=True)
            return False
        return bool(receivers)

    async def _listen(self) -> None:
        assert self._r is not None
        await listen(self._r, self._channel, self._act, self._ready, "stream control")

    async def _act(self, raw: bytes | str) -> None:
        try:
            data = json.loads(raw)
            call_id, reason = str(data["call_id"]), str(data.get("reason") or "completed")
        except (ValueError, KeyError, TypeError):
            log.warning("malformed stream command ignored")
            return
        if data.get("command") == "end" and await self.registry.end(call_id, reason):
            log.info("streamed call ended for another instance", extra={"call_id": call_id})

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        await cancel_and_wait(listener)
