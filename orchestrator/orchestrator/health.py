"""Named dependency checks, run concurrently with a timeout each, for `/health` and
`/health/database`.

A check is an async callable that returns details (e.g. a server version) or raises. Start-up
registers `postgres`; whatever adds a dependency registers its own (`chroma` for the vector
store), and both endpoints report it without further changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[], Awaitable[dict[str, Any] | None]]

# /health's `services` names for the checks (the spec's shape); others appear under their name.
SERVICE_NAMES = {"postgres": "database", "chroma": "vector_store"}
STORAGE_CHECKS = ("postgres", "chroma")  # what /health/database reports


@dataclass(slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "connected" if self.ok else "disconnected",
            "latency_ms": self.latency_ms,
        }
        if self.error:
            out["error"] = self.error
        out.update(self.details)
        return out


class HealthChecks:
    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self, names: list[str] | None = None) -> dict[str, CheckResult]:
        chosen = [n for n in self._checks if names is None or n in names]
        results = await asyncio.gather(*(self._run_one(self._checks[n]) for n in chosen))
        return dict(zip(chosen, results, strict=True))

    async def _run_one(self, check: Check) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                details = await check()
        except TimeoutError:
            return CheckResult(False, _ms(started), error=f"no answer within {self.timeout_s:g}s")
        except Exception as exc:
            return CheckResult(False, _ms(started), error=type(exc).__name__)
        return CheckResult(True, _ms(started), details or {})


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
