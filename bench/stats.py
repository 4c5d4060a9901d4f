"""Percentiles and summaries (nearest-rank, so p99 is a latency some request really had)."""

from __future__ import annotations

import math
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: list[float]) -> dict[str, Any]:
    """n, p50, p99, max; the figures are None when there are no values (JSON has no NaN)."""
    s = sorted(values)
    if not s:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(s), "p50": percentile(s, 50), "p99": percentile(s, 99), "max": s[-1]}
