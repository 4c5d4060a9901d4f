"""The current voice provider, shared by every gateway instance on one Redis.

Without `REDIS_URL` there is one instance and the choice lives in its `DriverRegistry`. With it,
a switch through `POST /voice/providers/switch` on any instance is written to Redis (key
`<EVENTS_CHANNEL>:voice_provider`, so deployments that share a Redis stay apart, as their events
do) and every instance follows it within `SYNC_INTERVAL_S`; an instance that starts later adopts
it. The switch holds across restarts for as long as Redis keeps the key: `VOICE_PROVIDER` is the
choice until somebody switches through the API (switch again to go back). An instance that
cannot serve the chosen provider (its variables missing there) keeps its own and logs an error,
rather than answering calls with a provider it cannot drive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from realtime_gateway.drivers.registry import DRIVERS, DriverRegistry, DriverUnavailable
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 2.0


class SharedProviderChoice:
    def __init__(self, redis: aioredis.Redis, namespace: str, registry: DriverRegistry) -> None:
        self.redis = redis
        self.key = f"{namespace}:voice_provider"
        self.registry = registry
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._refused: str | None = None

    async def publish(self, name: str) -> None:
        """Record `name` for every instance (raises if Redis is unreachable)."""
        await self.redis.set(self.key, name)

    async def read(self) -> str | None:
        value = await self.redis.get(self.key)
        if value is None:
            return None
        name = value.decode() if isinstance(value, bytes) else str(value)
        return name if name in DRIVERS else None

    async def follow_once(self) -> None:
        """Adopt the shared choice if it differs from ours and this instance can serve it."""
        try:
            name = await self.read()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "cannot read the shared voice provider; keeping this instance's",
                    extra={"err": type(exc).__name__},
                )
            self._failing = True
            return
        self._failing = False
        if name is None or name == self.registry.current_name:
            return
        if not await self._can_serve(name):
            return
        previous = self.registry.current_name
        await self.registry.switch(name)
        self._refused = None
        log.warning(
            "voice provider switched on another instance: followed",
            extra={"provider": name, "previous_provider": previous},
        )

    async def _can_serve(self, name: str) -> bool:
        try:
            driver = await self.registry.get(name)
            report = await driver.validate_configuration(check_reachability=False)
        except DriverUnavailable as exc:
            problem = str(exc)
        else:
            if report.ok:
                return True
            problem = "; ".join([*(f"missing {m}" for m in report.missing), *report.problems])
        if self._refused != name:  # once per choice, not every poll
            log.error(
                "the voice provider chosen for all instances is not configured on this one; "
                "keeping its own",
                extra={
                    "provider": name,
                    "kept_provider": self.registry.current_name,
                    "problem": problem,
                },
            )
            self._refused = name
        return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="voice-provider-follower")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                await self.follow_once()
            except Exception:
                log.exception("following the shared voice provider failed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)  # cancels again if redis-py swallowed the first cancel
