"""Stopping a background task at shutdown, even when a library swallowed the cancellation.

`task.cancel(); await task` hangs for ever when the cancellation is lost inside the task and the
task is a retry loop: a `CancelledError` that lands in a client library's own timeout block can
come out as a timeout or a connection error (redis-py issues #2028, #2551: a cancel during a
command, turned into an error the loop then retries). One of our CI runs hung there, in a
gateway's shutdown. So `cancel_and_wait` cancels again every `retry_s` until the task has ended;
a task that still runs after `give_up_s` is left, with an error in the log, rather than holding
the process's shutdown for ever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

RETRY_S = 0.1
GIVE_UP_S = 5.0


async def cancel_and_wait(
    task: asyncio.Task[Any] | None, *, retry_s: float = RETRY_S, give_up_s: float = GIVE_UP_S
) -> bool:
    """Cancel `task` until it has ended; True when it did within `give_up_s`.

    What the task raised on its way out (other than the cancellation) is logged, not raised: the
    caller is shutting down and has nothing better to do with it.
    """
    if task is None:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            log.error("background task did not stop; left running", extra={"task": task.get_name()})
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(retry_s, left))
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning(
            "background task ended with an error",
            extra={"task": task.get_name(), "err": type(exc).__name__},
        )
    return True
