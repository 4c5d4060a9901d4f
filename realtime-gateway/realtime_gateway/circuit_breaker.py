"""A circuit breaker for the gateway's calls to the orchestrator.

Closed: every request goes through; `failure_threshold` consecutive failures (unreachable,
timed out, 5xx, malformed reply) open it. Open: requests fail at once, so a caller hears the
spoken fallback immediately instead of after a full timeout, and a struggling orchestrator is
not hammered. After `reset_after_s` one request is let through as a probe (half-open): success
closes the breaker, failure opens it for another `reset_after_s`. A refusal (4xx) proves the
orchestrator is up and counts as a success.

Per gateway process, in memory: each instance judges its own path to the orchestrator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._probe_in_flight or self._clock() >= self._opened_at + self.reset_after_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a request go now? In half-open state, only one probe at a time."""
        if self._opened_at is None:
            return True
        if self._probe_in_flight:
            return False
        if self._clock() < self._opened_at + self.reset_after_s:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        if self._opened_at is not None:
            log.info("orchestrator circuit closed")
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def abandon(self) -> None:
        """A request ended without a verdict (cancelled): let the next one probe."""
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probe_in_flight or (
            self._opened_at is None and self._failures >= self.failure_threshold
        ):
            if self._opened_at is None or self._probe_in_flight:
                log.warning(
                    "orchestrator circuit open",
                    extra={"failures": self._failures, "reset_after_s": self.reset_after_s},
                )
            self._opened_at = self._clock()
            self._probe_in_flight = False
