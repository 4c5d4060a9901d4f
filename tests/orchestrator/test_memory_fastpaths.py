"""The turn path's shortcuts in memory, on a real embedded Chroma: they must give the same answers
as the slow paths they replace.

- an agent without knowledge documents is not searched, yet a document ingested (here or by
  another instance, within the TTL) is found;
- `CallerMemory.recall` ranks a caller's few memories exactly in numpy: same memories and scores
  as Chroma's filtered vector query;
- `CallerMemory.recent` picks the newest from metadata, then fetches only those;
- Chroma rebuilding `OpenAIEmbeddingFunction` from its config builds no new OpenAI client.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import respx

from orchestrator.config import OrchestratorSettings
from orchestrator.memory import embeddings
from orchestrator.memory.caller_memory import CallerMemory
from orchestrator.memory.chroma import ChromaHandle, open_chroma
from orchestrator.memory.embeddings import OpenAIEmbeddingFunction, QueryEmbedder, hash_embed
from orchestrator.memory.knowledge import KnowledgeBase
from tests.orchestrator.conftest import empty_collections
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI


@pytest.fixture
async def chroma(data_dir: Path) -> AsyncIterator[ChromaHandle]:
    settings = OrchestratorSettings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    handle = await open_chroma(settings)
    empty_collections(handle)
    yield handle
    await handle.close()


async def test_knowledge_search_skips_empty_agents_and_sees_new_documents(
    chroma: ChromaHandle,
) -> None:
    kb = KnowledgeBase(chroma.knowledge)
    assert await kb.search("opening hours", agent_id="a1") == []
    assert kb.known_empty("a1")
    await kb.ingest("We open at 9am and close at 5pm.", agent_id="a1", doc_id="hours")
    assert not kb.known_empty("a1")
    hits = await kb.search("when do you open", agent_id="a1")
    assert [h.doc_id for h in hits] == ["hours"]
    assert await kb.search("when do you open", agent_id="a2") == []  # other agents: still none
    assert kb.known_empty("a2")
    assert await kb.delete("hours") == 1
    assert await kb.search("when do you open", agent_id="a1") == []

    # Another instance (a second orchestrator on the same Chroma) ingests: seen after the TTL.
    stale = KnowledgeBase(chroma.knowledge, presence_ttl_s=0.0)
    assert await stale.search("refunds", agent_id="a3") == []
    await KnowledgeBase(chroma.knowledge).ingest("Refunds take 5 days.", agent_id="*", doc_id="r")
    assert [h.doc_id for h in await stale.search("refunds", agent_id="a3")] == ["r"]


async def test_a_stale_empty_answer_is_rechecked_off_the_turn(chroma: ChromaHandle) -> None:
    """Past the TTL, "no documents" is still believed at once (a turn does not wait on Chroma)
    while a recheck runs in the background; its answer reaches the following turns."""
    kb = KnowledgeBase(chroma.knowledge, presence_ttl_s=0.0)
    assert await kb.search("refunds", agent_id="a4") == []
    await KnowledgeBase(chroma.knowledge).ingest(  # another instance, same Chroma
        "Refunds take 5 days.", agent_id="a4", doc_id="r4"
    )
    asked: list[object] = []
    real_get = chroma.knowledge.get

    def counting_get(*args: object, **kwargs: object) -> object:
        asked.append(kwargs.get("where"))
        return real_get(*args, **kwargs)

    chroma.knowledge.get = counting_get  # type: ignore[method-assign]
    try:
        assert kb.known_empty("a4")  # the last answer, no waiting
        assert kb.known_empty("a4")  # one recheck at a time
        for _ in range(200):
            if not kb.known_empty("a4"):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the background recheck never saw the new document")
    finally:
        chroma.knowledge.get = real_get  # type: ignore[method-assign]
    assert len(asked) == 1
    assert [h.doc_id for h in await kb.search("refunds", agent_id="a4")] == ["r4"]


async def test_recall_exact_ranking_matches_the_vector_query(chroma: ChromaHandle) -> None:
    exact = CallerMemory(chroma.memories)
    vector = CallerMemory(chroma.memories, exact_limit=0)  # always the filtered HNSW query
    texts = [
        "prefers a window seat",
        "allergic to peanuts",
        "asked about a refund for order 1234",
        "lives in Lisbon",
        "wants calls after 6pm",
        "has a dog named Rex",
    ]
    for i, text in enumerate(texts):
        await exact.remember("+15550001111", text, agent_id="a1", created_at=1_000 + i)
    await exact.remember("+15550002222", "allergic to shellfish", agent_id="a1")
    for query in ("any allergies?", "refund for my order", "where do I live"):
        got = await exact.recall("+15550001111", query, agent_id="a1", k=3)
        want = await vector.recall("+15550001111", query, agent_id="a1", k=3)
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)
        # the same memories, in the same order (those scoring 0 tie: any order is right)
        assert [r.id for r, s in got if s > 1e-3] == [r.id for r, s in want if s > 1e-3]
        assert got[0][0].id == want[0][0].id and got[0][1] > 0.15
        assert all(r.text in texts for r, _ in got)  # never another caller's memory
    assert await exact.recall("+15550009999", "anything", agent_id="a1") == []


@pytest.mark.parametrize("count", [5, 12, 60])  # all in one get / metadata first
async def test_recent_returns_the_newest_with_their_embeddings(
    chroma: ChromaHandle, count: int
) -> None:
    memory = CallerMemory(chroma.memories)
    order = list(range(count))
    random.Random(count).shuffle(order)  # written out of order: sorted by created_at
    for i in order:
        await memory.remember("+15550003333", f"memory number {i}", agent_id="a1", created_at=i)
    await memory.remember("+15550003333", "another agent's", agent_id="a2", created_at=10_000)
    recent = await memory.recent("+15550003333", agent_id="a1", limit=8)
    assert [r.text for r in recent] == [f"memory number {i}" for i in range(count - 1, -1, -1)][:8]
    for record in recent:
        assert record.embedding is not None
        assert record.embedding == pytest.approx(hash_embed(record.text), abs=1e-6)
    assert await memory.recent("+15550004444", agent_id="a1") == []


def test_query_embedder_caches_recent_queries() -> None:
    calls: list[list[str]] = []

    def function(texts: list[str]) -> list[Any]:
        calls.append(list(texts))
        return [hash_embed(t) for t in texts]

    embed = QueryEmbedder(function, size=2)  # type: ignore[arg-type]
    embed("a")
    embed("b")
    embed("a")
    embed("c")  # evicts "b", the least recently used
    embed("b")
    assert calls == [["a"], ["b"], ["c"], ["b"]]


async def test_openai_embedding_rebuilt_from_config_shares_one_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(embeddings, "_CLIENTS", {})
    config = {"model": "text-embedding-3-small", "base_url": OPENAI_BASE, "timeout_s": 10.0}
    first = OpenAIEmbeddingFunction.build_from_config(config)
    second = OpenAIEmbeddingFunction.build_from_config(config)
    assert embeddings._CLIENTS == {}  # construction builds no client
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        assert len(first(["one"])[0]) == len(second(["two"])[0]) > 0
    assert fake.embedded == ["one", "two"]
    assert len(embeddings._CLIENTS) == 1
