"""Memory agent: what the orchestrator agent knows when it answers a turn.

- the last N turns of this conversation, as the turn service read them from Postgres (the store
  is the only copy of the conversation; nothing is duplicated here);
- the caller's long-term memories (Chroma, filtered by caller and agent), fetched once when the
  call starts (`prefetch`, while the greeting plays) and kept for the call, so the first turn is
  as fast as the later ones; facts remembered during the call are added to that cache;
- knowledge-base chunks relevant to what the caller just said (Chroma, filtered by agent).
At call end it writes the call's summary as a memory of the caller (redacted, as every memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.memory.caller_memory import SUMMARY, CallerMemory, MemoryRecord
from orchestrator.memory.knowledge import KnowledgeBase, KnowledgeHit

log = logging.getLogger(__name__)

# Intents whose answer never needs the knowledge base: no retrieval on those turns.
NO_RETRIEVAL_INTENTS = frozenset({"empty", "dtmf", "goodbye", "transfer", "remember", "greeting"})


class HistoryMessage(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


@dataclass(slots=True, frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str


@dataclass(slots=True)
class CallerContext:
    caller: str | None
    agent_id: str
    memories: list[MemoryRecord] = field(default_factory=list)
    fetched_ms: float = 0.0


@dataclass(slots=True)
class MemoryView:
    history: list[Turn]
    memories: list[MemoryRecord]
    knowledge: list[KnowledgeHit]
    prefetched: bool
    store_ms: float = 0.0  # time spent waiting on Chroma this turn


class MemoryAgent:
    def __init__(
        self,
        knowledge: KnowledgeBase | None,
        memory: CallerMemory | None,
        *,
        history_turns: int = 10,
        memory_limit: int = 8,
        knowledge_k: int = 3,
        cache_size: int = 10_000,
        retrieval_timeout_s: float = 2.0,
    ) -> None:
        self.retrieval_timeout_s = retrieval_timeout_s
        self.knowledge = knowledge
        self.memory = memory
        self.history_turns = history_turns
        self.memory_limit = memory_limit
        self.knowledge_k = knowledge_k
        self._cache: OrderedDict[str, CallerContext] = OrderedDict()
        self._cache_size = cache_size

    async def prefetch(
        self, conversation_id: str, caller: str | None, agent_id: str
    ) -> CallerContext:
        started = time.perf_counter()
        memories: list[MemoryRecord] = []
        if caller and self.memory is not None:
            try:
                async with asyncio.timeout(self.retrieval_timeout_s):
                    memories = await self.memory.recent(
                        caller, agent_id=agent_id, limit=self.memory_limit
                    )
            except Exception:  # incl. TimeoutError: the call goes on without its memories
                log.warning("memory prefetch failed", exc_info=True)
        ctx = CallerContext(
            caller, agent_id, memories, round((time.perf_counter() - started) * 1000, 3)
        )
        self._cache[conversation_id] = ctx
        self._cache.move_to_end(conversation_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ctx

    async def caller_context(
        self, conversation_id: str, caller: str | None, agent_id: str
    ) -> tuple[CallerContext, bool]:
        """The call's cached context (True) or a fresh fetch (False: another instance greeted)."""
        ctx = self._cache.get(conversation_id)
        if ctx is not None and ctx.agent_id == agent_id:
            return ctx, True
        return await self.prefetch(conversation_id, caller, agent_id), False

    def note(self, conversation_id: str, record: MemoryRecord) -> None:
        ctx = self._cache.get(conversation_id)
        if ctx is not None:
            ctx.memories.insert(0, record)
            del ctx.memories[self.memory_limit :]

    def cached(self, conversation_id: str) -> CallerContext | None:
        return self._cache.get(conversation_id)

    def drop(self, conversation_id: str) -> None:
        self._cache.pop(conversation_id, None)

    def drop_caller(self, caller: str) -> None:
        for key in [k for k, v in self._cache.items() if v.caller == caller]:
            self._cache.pop(key, None)

    def recent_turns(
        self, history: Sequence[HistoryMessage], turns: int | None = None
    ) -> list[Turn]:
        n = (turns or self.history_turns) * 2
        out = [
            Turn(m.role, m.content)
            for m in history
            if m.content and m.role in ("user", "assistant")
        ]
        return out[-n:]

    async def gather(
        self,
        *,
        conversation_id: str,
        caller: str | None,
        agent_id: str,
        query: str,
        intent: str,
        history: Sequence[HistoryMessage],
        history_turns: int | None = None,
    ) -> MemoryView:
        started = time.perf_counter()
        want_knowledge = (
            self.knowledge is not None
            and bool(query)
            and intent not in NO_RETRIEVAL_INTENTS
            and not self.knowledge.known_empty(agent_id)  # most agents have no documents
        )
        if want_knowledge:
            assert self.knowledge is not None
            (ctx, prefetched), knowledge = await asyncio.gather(
                self.caller_context(conversation_id, caller, agent_id),
                self._search(query, agent_id),
            )
        else:
            ctx, prefetched = await self.caller_context(conversation_id, caller, agent_id)
            knowledge = []
        store_ms = (time.perf_counter() - started) * 1000
        return MemoryView(
            history=self.recent_turns(history, history_turns),
            memories=list(ctx.memories),
            knowledge=knowledge,
            prefetched=prefetched,
            store_ms=round(store_ms, 3),
        )

    async def _search(self, query: str, agent_id: str) -> list[KnowledgeHit]:
        """Knowledge for this turn, within `retrieval_timeout_s`: a slow embedding API or
        Chroma server costs the turn its excerpts, never the caller a long silence."""
        assert self.knowledge is not None
        try:
            async with asyncio.timeout(self.retrieval_timeout_s):
                return await self.knowledge.search(query, agent_id=agent_id, k=self.knowledge_k)
        except TimeoutError:
            log.warning("knowledge search timed out", extra={"timeout_s": self.retrieval_timeout_s})
        except Exception:
            log.warning("knowledge search failed", exc_info=True)
        return []

    async def write_summary(
        self, conversation_id: str, caller: str | None, agent_id: str, summary: str
    ) -> MemoryRecord | None:
        self.drop(conversation_id)
        if not caller or self.memory is None or not summary.strip():
            return None
        return await self.memory.remember(
            caller, summary, agent_id=agent_id, kind=SUMMARY, conversation_id=conversation_id
        )
