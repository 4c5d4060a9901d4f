"""Memory and store figures, measured through the orchestrator's own modules in a process of
their own (`python -m bench.memory_probe '<json spec>'`; prints one JSON line).

- retrieval: `CallerMemory.recall` (the caller's top-5 among N memories: query embedding through
  the OpenAI-compatible client to the fake LLM, then the Chroma query with the caller filter),
  and the bare Chroma query with a precomputed embedding, to split the two;
- store write: `ConversationStore.record_turn` (a turn's two rows in one transaction) on the
  real Postgres.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.results_io import write_result

TOPICS = [
    "prefers morning appointments",
    "asked about the Saturday opening hours",
    "has a dog called Biscuit that needs a vaccination",
    "wants invoices sent by email rather than post",
    "moved to the new flat on Elm Street last spring",
    "is allergic to penicillin",
    "usually calls about the premium support plan",
    "speaks Spanish and prefers a bilingual agent",
    "had a billing dispute in March that was refunded",
    "ordered the blue model and is waiting for delivery",
]


def memory_text(i: int, rng: random.Random) -> str:
    return f"Caller {rng.choice(TOPICS)}; note {i} {uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"


AGENT = "bench-agent"


def memory_metadata(caller: str, conversation_id: str, created_at: int) -> dict[str, Any]:
    """What `CallerMemory.remember` writes (its `owner` key is the one filter it queries by)."""
    meta: dict[str, Any] = {
        "caller": caller,
        "agent_id": AGENT,
        "kind": "fact",
        "conversation_id": conversation_id,
        "created_at": created_at,
    }
    try:
        from orchestrator.memory.caller_memory import owner_key

        meta["owner"] = owner_key(caller, AGENT)
    except ImportError:
        pass
    return meta


def owner_filter(caller: str) -> dict[str, Any]:
    try:
        from orchestrator.memory.caller_memory import _caller_filter

        return dict(_caller_filter(caller, AGENT))
    except ImportError:
        return {"$and": [{"caller": caller}, {"agent_id": AGENT}]}


async def seed(memories: Any, n: int, callers: int, batch: int = 1000) -> float:
    rng = random.Random(7)
    start = time.monotonic()
    now = int(time.time())
    for lo in range(0, n, batch):
        ids, docs, metas = [], [], []
        for i in range(lo, min(n, lo + batch)):
            ids.append(f"mem_bench_{i}")
            docs.append(memory_text(i, rng))
            metas.append(
                memory_metadata(f"+1555{i % callers:07d}", f"bench-conv-{i % callers}", now - i)
            )
        await asyncio.to_thread(memories.add, ids=ids, documents=docs, metadatas=metas)
    return time.monotonic() - start


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.config import OrchestratorSettings
    from orchestrator.memory.caller_memory import CallerMemory
    from orchestrator.memory.chroma import open_chroma

    settings = OrchestratorSettings(
        data_dir=Path(spec["data_dir"]),
        openai_api_key=spec.get("openai_api_key"),
        openai_base_url=spec.get("openai_base_url"),
        database_url=spec.get("database_url"),
    )
    out: dict[str, Any] = {}
    handle = await open_chroma(settings)
    out["embedding"] = type(handle.embedding).__name__
    n, callers, queries = spec["memories"], spec["callers"], spec["queries"]
    existing = await asyncio.to_thread(handle.memories.count)
    if existing < n:
        out["seed_s"] = await seed(handle.memories, n, callers)
    out["memories"] = await asyncio.to_thread(handle.memories.count)
    memory = CallerMemory(handle.memories)
    rng = random.Random(11)
    recall_ms: list[float] = []
    hits = 0
    for _ in range(queries):
        caller = f"+1555{rng.randrange(callers):07d}"
        t = time.monotonic()
        found = await memory.recall(caller, rng.choice(TOPICS), agent_id=AGENT, k=5)
        recall_ms.append((time.monotonic() - t) * 1000)
        hits += len(found)
    out["recall_ms"] = recall_ms
    out["recall_hits_per_query"] = hits / max(1, queries)
    recent_ms: list[float] = []
    for _ in range(queries):
        caller = f"+1555{rng.randrange(callers):07d}"
        t = time.monotonic()
        await memory.recent(caller, agent_id=AGENT, limit=8)
        recent_ms.append((time.monotonic() - t) * 1000)
    out["recent_ms"] = recent_ms
    heavy = "+15559999999"
    rng_h = random.Random(5)
    docs = [memory_text(i, rng_h) for i in range(200)]
    await asyncio.to_thread(
        handle.memories.add,
        ids=[f"mem_bench_heavy_{i}" for i in range(200)],
        documents=docs,
        metadatas=[memory_metadata(heavy, "bench-heavy", int(time.time()) - i) for i in range(200)],
    )
    heavy_ms: list[float] = []
    for _ in range(max(10, queries // 5)):
        t = time.monotonic()
        await memory.recent(heavy, agent_id=AGENT, limit=8)
        heavy_ms.append((time.monotonic() - t) * 1000)
    out["recent_heavy_ms"] = heavy_ms
    query_vecs = await asyncio.to_thread(handle.embedding, TOPICS)
    chroma_ms: list[float] = []
    for _ in range(queries):
        caller = f"+1555{rng.randrange(callers):07d}"
        vec = query_vecs[rng.randrange(len(TOPICS))]
        t = time.monotonic()
        await asyncio.to_thread(
            handle.memories.query,
            query_embeddings=[vec],
            n_results=5,
            where=owner_filter(caller),
            include=["documents", "metadatas", "distances"],
        )
        chroma_ms.append((time.monotonic() - t) * 1000)
    out["chroma_query_ms"] = chroma_ms
    await handle.close()

    if spec.get("database_url"):
        from orchestrator.store.database import Database

        db = await Database.open(spec["database_url"], min_size=2, max_size=4)
        try:
            conv = f"bench-store-{uuid.uuid4().hex[:8]}"
            await db.conversations.start(conv, call_id=conv, provider="generic-http")
            write_ms: list[float] = []
            actions = [{"type": "say", "text": "Certainly."}, {"type": "gather"}]
            for turn in range(spec["writes"]):
                t = time.monotonic()
                await db.conversations.record_turn(
                    conv,
                    str(turn + 1),
                    user_text="What are your opening hours on Saturday?",
                    reply_text="Certainly. Our opening hours are nine to five.",
                    actions=actions,
                    timings={"llm": 1.0},
                )
                write_ms.append((time.monotonic() - t) * 1000)
            out["store_write_ms"] = write_ms
        finally:
            await db.close()
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = asyncio.run(run(spec))
    write_result(spec, result)


if __name__ == "__main__":
    main()
