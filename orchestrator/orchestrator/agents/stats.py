"""Per-agent turn statistics for `GET /agents/{id}/status`: turns handled, fallbacks, latencies.

Durable figures come from the store (`stored_turn_stats`: every instance, across restarts); this
process also keeps its own counters since start (turns, model fallbacks, errors) and a bounded
window of its latencies. Percentiles are nearest-rank over the window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import asyncpg

WINDOW = 1000


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class AgentCounters:
    turns: int = 0
    fallbacks: int = 0
    errors: int = 0
    last_turn_at: float | None = None
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))


class AgentStats:
    def __init__(self) -> None:
        self._agents: dict[str, AgentCounters] = {}
        self.started_at = time.time()

    def record(self, agent_id: str, latency_ms: float, *, fallback: bool = False) -> None:
        counters = self._agents.setdefault(agent_id, AgentCounters())
        counters.turns += 1
        counters.fallbacks += int(fallback)
        counters.last_turn_at = time.time()
        counters.latencies_ms.append(latency_ms)

    def record_error(self, agent_id: str) -> None:
        self._agents.setdefault(agent_id, AgentCounters()).errors += 1

    def forget(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)

    def snapshot(self, agent_id: str) -> dict[str, object]:
        counters = self._agents.get(agent_id, AgentCounters())
        window = sorted(counters.latencies_ms)
        return {
            "turns_since_start": counters.turns,
            "fallbacks_since_start": counters.fallbacks,
            "errors_since_start": counters.errors,
            "last_turn_at": counters.last_turn_at,
            "latency_ms": {
                "window": len(window),
                "p50": round(percentile(window, 50), 3),
                "p95": round(percentile(window, 95), 3),
                "p99": round(percentile(window, 99), 3),
                "max": round(window[-1], 3) if window else 0.0,
            },
        }


async def stored_turn_stats(pool: asyncpg.Pool, agent_id: str) -> dict[str, object]:
    """From the store, so it survives restarts and covers every instance: the turns this agent
    answered (greetings excluded) and its orchestrator time (`agent_total`) percentiles over the
    last `WINDOW` of them."""
    row = await pool.fetchrow(
        "WITH answered AS ("
        " SELECT m.id, m.timings FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE c.agent_id = $1 AND m.role = 'assistant' AND m.turn_id <> 'greeting'),"
        " recent AS (SELECT (timings->>'agent_total')::float8 AS ms FROM answered"
        " WHERE timings ? 'agent_total' ORDER BY id DESC LIMIT $2)"
        " SELECT (SELECT count(*) FROM answered) AS turns, (SELECT count(*) FROM recent) AS n,"
        " percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms) AS p"
        " FROM recent",
        agent_id,
        WINDOW,
    )
    p = list(row["p"] or [0.0, 0.0, 0.0]) if row else [0.0, 0.0, 0.0]
    return {
        "turns_handled": int(row["turns"]) if row else 0,
        "latency_ms": {
            "window": int(row["n"]) if row else 0,
            "p50": round(float(p[0]), 3),
            "p95": round(float(p[1]), 3),
            "p99": round(float(p[2]), 3),
        },
    }
