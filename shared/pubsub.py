"""One Redis channel subscription that outlives Redis restarts, for every listener in the product
(the `/ws` event fan-out, stream control, the shared provider choice...).

`listen` subscribes, sets `ready`, hands each message's data to `on_message`, and when the
connection is lost logs it and subscribes again after a capped backoff — until it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


async def listen(
    redis: aioredis.Redis,
    channel: str,
    on_message: Callable[[Any], Awaitable[None] | None],
    ready: asyncio.Event,
    what: str,
) -> None:
    backoff = 0.2
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            ready.set()
            backoff = 0.2
            while True:
                msg = await pubsub.get_message(timeout=30.0)
                if msg is None or msg.get("type") != "message":
                    continue
                handled = on_message(msg["data"])
                if inspect.isawaitable(handled):
                    await handled
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("%s subscription lost; retrying", what, exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
