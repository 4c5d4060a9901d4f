"""Per-agent turn statistics for `GET /agents/{id}/status`: turns handled, fallbacks, latencies.

Kept in process (a bounded window of recent latencies per agent); the durable count of turns an
agent answered comes from the store. Percentiles are nearest-rank over the window.
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


async def turns_handled(pool: asyncpg.Pool, agent_id: str) -> int:
    """Turns this agent answered, from the store (greetings excluded); survives restarts."""
    value = await pool.fetchval(
        "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE c.agent_id = $1 AND m.role = 'assistant' AND m.turn_id <> 'greeting'",
        agent_id,
    )
    return int(value or 0)
