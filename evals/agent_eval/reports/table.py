"""The terminal report: one table row per scenario, then each failure with what was expected
beside what the agent said (a word diff for `equals`), and each skip with its reason."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent_eval.reports.summary import summarise
from agent_eval.transcript import CallRecord, Check, ScenarioRun, TurnRecord


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def print_table(runs: Sequence[ScenarioRun], console: Console) -> None:
    table = Table(title="Agent evaluation", title_justify="left")
    for name in ("scenario", "provider", "turns", "result", "p50", "p95"):
        table.add_column(name, justify="right" if name in ("turns", "p50", "p95") else "left")
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    for s in summarise(runs):
        result = f"[{styles[s.status]}]{escape(s.result)}[/]"
        table.add_row(
            escape(s.name), s.provider, str(s.turns), result, _ms(s.p50_ms), _ms(s.p95_ms)
        )
    console.print(table)


def print_failures(runs: Sequence[ScenarioRun], console: Console) -> None:
    for run in runs:
        where = f"{run.scenario.name}" + (f" (run {run.repeat + 1})" if run.repeat else "")
        if run.error:
            console.print(f"[bold red]FAIL[/] {escape(where)}: {escape(run.error)}", soft_wrap=True)
        for call, turn, check in run.failures():
            console.print(_failure(run, where, call, turn, check), highlight=False, soft_wrap=True)
        for call, turn, check in _skips(run):
            place = _place(run, call, turn)
            console.print(
                f"[yellow]skip[/] {escape(where)} {escape(place)}: {check.name}: "
                f"{escape(check.detail)}",
                highlight=False,
                soft_wrap=True,
            )


def failure_text(
    run: ScenarioRun, call: CallRecord, turn: TurnRecord | None, check: Check | None
) -> str:
    """A failure as plain lines (also the JUnit message)."""
    lines = [f"{_place(run, call, turn)}"]
    if turn is not None:
        lines.append(f"  caller:   {turn.caller}")
    if check is None:
        lines.append(f"  error:    {(turn.error if turn is not None else None) or call.error}")
        return "\n".join(lines)
    lines.append(f"  expected: {check.name} {check.expected}")
    lines.append(f"  actual:   {check.actual}")
    if check.detail:
        lines.append(f"  {'diff' if check.name == 'equals' else 'why'}:     {check.detail}")
    return "\n".join(lines)


def _failure(
    run: ScenarioRun, where: str, call: CallRecord, turn: TurnRecord | None, check: Check | None
) -> str:
    body = escape(failure_text(run, call, turn, check))
    return f"[bold red]FAIL[/] {escape(where)} {body}"


def _place(run: ScenarioRun, call: CallRecord, turn: TurnRecord | None) -> str:
    line = turn.line if turn is not None else (run.scenario.calls[call.index].line or 1)
    label = f"call {call.index + 1}" + (f", {turn.label}" if turn is not None else "")
    return f"{label} ({run.scenario.path}:{line})"


def _skips(run: ScenarioRun) -> list[tuple[CallRecord, TurnRecord | None, Check]]:
    out: list[tuple[CallRecord, TurnRecord | None, Check]] = []
    for call in run.calls:
        out += [(call, t, c) for t in call.turns for c in t.checks if c.status == "skip"]
        out += [(call, None, c) for c in call.checks if c.status == "skip"]
    return out
