"""`python -m bench.orchestrator_graph [--smoke] [--json PATH]`: the agent graph's own cost.

In process, on real parts: the real `GraphResponder` (the graph input -> memory -> orchestrator
<-> tool), real embedded Chroma under a temp dir (knowledge + caller memories), the real
`ChatOpenAI` + `openai` client parsing real chat-completion JSON, served by an `httpx.MockTransport`
that answers instantly (a zero-latency LLM: the model's time is taken out, the client's is not).
The turn's history is handed in, as the turn service does after reading Postgres, so the store's
time is not in these figures (the service-level bench measures it).

Reports, for LLM and offline modes, one turn's orchestrator time (`agent_total`) p50/p99 at 1 and
50 concurrent conversations (paced: a 0.5-1.5 s pause between a caller's turns; and saturation:
no pause, which measures capacity, not latency), each stage's share of it (input, memory incl.
Chroma, orchestrator, llm, tools, graph framework), the graph's own overhead (everything but the
LLM and the stores), and Chroma retrieval p50 with 10,000 caller memories (vector recall
filtered by caller, and the start-of-call prefetch).
Targets: retrieval p50 <= 10 ms; graph overhead p50 <= 3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.stats import percentile

REPLY = "Certainly. Our opening hours are nine to five, Monday to Friday."
QUESTIONS = [
    "What are your opening hours?",
    "Can I bring my dog to the store?",
    "How long does shipping take?",
    "Do you offer student discounts?",
]
FAQ = (
    "Our opening hours are nine to five, Monday to Friday. We are closed on public holidays.\n\n"
    "Dogs on a lead are welcome in the store. Shipping takes three to five working days.\n\n"
    "Students get ten percent off with a valid student card."
)
STAGES = ("input", "memory", "orchestrator", "llm", "tools")


def instant_openai(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if request.url.path.endswith("/embeddings"):
        from orchestrator.memory.embeddings import hash_embed

        data = [
            {"object": "embedding", "index": i, "embedding": hash_embed(t, 256).tolist()}
            for i, t in enumerate(body["input"])
        ]
        return httpx.Response(200, json={"object": "list", "data": data, "model": "m"})
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )


async def build(mode: str, data_dir: Path) -> Any:
    from orchestrator.agents.graph_responder import GraphResponder
    from orchestrator.config import OrchestratorSettings
    from orchestrator.llm.factory import LLMFactory
    from orchestrator.memory.chroma import open_chroma
    from orchestrator.memory.embeddings import HashingEmbeddingFunction

    values: dict[str, Any] = {"data_dir": data_dir, "database_url": "postgresql://unused/x"}
    if mode == "llm":
        values.update(
            openai_api_key="sk-bench",
            openai_base_url="https://api.openai.bench/v1",
            llm_http_transport="httpx",  # the instant MockTransport client below
        )
    settings = OrchestratorSettings(_env_file=None, **values)  # type: ignore[call-arg]
    chroma = await open_chroma(settings, HashingEmbeddingFunction())
    http = httpx.AsyncClient(transport=httpx.MockTransport(instant_openai))
    llm = LLMFactory(settings, http) if mode == "llm" else None
    responder = GraphResponder(settings, chroma=chroma, http=http, llm=llm, owns_http=True)
    assert responder.knowledge is not None
    await responder.knowledge.ingest(FAQ, title="FAQ")
    return responder


def records(n_conversations: int) -> list[tuple[Any, Any]]:
    from orchestrator.store.records import Agent, Conversation

    now = datetime.now(UTC)
    agent = Agent("agt_bench", "Bench", "orchestrator", {"greeting": "Hi"}, True, now, now)
    out = []
    for i in range(n_conversations):
        conv = Conversation(
            id=f"bench-{i}",
            call_id=f"bench-{i}",
            agent_id=agent.id,
            caller=f"+1555{i:07d}",
            callee=None,
            provider="bench",
            status="active",
            started_at=now,
        )
        out.append((conv, agent))
    return out


async def run_level(
    responder: Any, concurrency: int, turns: int, think_s: tuple[float, float] = (0.0, 0.0)
) -> dict[str, Any]:
    """`concurrency` conversations at once, each pausing `think_s` (uniform) between turns, as
    a caller does while the reply is spoken and they answer; (0, 0) is saturation."""
    from orchestrator.services.responder import TurnInputs
    from shared.contract import TurnContext

    pairs = records(concurrency)
    for conv, agent in pairs:  # the call starts: greeting + memory prefetch
        await responder.greet(conv, agent)
    samples: list[dict[str, float]] = []

    rng = random.Random(concurrency)

    async def conversation(conv: Any, agent: Any) -> None:
        await asyncio.sleep(rng.uniform(*think_s))  # callers do not all speak at once
        for t in range(turns):
            draft = await responder.respond(
                TurnInputs(conv, agent, f"t{t}", QUESTIONS[t % len(QUESTIONS)], TurnContext(), [])
            )
            samples.append(draft.timings_ms)
            if think_s[1] > 0:
                await asyncio.sleep(rng.uniform(*think_s))

    # warm-up, not counted
    await asyncio.gather(*(conversation(c, a) for c, a in pairs[: min(4, len(pairs))]))
    samples.clear()
    started = time.perf_counter()
    await asyncio.gather(*(conversation(c, a) for c, a in pairs))
    wall = time.perf_counter() - started
    totals = sorted(s["agent_total"] for s in samples)
    overhead = sorted(s["graph_overhead"] for s in samples)
    mean_total = statistics.fmean(totals)
    shares = {st: statistics.fmean(s.get(st, 0.0) for s in samples) / mean_total for st in STAGES}
    shares["graph_framework"] = max(0.0, 1.0 - sum(shares.values()))
    return {
        "concurrency": concurrency,
        "think_s": list(think_s),
        "turns": len(samples),
        "turns_per_s": round(len(samples) / wall, 1),
        "agent_total_ms": {
            "p50": round(percentile(totals, 50), 3),
            "p99": round(percentile(totals, 99), 3),
        },
        "graph_overhead_ms": {
            "p50": round(percentile(overhead, 50), 3),
            "p99": round(percentile(overhead, 99), 3),
        },
        "stage_share": {k: round(v, 3) for k, v in shares.items()},
        "stage_p50_ms": {
            st: round(percentile(sorted(s.get(st, 0.0) for s in samples), 50), 3)
            for st in (*STAGES, "memory_store")
        },
    }


async def retrieval(data_dir: Path, n_memories: int, queries: int) -> dict[str, Any]:
    from orchestrator.config import OrchestratorSettings
    from orchestrator.memory.caller_memory import CallerMemory, owner_key
    from orchestrator.memory.chroma import open_chroma
    from orchestrator.memory.embeddings import HashingEmbeddingFunction

    settings = OrchestratorSettings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    handle = await open_chroma(settings, HashingEmbeddingFunction())
    callers = [f"+1666{i:07d}" for i in range(n_memories // 10)]
    topics = [
        "account number",
        "prefers mornings",
        "dog named Rex",
        "lives in Leeds",
        "allergic to nuts",
        "order A-17 pending",
        "speaks French",
        "VIP customer",
    ]
    rng = random.Random(7)
    now = int(time.time())
    batch_ids, batch_docs, batch_meta = [], [], []
    t_insert = time.perf_counter()
    for i in range(n_memories):
        caller = callers[i % len(callers)]
        batch_ids.append(f"m{i}")
        batch_docs.append(f"Caller note {i}: {rng.choice(topics)} {rng.randint(1000, 9999)}")
        batch_meta.append(
            {
                "caller": caller,
                "agent_id": "agt_bench",
                "owner": owner_key(caller, "agt_bench"),
                "kind": "fact",
                "conversation_id": f"c{i}",
                "created_at": now - rng.randint(0, 86400 * 30),
            }
        )
        if len(batch_ids) == 1000:
            await asyncio.to_thread(
                handle.memories.add, ids=batch_ids, documents=batch_docs, metadatas=batch_meta
            )
            batch_ids, batch_docs, batch_meta = [], [], []
    insert_s = time.perf_counter() - t_insert
    memory = CallerMemory(handle.memories)
    recall: list[float] = []
    prefetch: list[float] = []
    for q in range(queries):
        caller = callers[rng.randrange(len(callers))]
        t = time.perf_counter()
        hits = await memory.recall(caller, "what is my account number", agent_id="agt_bench", k=5)
        recall.append((time.perf_counter() - t) * 1000)
        assert hits, "recall found nothing"
        t = time.perf_counter()
        await memory.recent(caller, agent_id="agt_bench", limit=8)
        prefetch.append((time.perf_counter() - t) * 1000)
        if q == 0:  # the first query warms caches
            recall.clear()
            prefetch.clear()
    recall.sort()
    prefetch.sort()
    count = await asyncio.to_thread(handle.memories.count)
    await handle.close()
    return {
        "memories": count,
        "callers": len(callers),
        "insert_s": round(insert_s, 2),
        "recall_ms": {
            "p50": round(percentile(recall, 50), 3),
            "p99": round(percentile(recall, 99), 3),
        },
        "prefetch_ms": {
            "p50": round(percentile(prefetch, 50), 3),
            "p99": round(percentile(prefetch, 99), 3),
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    logging.disable(logging.INFO)
    out: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="vao-bench-graph-") as tmp:
        for mode in ("llm", "offline"):
            responder = await build(mode, Path(tmp) / mode)
            try:
                levels = [
                    await run_level(responder, 1, args.turns),
                    await run_level(responder, 50, args.paced_turns, (0.5, 1.5)),
                    await run_level(responder, 50, max(4, args.turns // 25)),
                ]
                out["modes"][mode] = levels
            finally:
                await responder.aclose()
        out["chroma_retrieval"] = await retrieval(
            Path(tmp) / "retrieval", args.memories, args.queries
        )
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    return out


def pace(level: dict[str, Any]) -> str:
    low, high = level["think_s"]
    return f"think {low:g}-{high:g}s" if high else "saturation"


def render(result: dict[str, Any]) -> str:
    lines = [
        "agent graph (in process, zero-latency LLM via httpx.MockTransport, embedded Chroma); "
        f"load avg {result['load_avg_1m_before']} -> {result['load_avg_1m_after']} "
        f"on {result['machine']['cpus']} CPUs"
    ]
    for mode, levels in result["modes"].items():
        for lv in levels:
            share = ", ".join(f"{k} {v:.0%}" for k, v in lv["stage_share"].items())
            total, overhead = lv["agent_total_ms"], lv["graph_overhead_ms"]
            lines.append(
                f"  {mode:7} c={lv['concurrency']:<3} {pace(lv):11} turn p50 {total['p50']:.2f} ms"
                f" p99 {total['p99']:.2f} ms | graph overhead p50 {overhead['p50']:.2f} ms"
                f" p99 {overhead['p99']:.2f} ms | {lv['turns_per_s']} turns/s | shares: {share}"
            )
    r = result["chroma_retrieval"]
    lines.append(
        f"  chroma, {r['memories']} memories / {r['callers']} callers: recall p50 "
        f"{r['recall_ms']['p50']:.2f} ms p99 {r['recall_ms']['p99']:.2f} ms; prefetch p50 "
        f"{r['prefetch_ms']['p50']:.2f} ms p99 {r['prefetch_ms']['p99']:.2f} ms"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="turns at concurrency 1")
    parser.add_argument("--paced-turns", type=int, default=6, help="turns per paced call")
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    ns = parser.parse_args()
    if ns.smoke:
        ns.turns, ns.paced_turns, ns.memories, ns.queries = 20, 2, 1000, 20
    result = asyncio.run(main(ns))
    print(render(result))
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=2))
