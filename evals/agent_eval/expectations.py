"""Checking a reply (or a whole call) against its expectations: pure functions over what was
observed, one `Check` per expectation, each failing with what was expected beside what came.

Text is compared as a caller hears it: whitespace runs are one space; `contains`,
`not_contains` and `recalled` ignore case; `equals` (what an exported call expects) is exact
and fails with a word diff. A `tool` expectation is met by a tool the conversation record says
the turn (or the call) ran, with the same name, every expected argument (text as spoken,
ignoring case; a mapping as a subset) and, if given, the same outcome; it fails listing what
ran. Rubrics are judged by the model (`judge.py`), not here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent_eval.schema import ActionExpect, CallExpect, ToolExpect, TurnExpect, describe_args
from agent_eval.transcript import Check, Reply, Status


def spoken(text: str) -> str:
    return " ".join(text.split())


def word_diff(expected: str, actual: str) -> str:
    """`[-removed-]{+added+}` between two texts, word by word."""
    a, b = spoken(expected).split(" "), spoken(actual).split(" ")
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out += a[i1:i2]
            continue
        if i2 > i1:
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def check_turn(
    expect: TurnExpect,
    reply: Reply,
    *,
    latency_budget_ms: float | None = None,
    interrupted: bool | None = None,
    memories: Sequence[str] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[Check]:
    """Every expectation of one turn but its rubric. `interrupted`: whether the conversation
    record marks this reply as cut short (None: not known); `memories`: what was remembered of
    the caller before this call (for `recalled`); `tools`: the tools the conversation record
    says the turn ran (None: the record has no reply for it)."""
    said = spoken(reply.text)
    checks: list[Check] = []
    if expect.equals is not None:
        ok = said == spoken(expect.equals)
        diff = "" if ok else word_diff(expect.equals, said)
        checks.append(Check("equals", _ok(ok), spoken(expect.equals), said, diff))
    for text in expect.contains:
        ok = spoken(text).lower() in said.lower()
        checks.append(Check("contains", _ok(ok), text, said, "" if ok else f"'{text}' not said"))
    for text in expect.not_contains:
        ok = spoken(text).lower() not in said.lower()
        checks.append(Check("not_contains", _ok(ok), text, said, "" if ok else f"'{text}' said"))
    for pattern in expect.matches:
        ok = re.search(pattern, said) is not None
        checks.append(Check("matches", _ok(ok), pattern, said, "" if ok else "no match"))
    if expect.action is not None:
        checks.append(check_action(expect.action, reply))
    budget = expect.latency_ms if expect.latency_ms is not None else latency_budget_ms
    if budget is not None and not reply.cut:
        ok = reply.latency_ms <= budget
        checks.append(
            Check(
                "latency_ms",
                _ok(ok),
                f"<= {budget:g} ms",
                f"{reply.latency_ms:.0f} ms",
                "" if ok else f"{reply.latency_ms - budget:.0f} ms over budget",
            )
        )
    if expect.interrupted is not None:
        checks.append(_interrupted(expect.interrupted, interrupted))
    for text in expect.recalled:
        checks.append(_recalled(text, said, memories))
    checks += check_tools(expect.tools, tools)
    return checks


def check_tools(
    expected: Sequence[ToolExpect], ran: Sequence[Mapping[str, Any]] | None
) -> list[Check]:
    """One check per expected tool: some tool that ran matches it."""
    actual = _describe_tools(ran)
    checks: list[Check] = []
    for tool in expected:
        if ran is None:
            detail = "the conversation record has no reply for this turn"
            checks.append(Check("tool", "fail", tool.describe(), actual, detail))
            continue
        ok = any(_tool_matches(tool, call) for call in ran)
        detail = "" if ok else _tool_miss(tool, ran)
        checks.append(Check("tool", _ok(ok), tool.describe(), actual, detail))
    return checks


def _tool_matches(expect: ToolExpect, call: Mapping[str, Any]) -> bool:
    if call.get("name") != expect.name:
        return False
    if expect.ok is not None and call.get("ok") is not expect.ok:
        return False
    return not expect.args or _holds(expect.args, call.get("args"))


def _holds(expected: Any, actual: Any) -> bool:
    """`actual` is `expected`, or holds it: every key of an expected mapping (recursively), text
    as spoken ignoring case, other values equal and of the same kind."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _holds(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, str):
        return isinstance(actual, str) and spoken(expected).lower() == spoken(actual).lower()
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_holds(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


def _tool_miss(expect: ToolExpect, ran: Sequence[Mapping[str, Any]]) -> str:
    named = [c for c in ran if c.get("name") == expect.name]
    if not named:
        return f"{expect.name} did not run" if ran else "no tool ran"
    if expect.args and all(c.get("args") is None for c in named):
        return f"{expect.name} ran; its arguments are withheld from this reader (a viewer)"
    if expect.args and not any(_holds(expect.args, c.get("args")) for c in named):
        return f"{expect.name} ran with other arguments"
    return f"{expect.name} {'failed' if expect.ok else 'succeeded'}"


def _describe_tools(ran: Sequence[Mapping[str, Any]] | None) -> str:
    if ran is None:
        return "unknown"
    if not ran:
        return "(no tool ran)"
    out = []
    for call in ran:
        args = call.get("args")
        shown = "(arguments withheld)" if args is None else f"({describe_args(args)})"
        out.append(f"{call.get('name')}{shown} {'ok' if call.get('ok') else 'failed'}")
    return "; ".join(out)


def check_action(expect: ActionExpect, reply: Reply | None) -> Check:
    final = reply.final_action if reply is not None else None
    actual = _describe(final)
    ok = final is not None and final["type"] == expect.kind
    if ok and expect.to is not None:
        ok = final is not None and final.get("to") == expect.to
    return Check("action", _ok(ok), expect.describe(), actual, "" if ok else f"got {actual}")


def check_call(
    expect: CallExpect,
    last_reply: Reply | None,
    memories: Sequence[str],
    tools: Sequence[Mapping[str, Any]] = (),
) -> list[Check]:
    """The whole call's expectations but its rubric: how it ended, what was remembered, which
    tools ran (`tools`: every turn's, in order)."""
    checks: list[Check] = []
    if expect.action is not None:
        check = check_action(expect.action, last_reply)
        check.name = "call action"
        checks.append(check)
    for check in check_tools(expect.tools, tools):
        check.name = "call tool"
        checks.append(check)
    for text in expect.memory_written:
        found = [m for m in memories if spoken(text).lower() in spoken(m).lower()]
        actual = "; ".join(memories) if memories else "(nothing remembered)"
        checks.append(
            Check(
                "memory_written",
                _ok(bool(found)),
                text,
                found[0] if found else actual,
                "" if found else "no memory of the caller holds it",
            )
        )
    return checks


def memory_holds(texts: Sequence[str], memories: Sequence[str]) -> bool:
    """Every text is in some memory (what `memory_written` waits for)."""
    lowered = [spoken(m).lower() for m in memories]
    return all(any(spoken(t).lower() in m for m in lowered) for t in texts)


def _interrupted(expected: bool, actual: bool | None) -> Check:
    if actual is None:
        return Check(
            "interrupted",
            "fail",
            str(expected).lower(),
            "unknown",
            "the conversation record has no reply for this turn",
        )
    ok = actual == expected
    detail = "" if ok else ("the reply was not cut short" if expected else "the reply was cut")
    return Check("interrupted", _ok(ok), str(expected).lower(), str(actual).lower(), detail)


def _recalled(text: str, said: str, memories: Sequence[str] | None) -> Check:
    in_reply = spoken(text).lower() in said.lower()
    remembered = memories is not None and memory_holds([text], memories)
    ok = in_reply and remembered
    if ok:
        detail = ""
    elif not in_reply:
        detail = f"'{text}' not said"
    else:
        detail = f"'{text}' said, but no memory of the caller held it before this call"
    return Check("recalled", _ok(ok), text, said, detail)


def _describe(action: dict[str, object] | None) -> str:
    if action is None:
        return "no action"
    if action.get("type") == "transfer":
        return f"transfer to {action.get('to')}"
    return str(action.get("type"))


def _ok(ok: bool) -> Status:
    return "pass" if ok else "fail"
