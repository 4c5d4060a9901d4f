"""MEMORY_RETENTION_DAYS: expired caller memories are purged at start-up and then periodically."""

from __future__ import annotations

import asyncio
import logging

from orchestrator.memory.caller_memory import CallerMemory
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class RetentionTask:
    """Purges now, then every `interval_s`; holds its task so it is neither lost nor leaked."""

    def __init__(
        self, memory: CallerMemory, retention_days: int, interval_s: float = 3600.0
    ) -> None:
        self._memory = memory
        self._days = retention_days
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.purged_total = 0

    async def purge_once(self) -> int:
        try:
            purged = await self._memory.purge_expired(self._days)
        except Exception:
            log.warning("memory retention purge failed", exc_info=True)
            return 0
        self.purged_total += purged
        if purged:
            log.info("expired memories purged", extra={"purged": purged, "days": self._days})
        return purged

    async def _run(self) -> None:
        while True:
            await self.purge_once()
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="memory-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
