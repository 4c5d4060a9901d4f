"""One self-contained HTML page (inline CSS, no script, nothing fetched): the summary table,
then every call turn by turn, each turn's transcript (what the caller did, what the agent said
and did, in the provider's own format under "wire") beside its expectations. Failing turns are
marked, open, and listed at the top with links, so a reader lands on what broke."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agent_eval.reports.summary import ScenarioSummary, summarise
from agent_eval.transcript import CallRecord, Check, ScenarioRun, TurnRecord

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d1d1f;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1em;color:#555}
table.summary{border-collapse:collapse}table.summary td,table.summary th{padding:4px 12px;
border-bottom:1px solid #ddd;text-align:left}
.pass{color:#176c2e}.fail{color:#b3261e;font-weight:600}.skip{color:#8a6d00}
.turn{display:grid;grid-template-columns:1fr 1fr;gap:1em;border:1px solid #ddd;
border-radius:6px;padding:.6em 1em;margin:.5em 0}
.turn.failed{border:2px solid #b3261e;background:#fff6f5}
.said{white-space:pre-wrap}.caller{color:#555}.label{font-weight:600}
.check{margin:.2em 0}.diff{font-family:ui-monospace,monospace;white-space:pre-wrap}
pre{white-space:pre-wrap;font-size:12px;background:#f5f5f7;padding:.5em}
ul.failures li{margin:.3em 0}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def render(runs: Sequence[ScenarioRun]) -> str:
    summaries = summarise(runs)
    failing = sum(1 for s in summaries if s.status == "fail")
    title = f"Agent evaluation: {failing} failing of {len(summaries)}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>{datetime.now(UTC):%Y-%m-%d %H:%M UTC}</p>",
        _summary_table(summaries),
        _failure_links(runs),
    ]
    for i, run in enumerate(runs):
        parts.append(_run(run, i))
    parts.append("</body></html>")
    return "\n".join(parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _summary_table(summaries: list[ScenarioSummary]) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.name)}</td><td>{_e(s.provider)}</td><td>{s.turns}</td>"
        f"<td class='{s.status}'>{_e(s.result)}</td><td>{_ms(s.p50_ms)}</td>"
        f"<td>{_ms(s.p95_ms)}</td></tr>"
        for s in summaries
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("scenario", "provider", "turns", "result", "p50", "p95")
    )
    return f"<table class='summary'><tr>{head}</tr>{rows}</table>"


def _failure_links(runs: Sequence[ScenarioRun]) -> str:
    items = []
    for i, run in enumerate(runs):
        if run.error:
            items.append(
                f"<li><a href='#run-{i}'>{_e(run.scenario.name)}</a>: {_e(run.error)}</li>"
            )
        for call, turn, check in run.failures():
            anchor = _anchor(i, call, turn)
            what = check.name if check is not None else "error"
            label = f"{run.scenario.name}, call {call.index + 1}" + (
                f", {turn.label}" if turn else ""
            )
            items.append(f"<li><a href='#{anchor}'>{_e(label)}</a>: {_e(what)}</li>")
    if not items:
        return "<p class='pass'>Every scenario passed.</p>"
    return "<h2>Failures</h2><ul class='failures'>" + "".join(items) + "</ul>"


def _anchor(run_index: int, call: CallRecord, turn: TurnRecord | None) -> str:
    tail = turn.label.replace(" ", "-") if turn is not None else "call"
    return f"run-{run_index}-call-{call.index}-{tail}"


def _run(run: ScenarioRun, i: int) -> str:
    repeat = f" (run {run.repeat + 1})" if run.repeat else ""
    parts = [
        f"<section id='run-{i}'><h2>{_e(run.scenario.name)}{_e(repeat)} "
        f"<span class='{run.status}'>{_e(run.status)}</span></h2>",
        f"<p>{_e(run.scenario.description)} <code>{_e(run.scenario.path)}</code>, "
        f"{_e(run.scenario.provider)}, {run.duration_s:.1f} s</p>",
    ]
    if run.error:
        parts.append(f"<p class='fail'>{_e(run.error)}</p>")
    for call in run.calls:
        parts.append(f"<h3>call {call.index + 1} <code>{_e(call.call_id)}</code></h3>")
        parts += [_turn(i, call, turn) for turn in call.turns]
        if call.error or call.checks:
            parts.append(_call_checks(i, call))
    parts.append("</section>")
    return "\n".join(parts)


def _turn(i: int, call: CallRecord, turn: TurnRecord) -> str:
    failed = turn.status == "fail"
    reply = turn.reply
    left = [
        f"<div class='label'>{_e(turn.label)}</div>",
        f"<div class='caller'>caller {_e(turn.caller)}</div>",
    ]
    if reply is not None:
        actions = ", ".join(_e(_action(a)) for a in reply.actions) or "none"
        left.append(f"<div class='said'>agent: {_e(reply.text) or '<em>(nothing)</em>'}</div>")
        cut = " (cut short by the caller)" if reply.cut else ""
        left.append(f"<div>then: {actions}; {reply.latency_ms:.0f} ms to first words{cut}</div>")
        left.append(f"<details><summary>wire</summary><pre>{_e(reply.wire)}</pre></details>")
    if turn.error:
        left.append(f"<div class='fail'>error: {_e(turn.error)}</div>")
    right = "".join(_check(c) for c in turn.checks) or "<div class='check'>no expectations</div>"
    classes = "turn failed" if failed else "turn"
    return (
        f"<div class='{classes}' id='{_anchor(i, call, turn)}' data-status='{turn.status}'>"
        f"<div class='transcript'>{''.join(left)}</div>"
        f"<div class='expectations'>{right}</div></div>"
    )


def _call_checks(i: int, call: CallRecord) -> str:
    inner = "".join(_check(c) for c in call.checks)
    if call.error:
        inner += f"<div class='fail'>error: {_e(call.error)}</div>"
    failed = call.error is not None or any(c.status == "fail" for c in call.checks)
    classes = "turn failed" if failed else "turn"
    return (
        f"<div class='{classes}' id='{_anchor(i, call, None)}'><div class='label'>whole call</div>"
        f"<div class='expectations'>{inner}</div></div>"
    )


def _check(check: Check) -> str:
    body = (
        f"<span class='{check.status}'>{check.status}</span> "
        f"<b>{_e(check.name)}</b> {_e(check.expected)}"
    )
    if check.status != "pass":
        if check.actual:
            body += f"<div>actual: {_e(check.actual)}</div>"
        if check.detail:
            body += f"<div class='diff'>{_e(check.detail)}</div>"
    return f"<div class='check'>{body}</div>"


def _action(action: dict[str, object]) -> str:
    if action.get("type") == "transfer":
        return f"transfer to {action.get('to')}"
    return str(action.get("type"))


def write_html(runs: Sequence[ScenarioRun], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(runs), encoding="utf-8")
