"""Per-scenario figures every report shows: runs passed / failed / skipped (a pass rate when a
scenario ran several times), turns, and p50 / p95 of the turn latency (caller's words to the
agent's first words; replies the caller cut short left out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent_eval.transcript import ScenarioRun, Status, percentile


@dataclass(frozen=True)
class ScenarioSummary:
    name: str
    provider: str
    location: str
    runs: tuple[ScenarioRun, ...]
    turns: int
    p50_ms: float | None
    p95_ms: float | None

    def count(self, status: Status) -> int:
        return sum(1 for r in self.runs if r.status == status)

    @property
    def status(self) -> Status:
        if self.count("fail"):
            return "fail"
        return "skip" if self.count("skip") == len(self.runs) else "pass"

    @property
    def result(self) -> str:
        """`pass` / `FAIL` / `skip`; with repeats, the pass rate of the runs that were judged."""
        if len(self.runs) == 1:
            skipped = self.runs[0].skipped
            if self.status == "pass" and skipped:
                return f"pass, {skipped} skipped"
            return {"pass": "pass", "fail": "FAIL", "skip": "skip"}[self.status]
        judged = len(self.runs) - self.count("skip")
        if not judged:
            return f"skip ({len(self.runs)} runs)"
        passed = self.count("pass")
        return f"{passed}/{judged} ({100 * passed / judged:.0f}%)"


def summarise(runs: Sequence[ScenarioRun]) -> list[ScenarioSummary]:
    by_name: dict[str, list[ScenarioRun]] = {}
    for run in runs:
        by_name.setdefault(run.scenario.name, []).append(run)
    out = []
    for name, group in by_name.items():
        scenario = group[0].scenario
        latencies = [ms for run in group for ms in run.latencies_ms]
        turns = max(sum(len(c.turns) for c in run.calls) for run in group)
        out.append(
            ScenarioSummary(
                name=name,
                provider=scenario.provider,
                location=str(scenario.path),
                runs=tuple(group),
                turns=turns,
                p50_ms=percentile(latencies, 50),
                p95_ms=percentile(latencies, 95),
            )
        )
    return out


def failed(runs: Sequence[ScenarioRun]) -> bool:
    return any(run.status == "fail" for run in runs)
