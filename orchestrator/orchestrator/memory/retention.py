"""MEMORY_RETENTION_DAYS: what is kept of callers expires after it, in every store.

- Chroma: caller memories (facts, call summaries) older than the retention are deleted.
- Postgres: conversations started before it are erased as a forgotten caller's are
  (`ConversationStore.erase_started_before`: transcript deleted; numbers, summary and metadata
  erased; the anonymised row stays for accounting). The summaries kept there and the
  transcripts are the same personal data as the memories; one retention covers them all.

Both run periodically. At start-up the service awaits only the Chroma purge (as before); the
Postgres one runs first thing in the background task, so a backlog never delays a cold start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from orchestrator.memory.caller_memory import CallerMemory
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from orchestrator.store.conversations import ConversationStore

log = logging.getLogger(__name__)


class RetentionTask:
    """Purges now, then every `interval_s`; holds its task so it is neither lost nor leaked."""

    def __init__(
        self,
        memory: CallerMemory,
        retention_days: int,
        interval_s: float = 3600.0,
        *,
        conversations: ConversationStore | None = None,
    ) -> None:
        self._memory = memory
        self._conversations = conversations
        self._days = retention_days
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.purged_total = 0  # Chroma memories deleted
        self.erased_total = 0  # Postgres conversations erased

    async def purge_once(self, now: float | None = None) -> int:
        """Both stores; returns the memories purged (records: `erased_total`)."""
        purged = await self.purge_memories(now)
        await self.purge_records(now)
        return purged

    async def purge_memories(self, now: float | None = None) -> int:
        try:
            purged = await self._memory.purge_expired(self._days, now)
        except Exception:
            log.warning("memory retention purge failed", exc_info=True)
            return 0
        self.purged_total += purged
        if purged:
            log.info("expired memories purged", extra={"purged": purged, "days": self._days})
        return purged

    async def purge_records(self, now: float | None = None) -> int:
        if self._conversations is None:
            return 0
        cutoff = (now if now is not None else time.time()) - self._days * 86400
        try:
            erased = await self._conversations.erase_started_before(
                datetime.fromtimestamp(cutoff, UTC)
            )
        except Exception:
            log.warning("conversation retention purge failed", exc_info=True)
            return 0
        self.erased_total += erased.conversations
        if erased.conversations:
            log.info(
                "expired conversations erased",
                extra={
                    "conversations": erased.conversations,
                    "messages": erased.messages,
                    "days": self._days,
                },
            )
        return erased.conversations

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
