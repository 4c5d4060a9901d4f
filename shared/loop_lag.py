"""Event-loop lag, for both services: how late the loop runs a timer due every 100 ms.

A phone turn is a few milliseconds of CPU; anything that keeps the event loop from running
(CPU-bound code, a native call that holds the GIL in a "background" thread) delays every call in
progress on the instance at once. The monitor makes that visible:

- `event_loop_lag_seconds` (histogram, both services' `/metrics`): each tick's delay past its
  due time;
- a WARNING `event loop blocked` (`blocked_ms`: the worst delay since the last warning, `times`:
  how many ticks were 100 ms or more late) at most every 10 s, so an overloaded process does not
  flood its log.

Found with it, and the reason it exists: embedded Chroma's `add` holds the GIL for its whole
run (its Rust bindings release it for reads only), ~6-20 ms per memory written and, when it
reorganises its index, 100 ms to seconds (BENCHMARKS.md). Cost: ten wake-ups a second.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Histogram

from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TICK_S = 0.1
BLOCKED_S = 0.1  # a tick this late is the loop blocked, not scheduling noise
WARN_EVERY_S = 10.0


def loop_lag_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "event_loop_lag_seconds",
        "How late the event loop ran a timer due every 100 ms (the loop was blocked that long).",
        buckets=LAG_BUCKETS,
        registry=registry,
    )


class LoopLagMonitor:
    def __init__(
        self,
        histogram: Histogram,
        *,
        tick_s: float = TICK_S,
        blocked_s: float = BLOCKED_S,
        warn_every_s: float = WARN_EVERY_S,
    ) -> None:
        self.histogram = histogram
        self.tick_s = tick_s
        self.blocked_s = blocked_s
        self.warn_every_s = warn_every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        times, worst = 0, 0.0
        last_warning = float("-inf")
        while True:
            due = loop.time() + self.tick_s
            await asyncio.sleep(self.tick_s)
            lag = max(0.0, loop.time() - due)
            self.histogram.observe(lag)
            if lag < self.blocked_s:
                continue
            times, worst = times + 1, max(worst, lag)
            now = loop.time()
            if now - last_warning >= self.warn_every_s:
                log.warning(
                    "event loop blocked",
                    extra={"blocked_ms": round(worst * 1000, 1), "times": times},
                )
                times, worst, last_warning = 0, 0.0, now
