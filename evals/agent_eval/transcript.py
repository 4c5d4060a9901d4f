"""What a run observed: each reply as the caller got it, each check's outcome, per turn, call,
scenario run. The reports (table, JUnit, HTML) and the checks read these; nothing here talks
to a service."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_eval.schema import Scenario

Status = Literal["pass", "fail", "skip"]


@dataclass
class Reply:
    """One answer of the agent, provider-neutral: what was said, and what the call does next
    (`actions`: `{"type": "gather" | "transfer" | "hangup", "to"?, "reason"?}`)."""

    text: str
    actions: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float = 0.0  # from the caller's words to the first words of the reply
    total_ms: float = 0.0  # ... to the whole reply
    wire: str = ""  # the answer in the provider's own format (TwiML, NCCO, frames), for reports
    cut: bool = False  # the caller talked over it before it finished
    turn_id: str | None = None  # the conversation's id for this turn, when the path knows it

    @property
    def final_action(self) -> dict[str, Any] | None:
        ending = [a for a in self.actions if a.get("type") in ("transfer", "hangup")]
        if ending:
            return ending[-1]
        return {"type": "gather"} if any(a.get("type") == "gather" for a in self.actions) else None

    @property
    def ended(self) -> bool:
        """The agent ended the call with this reply (transferred or hung up)."""
        final = self.final_action
        return final is not None and final["type"] in ("transfer", "hangup")


@dataclass
class Check:
    name: str
    status: Status
    expected: str
    actual: str = ""
    detail: str = ""  # a diff, or why it failed or was skipped


@dataclass
class TurnRecord:
    label: str  # "greeting", "turn 2"
    caller: str  # what the caller did
    line: int
    reply: Reply | None = None
    turn_id: str | None = None  # the conversation's turn id, when known
    checks: list[Check] = field(default_factory=list)
    said_by: int = 0  # transcript lines up to this reply (what a rubric about it reads)
    error: str | None = None

    @property
    def status(self) -> Status:
        return _status(self.checks, self.error)


@dataclass
class CallRecord:
    index: int
    call_id: str
    turns: list[TurnRecord] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    conversation: dict[str, Any] | None = None  # GET /conversations/{id}, read after the call

    @property
    def status(self) -> Status:
        """Of what was checked: a turn without expectations neither passes nor skips a call."""
        statuses = [t.status for t in self.turns if t.checks or t.error]
        if self.checks or self.error:
            statuses.append(_status(self.checks, self.error))
        return _worst(statuses) if statuses else "pass"


@dataclass
class ScenarioRun:
    scenario: Scenario
    repeat: int = 0
    calls: list[CallRecord] = field(default_factory=list)
    error: str | None = None  # the run could not be set up or driven
    duration_s: float = 0.0

    @property
    def status(self) -> Status:
        if self.error:
            return "fail"
        return _worst([c.status for c in self.calls]) if self.calls else "fail"

    @property
    def skipped(self) -> int:
        """Checks not made (a rubric or a simulated caller without a model key)."""
        checks = [c for call in self.calls for t in call.turns for c in t.checks]
        checks += [c for call in self.calls for c in call.checks]
        return sum(1 for c in checks if c.status == "skip")

    @property
    def latencies_ms(self) -> list[float]:
        return [
            t.reply.latency_ms
            for c in self.calls
            for t in c.turns
            if t.reply is not None and not t.reply.cut
        ]

    def failures(self) -> list[tuple[CallRecord, TurnRecord | None, Check | None]]:
        """Every failed check (and every error), with where it happened."""
        out: list[tuple[CallRecord, TurnRecord | None, Check | None]] = []
        for call in self.calls:
            for turn in call.turns:
                if turn.error:
                    out.append((call, turn, None))
                out += [(call, turn, c) for c in turn.checks if c.status == "fail"]
            if call.error:
                out.append((call, None, None))
            out += [(call, None, c) for c in call.checks if c.status == "fail"]
        return out


def _status(checks: list[Check], error: str | None) -> Status:
    if error or any(c.status == "fail" for c in checks):
        return "fail"
    if checks and all(c.status == "skip" for c in checks):
        return "skip"
    return "pass"


def _worst(statuses: list[Status]) -> Status:
    if "fail" in statuses:
        return "fail"
    if statuses and all(s == "skip" for s in statuses):
        return "skip"
    return "pass"


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile (p50 of one value is that value)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
