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
    s = sorted(values)
    return {
        "n": len(s),
        "p50": percentile(s, 50),
        "p99": percentile(s, 99),
        "max": s[-1] if s else math.nan,
    }
