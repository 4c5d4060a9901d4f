"""The knowledge base: text documents chunked into Chroma, per agent (or for every agent).

A document is split on paragraphs, then sentences, into chunks of at most `max_chars`, with the
last sentence of a chunk repeated at the start of the next so an answer that straddles a boundary
is still found. Chunk ids are `<doc_id>:<n>`; every chunk carries `doc_id`, `agent_id` ("*" = every
agent), `title` and `created_at`, so search filters by agent and delete removes the document.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.redaction import redact_secrets

if TYPE_CHECKING:
    from orchestrator.memory.chroma import ChromaCollection
    from orchestrator.memory.embeddings import QueryEmbedder

log = logging.getLogger(__name__)

ALL_AGENTS = "*"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(slots=True, frozen=True)
class KnowledgeHit:
    id: str
    doc_id: str
    title: str
    text: str
    score: float  # cosine similarity, 1.0 = same direction
    agent_id: str


@dataclass(slots=True, frozen=True)
class IngestResult:
    doc_id: str
    chunks: int
    agent_id: str


def chunk_text(text: str, max_chars: int = 600) -> list[str]:
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        flat = " ".join(paragraph.split())
        if not flat:
            continue
        for sentence in _SENTENCE_END.split(flat):
            while len(sentence) > max_chars:  # a run-on "sentence": hard split on a space
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > max_chars // 2 else max_chars
                sentences.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                sentences.append(sentence)
    chunks: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        if current and len(" ".join([*current, sentence])) > max_chars:
            chunks.append(" ".join(current))
            overlap = current[-1]
            current = [overlap] if len(overlap) + len(sentence) < max_chars else []
        current.append(sentence)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _agent_filter(agent_id: str | None) -> dict[str, Any] | None:
    if not agent_id:
        return None
    return {"agent_id": {"$in": [agent_id, ALL_AGENTS]}}


class KnowledgeBase:
    """`presence_ttl_s`: how long "this agent has no knowledge" is believed before Chroma is asked
    again. A search for an agent without documents (the common case: most agents have none)
    costs nothing then; this instance's own `ingest`/`delete` clear it at once, and a document
    another instance ingests into a shared Chroma server is found within the TTL (`search`), or
    on the first turn after the recheck that `known_empty` starts once the TTL is over (a turn
    never waits on Chroma to learn that an agent still has no documents)."""

    def __init__(
        self,
        collection: ChromaCollection,
        *,
        embedder: QueryEmbedder | None = None,
        presence_ttl_s: float = 10.0,
    ) -> None:
        from orchestrator.memory.embeddings import query_embedder_for

        self._collection = collection
        self._embed = embedder if embedder is not None else query_embedder_for(collection)
        self._presence_ttl_s = presence_ttl_s
        # agent filter key -> (has chunks, monotonic time checked)
        self._presence: dict[str, tuple[bool, float]] = {}
        self._generation = 0  # bumped by every write: a check that overlapped one is not cached
        self._rechecks: dict[str, asyncio.Task[None]] = {}  # agent filter key -> running recheck

    def _invalidate(self) -> None:
        self._generation += 1
        self._presence.clear()

    def _cached_presence(self, agent_id: str | None) -> bool | None:
        """What a check within the TTL found for `agent_id`, else None."""
        cached = self._presence.get(agent_id or "")
        if cached is None or time.monotonic() - cached[1] >= self._presence_ttl_s:
            return None
        return cached[0]

    def known_empty(self, agent_id: str | None = None) -> bool:
        """True when the last check found nothing for `agent_id`: a search would return [].
        Never waits: a check older than the TTL is believed while a recheck runs in the
        background (one at a time per agent), whose answer the next turns get."""
        key = agent_id or ""
        cached = self._presence.get(key)
        if cached is None or cached[0]:
            return False
        if time.monotonic() - cached[1] >= self._presence_ttl_s and key not in self._rechecks:
            task = asyncio.get_running_loop().create_task(self._recheck(agent_id))
            self._rechecks[key] = task
            task.add_done_callback(lambda _: self._rechecks.pop(key, None))
        return True

    async def _recheck(self, agent_id: str | None) -> None:
        try:
            await self._check(agent_id)  # caches its answer
        except Exception:  # the next stale read tries again; a search checks for itself
            log.warning("knowledge presence recheck failed", exc_info=True)

    async def has_knowledge(self, agent_id: str | None = None) -> bool:
        """Whether a search for `agent_id` (None: any agent) can find anything (cached)."""
        cached = self._cached_presence(agent_id)
        if cached is not None:
            return cached
        return await self._check(agent_id)

    async def _check(self, agent_id: str | None) -> bool:
        """Ask Chroma; the answer is cached unless a write of ours overlapped the question."""
        generation, checked_at = self._generation, time.monotonic()
        got = await asyncio.to_thread(
            self._collection.get, where=_agent_filter(agent_id), limit=1, include=[]
        )
        present = bool(got["ids"])
        if generation == self._generation:
            self._presence[agent_id or ""] = (present, checked_at)
        return present

    async def ingest(
        self,
        text: str,
        *,
        title: str = "",
        agent_id: str | None = None,
        doc_id: str | None = None,
        source: str | None = None,
    ) -> IngestResult:
        doc_id = doc_id or f"doc_{uuid.uuid4().hex[:16]}"
        agent = agent_id or ALL_AGENTS
        chunks = chunk_text(redact_secrets(text))
        now = int(time.time())
        metadata: dict[str, Any] = {
            "doc_id": doc_id,
            "agent_id": agent,
            "title": title[:200],
            "created_at": now,
        }
        if source:
            metadata["source"] = source[:500]
        ids = [f"{doc_id}:{i}" for i in range(len(chunks))]
        docs = [f"{title}\n{chunk}" if title else chunk for chunk in chunks]
        if ids:
            self._invalidate()  # a presence check from now on may predate the write
            # Replacing a document with the same id drops its old, possibly longer, chunk list.
            await asyncio.to_thread(self._collection.delete, where={"doc_id": doc_id})
            await asyncio.to_thread(
                self._collection.upsert,
                ids=ids,
                documents=docs,
                metadatas=[{**metadata, "chunk": i} for i in range(len(chunks))],
            )
            self._invalidate()  # after the write: a search meanwhile must not cache "empty"
        return IngestResult(doc_id=doc_id, chunks=len(ids), agent_id=agent)

    async def search(
        self, query: str, *, agent_id: str | None = None, k: int = 3, min_score: float = 0.0
    ) -> list[KnowledgeHit]:
        if not query.strip() or not await self.has_knowledge(agent_id):
            return []
        result = await asyncio.to_thread(self._query, query, k, _agent_filter(agent_id))
        hits: list[KnowledgeHit] = []
        ids = result["ids"][0] if result["ids"] else []
        docs = (result.get("documents") or [[]])[0]
        metas = (result.get("metadatas") or [[]])[0]
        dists = (result.get("distances") or [[]])[0]
        for i, chunk_id in enumerate(ids):
            score = 1.0 - float(dists[i])
            if score < min_score:
                continue
            meta = metas[i] or {}
            text = docs[i] or ""
            title = str(meta.get("title", ""))
            if title and text.startswith(title + "\n"):
                text = text[len(title) + 1 :]
            hits.append(
                KnowledgeHit(
                    id=chunk_id,
                    doc_id=str(meta.get("doc_id", chunk_id.split(":")[0])),
                    title=title,
                    text=text,
                    score=round(score, 4),
                    agent_id=str(meta.get("agent_id", ALL_AGENTS)),
                )
            )
        return hits

    def _query(self, query: str, k: int, where: dict[str, Any] | None) -> Any:
        # Our cached query embedding when there is one, else Chroma embeds the text itself.
        text_or_vector: dict[str, Any] = (
            {"query_texts": [query]}
            if self._embed is None
            else {"query_embeddings": [self._embed(query)]}
        )
        return self._collection.query(
            **text_or_vector,
            n_results=k,
            where=where,
            include=["documents", "metadatas", "distances"],
        )

    async def delete(self, doc_id: str) -> int:
        existing = await asyncio.to_thread(
            self._collection.get, where={"doc_id": doc_id}, include=[]
        )
        if not existing["ids"]:
            return 0
        await asyncio.to_thread(self._collection.delete, ids=list(existing["ids"]))
        self._invalidate()
        return len(existing["ids"])

    async def delete_agent(self, agent_id: str) -> int:
        """Every chunk ingested for this agent (not those for every agent): its agent is being
        deleted, and no search could reach them again."""
        existing = await asyncio.to_thread(
            self._collection.get, where={"agent_id": agent_id}, include=[]
        )
        if existing["ids"]:
            await asyncio.to_thread(self._collection.delete, ids=list(existing["ids"]))
            self._invalidate()
        return len(existing["ids"])

    async def count(self) -> int:
        return await asyncio.to_thread(self._collection.count)
