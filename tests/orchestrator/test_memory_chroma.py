"""Chroma memory and knowledge on a real Chroma: embedded (PersistentClient under DATA_DIR) and a
real `chroma run` server (HttpClient), with our registered offline embedding."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.config import OrchestratorSettings
from orchestrator.memory.caller_memory import CallerMemory
from orchestrator.memory.chroma import (
    MEMORIES,
    MEMORY_SYNC_THRESHOLD,
    ChromaHandle,
    open_chroma,
    open_client,
)
from orchestrator.memory.embeddings import (
    HASHING_NAME,
    HashingEmbeddingFunction,
    collection_name,
    hash_embed,
)
from orchestrator.memory.knowledge import KnowledgeBase, chunk_text
from orchestrator.memory.retention import RetentionTask
from shared.phone import to_e164
from tests.orchestrator.conftest import ChromaServer, empty_collections


def chroma_settings(data_dir: Path, **overrides: Any) -> OrchestratorSettings:
    return OrchestratorSettings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]


@pytest.fixture
def no_outside_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fails any connection that is not to loopback: offline mode must make no hidden calls."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1"):
            attempts.append(address)
            raise OSError(f"test: outside network call to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


@pytest.fixture(params=["embedded", "embedded-in-process", "server"])
async def chroma(request: pytest.FixtureRequest, data_dir: Path) -> AsyncIterator[ChromaHandle]:
    """Embedded in its child process (the default), embedded in this process
    (`CHROMA_EMBEDDED_PROCESS=false`), and a Chroma server (`CHROMA_HOST`)."""
    if request.param == "server":
        server: ChromaServer = request.getfixturevalue("chroma_server")
        settings = chroma_settings(data_dir, chroma_host=server.host, chroma_port=server.port)
    else:
        request.getfixturevalue("no_outside_network")
        settings = chroma_settings(data_dir, chroma_embedded_process=request.param == "embedded")
    handle = await open_chroma(settings)
    empty_collections(handle)  # the server is shared by the session
    yield handle
    await handle.close()


def test_the_offline_embedding_is_deterministic_normalised_and_lexical() -> None:
    ef = HashingEmbeddingFunction()
    a, b = ef(["What are your opening hours?", "What are your opening hours?"])
    assert np.array_equal(a, b) and abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert len(a) == 512
    near = float(np.dot(hash_embed("opening hours"), hash_embed("when do you open")))
    far = float(np.dot(hash_embed("opening hours"), hash_embed("refund policy")))
    assert near > far


async def test_embedded_chroma_lives_under_data_dir_and_reopens_with_our_embedding(
    data_dir: Path, no_outside_network: list[Any]
) -> None:
    settings = chroma_settings(data_dir)
    handle = await open_chroma(settings)
    await KnowledgeBase(handle.knowledge).ingest("Parking is free behind the store.", doc_id="p")
    name = handle.knowledge.name
    await handle.close()
    assert (data_dir / "chroma" / "chroma.sqlite3").exists()

    reopened = open_client(settings).get_collection(name)  # no embedding function passed
    assert reopened.configuration_json["embedding_function"]["name"] == HASHING_NAME
    hits = reopened.query(query_texts=["where can I park"], n_results=1, include=["distances"])
    assert hits["ids"][0] == ["p:0"]  # embedded by our function, not Chroma's downloaded default
    stored = reopened.get(ids=["p:0"], include=["embeddings"])["embeddings"][0]
    assert np.allclose(stored, hash_embed("Parking is free behind the store."), atol=1e-6)
    assert no_outside_network == []


@pytest.mark.parametrize("mode", ["embedded", "embedded-in-process", "server"])
async def test_memories_flush_their_write_log_every_hundred_writes_even_if_made_before(
    mode: str, data_dir: Path, request: pytest.FixtureRequest
) -> None:
    """Each add costs more the more rows Chroma's write log holds (up to its default 1000):
    the memories collection is flushed every MEMORY_SYNC_THRESHOLD writes, also one an earlier
    version made with the default."""
    if mode == "server":
        server: ChromaServer = request.getfixturevalue("chroma_server")
        settings = chroma_settings(data_dir, chroma_host=server.host, chroma_port=server.port)
    else:
        settings = chroma_settings(data_dir, chroma_embedded_process=mode == "embedded")
    ef = HashingEmbeddingFunction()
    name = collection_name(MEMORIES, ef)
    client = open_client(settings)
    old = client.get_or_create_collection(
        name, embedding_function=ef, configuration={"hnsw": {"space": "cosine"}}
    )
    old.modify(configuration={"hnsw": {"sync_threshold": 1000}})  # the default (server reused)
    handle = await open_chroma(settings)
    knowledge = handle.knowledge.name
    await handle.close()
    stored = client.get_collection(name).configuration_json["hnsw"]
    assert MEMORY_SYNC_THRESHOLD == 100
    assert stored["sync_threshold"] == MEMORY_SYNC_THRESHOLD and stored["space"] == "cosine"
    assert client.get_collection(knowledge).configuration_json["hnsw"]["sync_threshold"] == 1000


async def test_a_chroma_that_refuses_the_write_log_size_still_serves_memories(
    data_dir: Path, no_outside_network: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chromadb.api.models.Collection import Collection

    def refuse(self: Collection, **kwargs: Any) -> None:
        raise ValueError("test: this Chroma does not update configurations")

    monkeypatch.setattr(Collection, "modify", refuse)
    handle = await open_chroma(chroma_settings(data_dir, chroma_embedded_process=False))
    try:
        memory = CallerMemory(handle.memories)
        await memory.remember("+15550001111", "Prefers email.", agent_id="agt_a")
        recent = await memory.recent("+15550001111", agent_id="agt_a")
        assert [m.text for m in recent] == ["Prefers email."]
    finally:
        await handle.close()


async def test_knowledge_is_chunked_filtered_by_agent_and_deleted(chroma: ChromaHandle) -> None:
    kb = KnowledgeBase(chroma.knowledge)
    long_text = " ".join(f"Fact number {i} is about topic {i}." for i in range(80))
    result = await kb.ingest(long_text, title="Facts", agent_id="agt_a", doc_id="facts")
    assert result.chunks == len(chunk_text(long_text)) > 1
    await kb.ingest("Agent B sells umbrellas.", agent_id="agt_b", doc_id="b-doc")
    await kb.ingest("Everyone may use the lobby.", doc_id="shared")
    hits = await kb.search("umbrellas", agent_id="agt_a", k=10)
    assert {h.doc_id for h in hits} <= {"facts", "shared"}
    hits = await kb.search("umbrellas", agent_id="agt_b", k=1)
    assert hits[0].doc_id == "b-doc" and hits[0].text == "Agent B sells umbrellas."
    assert (await kb.search("lobby", agent_id="agt_b", k=1))[0].doc_id == "shared"
    assert await kb.delete("facts") == result.chunks
    assert await kb.delete("facts") == 0
    assert all(h.doc_id != "facts" for h in await kb.search("fact number", k=10))


async def test_memories_are_per_caller_and_agent_redacted_and_forgettable(
    chroma: ChromaHandle,
) -> None:
    memory = CallerMemory(chroma.memories)
    alice, bob = to_e164("+1 (555) 000-1111"), to_e164("15550002222")
    assert alice == "+15550001111" and bob == "+15550002222"
    await memory.remember(alice, "prefers email, card 4111 1111 1111 1111", agent_id="a1")
    await memory.remember(alice, "has a dog called Rex", agent_id="a1")
    await memory.remember(alice, "works at the hospital", agent_id="a2")
    await memory.remember(bob, "lives in Leeds", agent_id="a1")
    recent = await memory.recent(alice, agent_id="a1")
    assert {m.text for m in recent} == {
        "prefers email, card [card number redacted]",
        "has a dog called Rex",
    }
    assert recent[0].embedding is not None
    (best, score), *_ = await memory.recall(alice, "what is my dog's name", agent_id="a1")
    assert best.text == "has a dog called Rex" and score > 0
    assert "4111" not in str(chroma.memories.get(include=["documents"])["documents"])
    assert await memory.forget_caller(alice) == 3
    assert await memory.recent(alice) == [] and await memory.count(bob) == 1


class PoisonedAdds:
    """The real collection, whose `add` fails any batch holding a memory that says POISON."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def add(self, **kwargs: Any) -> None:
        if any("POISON" in doc for doc in kwargs["documents"]):
            raise ValueError("poisoned memory")
        self._collection.add(**kwargs)


async def test_memories_written_together_share_one_add_and_each_is_stored(
    chroma: ChromaHandle,
) -> None:
    memory = CallerMemory(chroma.memories)
    callers = [f"+1555000{i:04d}" for i in range(20)]
    records = await asyncio.gather(
        *(
            memory.remember(c, f"note number {i} of {c}", agent_id="a")
            for i, c in enumerate(callers)
        )
    )
    assert all(r is not None for r in records)
    # the first alone (nothing was in flight), the others queued behind it in batches of 16
    assert 2 <= memory.batches <= 3
    assert chroma.memories.count() == 20
    for i, c in enumerate(callers):
        assert [m.text for m in await memory.recent(c, agent_id="a")] == [f"note number {i} of {c}"]


async def test_one_bad_memory_in_a_batch_fails_alone(chroma: ChromaHandle) -> None:
    memory = CallerMemory(PoisonedAdds(chroma.memories))  # type: ignore[arg-type]
    texts = ["likes tea", "POISON", "likes jazz", "likes cats", "likes rain"]
    outcomes = await asyncio.gather(
        *(memory.remember("+15550009999", t, agent_id="a") for t in texts),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], ValueError)
    assert all(
        o is not None and not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 1
    )
    stored = {m.text for m in await memory.recent("+15550009999", agent_id="a")}
    assert stored == {"likes tea", "likes jazz", "likes cats", "likes rain"}


async def test_a_cancelled_caller_does_not_take_its_memory_back(chroma: ChromaHandle) -> None:
    memory = CallerMemory(chroma.memories)
    first = asyncio.create_task(memory.remember("+15550008888", "first", agent_id="a"))
    queued = asyncio.create_task(memory.remember("+15550008888", "queued", agent_id="a"))
    await asyncio.sleep(0)  # both queued: "first" in flight, "queued" behind it
    queued.cancel()
    await first
    with contextlib.suppress(asyncio.CancelledError):
        await queued
    for _ in range(100):
        if memory._writer is None or memory._writer.done():
            break
        await _tick()
    assert {m.text for m in await memory.recent("+15550008888", agent_id="a")} == {
        "first",
        "queued",
    }


async def test_retention_purges_expired_memories_at_start(chroma: ChromaHandle) -> None:
    memory = CallerMemory(chroma.memories)
    now = int(time.time())
    old = await memory.remember(
        "+15550003333", "old note", agent_id="a", created_at=now - 40 * 86400
    )
    await memory.remember("+15550003333", "fresh note", agent_id="a", created_at=now - 86400)
    assert old is not None
    task = RetentionTask(memory, retention_days=30, interval_s=3600)
    task.start()  # purges at once, then hourly
    for _ in range(100):
        if task.purged_total:
            break
        await _tick()
    await task.stop()
    assert task.purged_total == 1
    assert [m.text for m in await memory.recent("+15550003333")] == ["fresh note"]


async def _tick() -> None:
    await asyncio.sleep(0.02)


async def test_health_heartbeat_reports_mode_and_counts(chroma: ChromaHandle) -> None:
    info = await chroma.heartbeat()
    assert info["status"] == "connected" and info["mode"] in ("embedded", "http")
    assert info["memories"] == 0


async def test_an_unreachable_chroma_server_is_retried_then_reported(data_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = chroma_settings(
        data_dir, chroma_host="127.0.0.1", chroma_port=closed_port, db_connect_wait_s=0.5
    )
    started = time.monotonic()
    with pytest.raises(ValueError, match="Could not connect to a Chroma server"):
        await open_chroma(settings)
    assert 0.15 < time.monotonic() - started < 5  # retried, within DB_CONNECT_WAIT_S
