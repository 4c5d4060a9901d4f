"""Opening Chroma: embedded `PersistentClient` under DATA_DIR, or `HttpClient` with CHROMA_HOST.

Embedded, the `PersistentClient` lives in a child process by default (`chroma_process`: its
writes hold the GIL, and would stall every call on the instance); `CHROMA_EMBEDDED_PROCESS=false`
keeps it in this process.

Telemetry is off (`anonymized_telemetry=False`): an offline install makes no hidden network
calls. The Chroma client is synchronous; every call goes through `asyncio.to_thread` so the event
loop never waits on SQLite, HNSW or the HTTP server. `chromadb` is imported here only, when the
service opens its memory, never at import time of the app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from orchestrator.config import OrchestratorSettings

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import Documents, EmbeddingFunction

    from orchestrator.memory.chroma_process import RemoteClient, RemoteCollection

    ChromaCollection: TypeAlias = Collection | RemoteCollection

log = logging.getLogger(__name__)

KNOWLEDGE = "knowledge"
MEMORIES = "memories"

# Chroma keeps a collection's newest writes in a log (SQLite) until `sync_threshold` of them are
# in the persisted HNSW index, and each add costs more the more rows that log holds: one
# 1536-dimension memory (an OpenAI embedding) took 5 ms of CPU on an empty log and 28 ms at 999
# rows, 15 ms on average at Chroma's default threshold of 1000 (BENCHMARKS.md, tenth session).
# Every ended call adds one memory, so that was the largest single cost of a call's end. At 100
# the average is 5-9 ms from 0 to 6000 memories, and 50 saves little more for twice the index
# writes. Knowledge keeps the default: it is written in batches by operators, and read per turn.
MEMORY_SYNC_THRESHOLD = 100


def warm_chroma(settings: OrchestratorSettings | None = None) -> None:
    """Import chromadb (in a worker thread at start-up, `services.responder.warm_imports`); with
    embedded Chroma in its own process, start the fork server that imports it for the child."""
    if settings is not None and in_child_process(settings):
        from orchestrator.memory.chroma_process import start_fork_server

        start_fork_server()
    import chromadb  # noqa: F401


def chroma_path(settings: OrchestratorSettings) -> Path:
    return Path(settings.chroma_path) if settings.chroma_path else settings.data_dir / "chroma"


def in_child_process(settings: OrchestratorSettings) -> bool:
    """Whether Chroma is embedded and runs in its child process (`chroma_process`)."""
    return not settings.chroma_host and settings.chroma_embedded_process


def _client_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def persistent_client(path: Path) -> ClientAPI:
    """Sync: the embedded client on `path` (made if missing), in whichever process calls it."""
    import chromadb

    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=_client_settings())


def build_embedding_function(settings: OrchestratorSettings) -> EmbeddingFunction[Documents]:
    """OpenAI embeddings when OPENAI_API_KEY is set, else the offline hashing embedding."""
    from orchestrator.memory.embeddings import HashingEmbeddingFunction, OpenAIEmbeddingFunction

    if settings.openai_api_key is not None:
        return OpenAIEmbeddingFunction(
            model=settings.openai_embedding_model,
            base_url=str(settings.openai_base_url) if settings.openai_base_url else None,
            timeout_s=settings.llm_timeout_s,
            api_key=settings.openai_api_key.get_secret_value(),
        )
    return HashingEmbeddingFunction()


def open_client(settings: OrchestratorSettings) -> ClientAPI:
    """Sync: call through `asyncio.to_thread` (the HTTP client contacts its server here)."""
    if settings.chroma_host:
        import chromadb

        return chromadb.HttpClient(
            host=settings.chroma_host, port=settings.chroma_port, settings=_client_settings()
        )
    return persistent_client(chroma_path(settings))


def open_process_client(
    settings: OrchestratorSettings, embedding: EmbeddingFunction[Documents]
) -> RemoteClient:
    """Sync: embedded Chroma in its child process (`chroma_process`), started here."""
    from orchestrator.memory.chroma_process import ChromaProcess, RemoteClient
    from orchestrator.memory.embeddings import OpenAIEmbeddingFunction

    env = {}
    if isinstance(embedding, OpenAIEmbeddingFunction):  # its config names the key's variable
        env[embedding.api_key_env_var] = embedding.api_key
    process = ChromaProcess(str(chroma_path(settings)), env)
    process.start()
    return RemoteClient(process)


@dataclass(slots=True)
class ChromaHandle:
    """The client and the per-purpose collections, opened once per process (lifespan)."""

    client: ClientAPI | RemoteClient
    embedding: EmbeddingFunction[Documents]
    knowledge: ChromaCollection
    memories: ChromaCollection
    mode: str  # "embedded" | "http"
    location: str

    async def heartbeat(self) -> dict[str, Any]:
        """`{"status": "connected", ...}` or raises: for /health/database."""
        await asyncio.to_thread(self.client.heartbeat)
        counts = await asyncio.gather(
            asyncio.to_thread(self.knowledge.count), asyncio.to_thread(self.memories.count)
        )
        return {
            "status": "connected",
            "mode": self.mode,
            "location": self.location,
            "knowledge_chunks": counts[0],
            "memories": counts[1],
        }

    async def close(self) -> None:
        closer = getattr(self.client, "close", None)
        if callable(closer):
            try:
                await asyncio.to_thread(closer)
            except Exception:  # closing is best effort; the process is ending
                log.debug("chroma close failed", exc_info=True)


def size_write_log(collection: ChromaCollection) -> None:
    """Sync: the memories collection's write log flushed every MEMORY_SYNC_THRESHOLD writes,
    also for a collection made before (its stored configuration is updated, once per open).
    Best effort: a Chroma server that refuses the update still serves the memories, slower."""
    try:
        collection.modify(configuration={"hnsw": {"sync_threshold": MEMORY_SYNC_THRESHOLD}})
    except Exception as exc:
        log.warning(
            "memories' write log not resized; Chroma's default stays",
            extra={"error": type(exc).__name__},
        )


def _open_sync(
    settings: OrchestratorSettings, embedding: EmbeddingFunction[Documents]
) -> ChromaHandle:
    from orchestrator.memory.embeddings import collection_name

    client: ClientAPI | RemoteClient
    if in_child_process(settings):
        client = open_process_client(settings, embedding)
    else:
        client = open_client(settings)
    collections = {}
    for purpose in (KNOWLEDGE, MEMORIES):
        collections[purpose] = client.get_or_create_collection(
            name=collection_name(purpose, embedding),
            embedding_function=embedding,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"purpose": purpose},
        )
    size_write_log(collections[MEMORIES])
    if settings.chroma_host:
        mode, location = "http", f"{settings.chroma_host}:{settings.chroma_port}"
    else:
        mode, location = "embedded", str(chroma_path(settings))
    return ChromaHandle(
        client=client,
        embedding=embedding,
        knowledge=collections[KNOWLEDGE],
        memories=collections[MEMORIES],
        mode=mode,
        location=location,
    )


async def open_chroma(
    settings: OrchestratorSettings, embedding: EmbeddingFunction[Documents] | None = None
) -> ChromaHandle:
    """Open the client and collections. A Chroma server that is not up yet (compose starts
    them together) is retried for DB_CONNECT_WAIT_S, then the error is raised."""
    ef = embedding if embedding is not None else build_embedding_function(settings)
    deadline = time.monotonic() + (settings.db_connect_wait_s if settings.chroma_host else 0.0)
    delay = 0.2
    while True:
        try:
            handle = await asyncio.to_thread(_open_sync, settings, ef)
            break
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("chroma not reachable yet; retrying", extra={"err": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    log.info(
        "chroma opened",
        extra={"chroma_mode": handle.mode, "embedding": type(ef).__name__},
    )
    return handle
