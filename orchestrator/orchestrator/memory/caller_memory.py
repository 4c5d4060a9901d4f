"""Long-term memories of callers: facts they asked us to keep and summaries of their calls.

Every memory carries `caller` (the number in E.164, `shared.phone.to_e164`), `agent_id`, `owner`
(both, for a single filter), `kind` ("fact" | "summary"), `conversation_id` and `created_at`
(epoch seconds).
Text is redacted (`redact_secrets`) before it is stored or embedded. `purge_expired` enforces
MEMORY_RETENTION_DAYS; `forget_caller` removes every memory of a number, whatever form it was
stored in (`DELETE /callers/{phone}/memory`).

A call still live when its caller is forgotten must not write memory afterwards: `remember`
asks `tombstones` (the conversation store) whether the memory's conversation was erased, before
writing and again after (and takes the memory back then). With the forget erasing Postgres
first and Chroma second, every interleaving ends without the memory: a write that passed the
first check before the erase either meets the tombstone at the second check or is already in
Chroma when the forget deletes the caller's memories.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shared.phone import digits_only
from shared.redaction import redact_secrets

if TYPE_CHECKING:
    from orchestrator.memory.chroma import ChromaCollection
    from orchestrator.memory.embeddings import QueryEmbedder

FACT = "fact"
SUMMARY = "summary"

# `forget_caller` reads the memories' metadata this many at a time, and deletes this many ids per
# call (Chroma bounds a batch; a request this size stays well under it).
_SCAN_PAGE = 5000
_DELETE_BATCH = 1000


class Tombstones(Protocol):
    """Whether a conversation was erased (its caller forgotten): `ConversationStore`."""

    async def forgotten(self, conversation_id: str) -> bool: ...


class MemoryUnavailable(RuntimeError):
    """Chroma failed while forgetting a caller; the message says what is left to do."""


@dataclass(slots=True, frozen=True)
class MemoryRecord:
    id: str
    text: str
    kind: str
    created_at: int
    conversation_id: str
    embedding: np.ndarray[Any, np.dtype[np.float32]] | None = field(
        default=None, repr=False, compare=False
    )


def _rows(embeddings: Any, n: int) -> list[Any]:
    """Chroma's `embeddings` (None, a list or a 2-D array) as n rows (None when absent)."""
    if embeddings is None or len(embeddings) < n:
        return [None] * n
    return [embeddings[i] for i in range(n)]


def owner_key(caller: str, agent_id: str) -> str:
    """One metadata value for (agent, caller): a single equality filter is about twice as fast
    in Chroma as `$and` of two (measured: 4.5 vs 9.5 ms over 10,000 memories)."""
    return f"{agent_id}|{caller}"


def _caller_filter(caller: str, agent_id: str | None) -> dict[str, Any]:
    if agent_id:
        return {"owner": owner_key(caller, agent_id)}
    return {"caller": caller}


def _record(mem_id: str, doc: str | None, meta: Any, emb: Any = None) -> MemoryRecord:
    meta = meta or {}
    return MemoryRecord(
        id=mem_id,
        text=doc or "",
        kind=str(meta.get("kind", FACT)),
        created_at=int(meta.get("created_at", 0) or 0),
        conversation_id=str(meta.get("conversation_id", "")),
        embedding=None if emb is None else np.asarray(emb, dtype=np.float32),
    )


# Memories written by one `add` at most (group commit, `CallerMemory._write`): an add costs
# embedded Chroma ~6-22 ms with 1 memory, ~14-23 ms with 10, ~45 ms with 50 (measured,
# BENCHMARKS.md), so a bounded batch keeps each wait short while sharing it.
WRITE_BATCH = 16


@dataclass(slots=True)
class _QueuedWrite:
    id: str
    text: str
    metadata: dict[str, Any]
    done: asyncio.Future[None]


def _settle(item: _QueuedWrite, exc: BaseException | None) -> None:
    if item.done.done():  # its caller was cancelled; the memory was written (or not) anyway
        return
    if exc is None:
        item.done.set_result(None)
    else:
        item.done.set_exception(exc)


# `recent` fetches up to this many memories with their vectors in one get before it switches to
# metadata first: measured at 10,000 memories, one full get of ~10 memories ~2 ms, three gets
# ~4 ms, 200 full ~19 ms.
_RECENT_ONE_GET = 32


class CallerMemory:
    """`exact_limit`: a caller with at most this many memories is ranked exactly in numpy over
    their own vectors (one metadata-filtered `get`: ~2 ms at 10,000 memories) instead of a
    filtered HNSW query (~12 ms there); beyond it, the vector query."""

    def __init__(
        self,
        collection: ChromaCollection,
        *,
        embedder: QueryEmbedder | None = None,
        exact_limit: int = 500,
        tombstones: Tombstones | None = None,
    ) -> None:
        from orchestrator.memory.embeddings import query_embedder_for

        self._collection = collection
        self._tombstones = tombstones
        self._embed = embedder if embedder is not None else query_embedder_for(collection)
        self.exact_limit = exact_limit
        self._queued: list[_QueuedWrite] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # `add` calls made (group commit: fewer than memories under load)

    async def _write(self, mem_id: str, text: str, metadata: dict[str, Any]) -> None:
        """Group commit: a memory is written at once when no write is in flight; while one is,
        the memories that arrive wait and go together in the next `add` (at most
        `WRITE_BATCH`). An `add` is costly (index upkeep; embedded Chroma in this process holds
        the GIL through it, `CHROMA_EMBEDDED_PROCESS=false`); when calls end together, one add
        for several of their summaries pays that once. Each caller still returns only once its
        own memory is stored, or gets its own error. A caller that is cancelled does not take
        its memory back: it is written all the same."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append(_QueuedWrite(mem_id, text, metadata, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain_writes())
        await done

    async def _drain_writes(self) -> None:
        batch: list[_QueuedWrite] = []
        try:
            while self._queued:
                batch = self._queued[:WRITE_BATCH]
                del self._queued[:WRITE_BATCH]
                await self._write_batch(batch)
                batch = []
        except BaseException:  # the writer itself cancelled (shutdown): nobody waits forever
            for item in [*batch, *self._queued]:
                item.done.cancel()
            self._queued.clear()
            raise

    async def _write_batch(self, batch: list[_QueuedWrite]) -> None:
        try:
            await self._add(batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            # One bad memory must not fail the others: each alone, each its own outcome.
            for item in batch:
                try:
                    await self._add([item])
                except Exception as single_exc:
                    _settle(item, single_exc)
                else:
                    _settle(item, None)
        else:
            for item in batch:
                _settle(item, None)

    async def _add(self, batch: list[_QueuedWrite]) -> None:
        self.batches += 1
        await asyncio.to_thread(
            self._collection.add,
            ids=[w.id for w in batch],
            documents=[w.text for w in batch],
            metadatas=[w.metadata for w in batch],
        )

    async def remember(
        self,
        caller: str,
        text: str,
        *,
        agent_id: str,
        kind: str = FACT,
        conversation_id: str = "",
        created_at: int | None = None,
    ) -> MemoryRecord | None:
        clean = " ".join(redact_secrets(text).split())
        if not clean or await self._forgotten(conversation_id):
            return None
        record = MemoryRecord(
            id=f"mem_{uuid.uuid4().hex[:20]}",
            text=clean[:2000],
            kind=kind,
            created_at=int(created_at if created_at is not None else time.time()),
            conversation_id=conversation_id,
        )
        await self._write(
            record.id,
            record.text,
            {
                "caller": caller,
                "agent_id": agent_id,
                "owner": owner_key(caller, agent_id),
                "kind": kind,
                "conversation_id": conversation_id,
                "created_at": record.created_at,
            },
        )
        if await self._forgotten(conversation_id):  # forgotten while it was being written
            await asyncio.to_thread(self._collection.delete, ids=[record.id])
            return None
        return record

    async def _forgotten(self, conversation_id: str) -> bool:
        if not conversation_id or self._tombstones is None:
            return False
        return await self._tombstones.forgotten(conversation_id)

    async def recent(
        self, caller: str, *, agent_id: str | None = None, limit: int = 8, scan: int = 200
    ) -> list[MemoryRecord]:
        """The caller's newest memories, with their embeddings (for in-process relevance)."""
        return await asyncio.to_thread(self._recent_sync, caller, agent_id, limit, scan)

    def _recent_sync(
        self, caller: str, agent_id: str | None, limit: int, scan: int
    ) -> list[MemoryRecord]:
        # Most callers have a few memories: one get brings them all (one more than `few` tells
        # whether there are more). A caller with many: metadata first (cheap), then documents
        # and vectors of the newest `limit` only (fetching 200 embeddings to keep 8: ~19 ms).
        where = _caller_filter(caller, agent_id)
        full = ["documents", "metadatas", "embeddings"]
        few = max(limit, _RECENT_ONE_GET)
        got = self._collection.get(where=where, limit=min(scan, few + 1), include=full)
        if len(got["ids"]) > few:
            listed = self._collection.get(where=where, limit=scan, include=["metadatas"])
            ids = list(listed["ids"])
            metas = listed.get("metadatas") or [None] * len(ids)
            order = sorted(
                range(len(ids)),
                key=lambda i: int((metas[i] or {}).get("created_at", 0) or 0),
                reverse=True,
            )[:limit]
            got = self._collection.get(ids=[ids[i] for i in order], include=full)
        records = [
            _record(mem_id, doc, meta, emb)
            for mem_id, doc, meta, emb in zip(
                got["ids"],
                got.get("documents") or [None] * len(got["ids"]),
                got.get("metadatas") or [None] * len(got["ids"]),
                _rows(got.get("embeddings"), len(got["ids"])),
                strict=True,
            )
        ]
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[:limit]

    async def recall(
        self, caller: str, query: str, *, agent_id: str | None = None, k: int = 5
    ) -> list[tuple[MemoryRecord, float]]:
        """The caller's memories most similar to `query`, with cosine similarity."""
        return await asyncio.to_thread(self._recall_sync, caller, query, agent_id, k)

    def _recall_sync(
        self, caller: str, query: str, agent_id: str | None, k: int
    ) -> list[tuple[MemoryRecord, float]]:
        where = _caller_filter(caller, agent_id)
        if self._embed is not None:
            # A caller's own memories are few: rank them exactly, no filtered HNSW search.
            got = self._collection.get(
                where=where,
                limit=self.exact_limit + 1,
                include=["documents", "metadatas", "embeddings"],
            )
            ids = list(got["ids"])
            if len(ids) <= self.exact_limit:
                if not ids:
                    return []
                vectors = np.asarray(got.get("embeddings"), dtype=np.float32)
                q = self._embed(query)
                norms = np.linalg.norm(vectors, axis=1) * float(np.linalg.norm(q))
                scores = (vectors @ q) / np.where(norms > 0.0, norms, 1.0)
                top = np.argsort(-scores, kind="stable")[:k]
                docs = got.get("documents") or [None] * len(ids)
                metas = got.get("metadatas") or [None] * len(ids)
                return [
                    (_record(ids[i], docs[i], metas[i]), float(scores[i])) for i in top.tolist()
                ]
            query_args: dict[str, Any] = {"query_embeddings": [self._embed(query)]}
        else:
            query_args = {"query_texts": [query]}
        result = self._collection.query(
            **query_args,
            n_results=k,
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        ids = result["ids"][0] if result["ids"] else []
        docs = (result.get("documents") or [[None] * len(ids)])[0]
        metas = (result.get("metadatas") or [[None] * len(ids)])[0]
        dists = (result.get("distances") or [[0.0] * len(ids)])[0]
        return [
            (_record(mem_id, docs[i], metas[i]), 1.0 - float(dists[i]))
            for i, mem_id in enumerate(ids)
        ]

    async def forget_caller(self, caller: str) -> int:
        """Delete every memory of this number, however its `caller` was written when it was
        stored (`+15550002222`, `15550002222`, `+1 (555) 000-2222`: matched on digits). Chroma
        cannot filter on a normalised value, so this reads every memory's metadata, page by
        page, in a worker thread (embedded Chroma: in its child process): a forget costs a scan,
        a rare request does not need an index that every memory write would pay for."""
        return await asyncio.to_thread(self._forget_sync, digits_only(caller))

    def _forget_sync(self, digits: str) -> int:
        if not digits:
            return 0
        ids: list[str] = []
        offset = 0
        while True:
            page = self._collection.get(include=["metadatas"], limit=_SCAN_PAGE, offset=offset)
            page_ids = list(page["ids"])
            metas = page.get("metadatas") or [None] * len(page_ids)
            for mem_id, meta in zip(page_ids, metas, strict=True):
                if digits_only(str((meta or {}).get("caller") or "")) == digits:
                    ids.append(mem_id)
            if len(page_ids) < _SCAN_PAGE:
                break
            offset += _SCAN_PAGE
        for start in range(0, len(ids), _DELETE_BATCH):
            self._collection.delete(ids=ids[start : start + _DELETE_BATCH])
        return len(ids)

    async def forget_agent(self, agent_id: str) -> int:
        """Every memory kept by this agent (any caller): it is being deleted, and memories are
        recalled per (agent, caller), so none of them could be recalled again."""
        where: dict[str, Any] = {"agent_id": agent_id}
        kept = await asyncio.to_thread(self._collection.get, where=where, include=[])
        ids = list(kept["ids"])
        for start in range(0, len(ids), _DELETE_BATCH):
            await asyncio.to_thread(self._collection.delete, ids=ids[start : start + _DELETE_BATCH])
        return len(ids)

    async def purge_expired(self, retention_days: int, now: float | None = None) -> int:
        cutoff = int((now if now is not None else time.time()) - retention_days * 86400)
        where: dict[str, Any] = {"created_at": {"$lt": cutoff}}
        expired = await asyncio.to_thread(self._collection.get, where=where, include=[])
        ids = list(expired["ids"])
        if ids:
            await asyncio.to_thread(self._collection.delete, ids=ids)
        return len(ids)

    async def count(self, caller: str | None = None) -> int:
        if caller is None:
            return await asyncio.to_thread(self._collection.count)
        got = await asyncio.to_thread(self._collection.get, where={"caller": caller}, include=[])
        return len(got["ids"])
