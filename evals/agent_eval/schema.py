"""The scenario schema (documented in evals/README.md) and its validation.

A scenario file is refused as a whole, with one `ScenarioError` naming the file, the line and
the field (`calls[0].turns[2].expect.contains`) and what is wrong with it: an unknown field
(with the nearest known name), a wrong type, a missing caller action, an interruption on a
provider that cannot stream, an invalid regular expression. Nothing of a refused file runs.
The validated scenario is plain frozen dataclasses: the runner never sees raw YAML.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent_eval.yamlsource import PathKey, Source

PROVIDERS = (
    "generic-http",
    "generic-http-stream",
    "twilio",
    "twilio-relay",
    "vonage",
    "aws-connect",
)
STREAMING = frozenset({"generic-http-stream", "twilio-relay"})
ACTIONS = ("gather", "transfer", "hangup")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
DTMF = re.compile(r"^[0-9*#]{1,32}$")
MAX_SIMULATED_TURNS = 20

CallerAction = Literal["say", "dtmf", "silence"]


class ScenarioError(ValueError):
    """A scenario file refused: `file:line: field: message`."""

    def __init__(self, path: Path, line: int, field_name: str, message: str) -> None:
        where = f"{field_name}: " if field_name else ""
        super().__init__(f"{path}:{line}: {where}{message}")
        self.path, self.line, self.field, self.message = path, line, field_name, message


@dataclass(frozen=True)
class ActionExpect:
    kind: str  # gather | transfer | hangup
    to: str | None = None  # transfer: the number the call must be transferred to

    def describe(self) -> str:
        return f"transfer to {self.to}" if self.to else self.kind


@dataclass(frozen=True)
class ToolExpect:
    """A tool the agent must have run: by name, with at least these arguments (`args`, a
    subset: text compared as spoken, case-insensitively), succeeding or not (`ok`)."""

    name: str
    args: Mapping[str, Any] | None = None
    ok: bool | None = None

    def describe(self) -> str:
        out = self.name + (f"({describe_args(self.args)})" if self.args else "")
        return out if self.ok is None else f"{out} {'ok' if self.ok else 'failed'}"


def describe_args(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


@dataclass(frozen=True)
class TurnExpect:
    """What one reply must (not) be. Empty: anything goes (the turn is only driven)."""

    equals: str | None = None
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    matches: tuple[str, ...] = ()
    action: ActionExpect | None = None
    latency_ms: float | None = None
    interrupted: bool | None = None
    recalled: tuple[str, ...] = ()
    tools: tuple[ToolExpect, ...] = ()  # `tool:` in the file
    rubric: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Turn:
    action: CallerAction
    text: str = ""  # words (say) or digits (dtmf)
    interrupt_after_ms: float | None = None  # said this long into the previous reply
    expect: TurnExpect = field(default_factory=TurnExpect)
    line: int = 0

    def describe(self) -> str:
        if self.action == "say":
            return f'says "{self.text}"'
        if self.action == "dtmf":
            return f"presses {self.text}"
        return "stays silent"


@dataclass(frozen=True)
class Simulated:
    """A caller played by the model: a persona and a goal instead of fixed lines."""

    persona: str
    goal: str
    max_turns: int = 8
    line: int = 0


@dataclass(frozen=True)
class CallExpect:
    memory_written: tuple[str, ...] = ()
    action: ActionExpect | None = None  # how the call ended (its last action)
    tools: tuple[ToolExpect, ...] = ()  # run in some turn of the call
    rubric: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Call:
    greeting: TurnExpect = field(default_factory=TurnExpect)
    turns: tuple[Turn, ...] = ()
    expect: CallExpect = field(default_factory=CallExpect)
    simulated: Simulated | None = None
    line: int = 0


@dataclass(frozen=True)
class KnowledgeDoc:
    title: str
    text: str


@dataclass(frozen=True)
class AgentRef:
    """An existing agent (`id`), or one made for the run from `config` (deleted afterwards)."""

    id: str | None = None
    config: Mapping[str, Any] | None = None
    knowledge: tuple[KnowledgeDoc, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    agent: AgentRef
    provider: str = "generic-http"
    calls: tuple[Call, ...] = ()
    description: str = ""
    caller: str | None = None  # None: a fresh number for each run (memory kept apart)
    to: str | None = None
    latency_ms: float | None = None  # every turn's budget unless the turn sets its own

    @property
    def turn_count(self) -> int:
        return sum(len(c.turns) + 1 for c in self.calls)


# ---- validation ---------------------------------------------------------------------------


def field_name(where: PathKey) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class _Reader:
    def __init__(self, source: Source) -> None:
        self.source = source

    def fail(self, where: PathKey, message: str) -> ScenarioError:
        line = self.source.line_of(where)
        return ScenarioError(self.source.path, line, field_name(where), message)

    def line(self, where: PathKey) -> int:
        return self.source.line_of(where)

    def mapping(
        self, value: Any, where: PathKey, allowed: Sequence[str], what: str
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a mapping ({what}), not {_kind(value)}")
        for key in value:
            if key not in allowed:
                near = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f" (known: {', '.join(allowed)})"
                raise self.fail((*where, str(key)), f"unknown field '{key}'{hint}")
        return value

    def text(self, value: Any, where: PathKey, *, empty: bool = False) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(where, f"must be text, not {_kind(value)}")
        text = str(value)
        if not empty and not text.strip():
            raise self.fail(where, "must not be empty")
        return text

    def texts(self, value: Any, where: PathKey) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(where, "must not be an empty list")
        base = where if isinstance(value, list) else None
        return tuple(self.text(v, (*base, i) if base else where) for i, v in enumerate(items))

    def number(self, value: Any, where: PathKey, *, minimum: float = 0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"must be a number, not {_kind(value)}")
        if value < minimum:
            raise self.fail(where, f"must be at least {minimum:g}")
        return float(value)

    def flag(self, value: Any, where: PathKey) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, f"must be true or false, not {_kind(value)}")
        return value

    def number_e164(self, value: Any, where: PathKey) -> str:
        text = self.text(value, where).replace(" ", "")
        if not E164.match(text):
            raise self.fail(where, f"'{value}' is not an E.164 number (e.g. +15550002222)")
        return text


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


TURN_EXPECT_FIELDS = (
    "equals",
    "contains",
    "not_contains",
    "matches",
    "action",
    "latency_ms",
    "interrupted",
    "recalled",
    "tool",
    "rubric",
)
CALL_EXPECT_FIELDS = ("memory_written", "action", "tool", "rubric")
TOOL_FIELDS = ("name", "args", "ok")
TURN_FIELDS = ("say", "dtmf", "silence", "interrupt_after_ms", "expect")
CALL_FIELDS = ("greeting", "turns", "expect", "simulated")
SCENARIO_FIELDS = (
    "name",
    "description",
    "agent",
    "provider",
    "caller",
    "to",
    "latency_ms",
    "calls",
    *CALL_FIELDS,
)


def parse(source: Source) -> Scenario:
    r = _Reader(source)
    data = r.mapping(source.data, (), SCENARIO_FIELDS, "a scenario")
    provider = str(data.get("provider", "generic-http"))
    if provider not in PROVIDERS:
        raise r.fail(("provider",), f"'{provider}' is not one of {', '.join(PROVIDERS)}")
    if "agent" not in data:
        raise r.fail(
            (), "agent: missing (an agent id, or {config: {...}} for one made for the run)"
        )
    single = [k for k in CALL_FIELDS if k in data]
    if "calls" in data and single:
        raise r.fail((single[0],), "use either 'calls' or one call's fields at the top, not both")
    if "calls" in data:
        raw_calls = data["calls"]
        if not isinstance(raw_calls, list) or not raw_calls:
            raise r.fail(("calls",), "must be a list of at least one call")
        calls = tuple(_call(r, c, ("calls", i), provider) for i, c in enumerate(raw_calls))
    elif single:
        calls = (_call(r, {k: data[k] for k in single}, (), provider),)
    else:
        raise r.fail((), "the scenario has no call: add 'turns' (or 'calls', or 'simulated')")
    return Scenario(
        name=r.text(data.get("name", source.path.stem), ("name",)),
        path=source.path,
        agent=_agent(r, data["agent"]),
        provider=provider,
        calls=calls,
        description=r.text(data.get("description", ""), ("description",), empty=True),
        caller=r.number_e164(data["caller"], ("caller",)) if "caller" in data else None,
        to=r.number_e164(data["to"], ("to",)) if "to" in data else None,
        latency_ms=r.number(data["latency_ms"], ("latency_ms",), minimum=1)
        if "latency_ms" in data
        else None,
    )


def _agent(r: _Reader, value: Any) -> AgentRef:
    where: PathKey = ("agent",)
    if isinstance(value, str):
        return AgentRef(id=r.text(value, where))
    data = r.mapping(value, where, ("id", "config", "knowledge"), "an agent id or {config: ...}")
    if ("id" in data) == ("config" in data):
        raise r.fail(where, "give either 'id' (an existing agent) or 'config' (made for the run)")
    if "id" in data:
        if "knowledge" in data:
            raise r.fail((*where, "knowledge"), "only an agent made for the run takes knowledge")
        return AgentRef(id=r.text(data["id"], (*where, "id")))
    config = data["config"]
    if not isinstance(config, dict):
        raise r.fail((*where, "config"), f"must be a mapping, not {_kind(config)}")
    docs: list[KnowledgeDoc] = []
    raw_docs = data.get("knowledge", [])
    if not isinstance(raw_docs, list):
        raise r.fail((*where, "knowledge"), "must be a list of {title, text}")
    for i, doc in enumerate(raw_docs):
        at: PathKey = (*where, "knowledge", i)
        d = r.mapping(doc, at, ("title", "text"), "a knowledge document")
        if "text" not in d:
            raise r.fail(at, "text: missing")
        docs.append(
            KnowledgeDoc(
                r.text(d.get("title", f"document {i + 1}"), (*at, "title")),
                r.text(d["text"], (*at, "text")),
            )
        )
    return AgentRef(config=config, knowledge=tuple(docs))


def _call(r: _Reader, value: Any, where: PathKey, provider: str) -> Call:
    data = r.mapping(value, where, CALL_FIELDS, "a call")
    if "turns" in data and "simulated" in data:
        raise r.fail(
            (*where, "simulated"), "a call has fixed 'turns' or a 'simulated' caller, not both"
        )
    turns: list[Turn] = []
    raw_turns = data.get("turns", [])
    if not isinstance(raw_turns, list):
        raise r.fail((*where, "turns"), f"must be a list of turns, not {_kind(raw_turns)}")
    for i, raw in enumerate(raw_turns):
        turns.append(_turn(r, raw, (*where, "turns", i), provider, first=i == 0))
    simulated = (
        _simulated(r, data["simulated"], (*where, "simulated")) if "simulated" in data else None
    )
    return Call(
        greeting=_turn_expect(r, data.get("greeting", {}), (*where, "greeting")),
        turns=tuple(turns),
        expect=_call_expect(r, data.get("expect", {}), (*where, "expect")),
        simulated=simulated,
        line=r.line(where),
    )


def _turn(r: _Reader, value: Any, where: PathKey, provider: str, first: bool) -> Turn:
    data = r.mapping(value, where, TURN_FIELDS, "a turn: say, dtmf or silence, and expect")
    given = [k for k in ("say", "dtmf", "silence") if k in data]
    if len(given) != 1:
        problem = "has none" if not given else f"has {' and '.join(given)}"
        raise r.fail(where, f"a turn needs exactly one of say, dtmf, silence ({problem})")
    action: CallerAction = given[0]
    text = ""
    if action == "say":
        text = r.text(data["say"], (*where, "say"))
    elif action == "dtmf":
        text = r.text(data["dtmf"], (*where, "dtmf"))
        if not DTMF.match(text):
            raise r.fail((*where, "dtmf"), f"'{text}' is not keypad digits (0-9, * and #)")
    elif data["silence"] is not True:
        raise r.fail((*where, "silence"), "write 'silence: true'")
    elif provider in STREAMING:
        raise r.fail(
            (*where, "silence"), f"{provider} has no silent turn (the provider handles it)"
        )
    interrupt = None
    if "interrupt_after_ms" in data:
        at = (*where, "interrupt_after_ms")
        if provider not in STREAMING:
            raise r.fail(
                at,
                f"an interruption needs a streaming provider "
                f"({', '.join(sorted(STREAMING))}), not {provider}",
            )
        if first:
            raise r.fail(at, "the first turn has no reply of the agent's to talk over")
        if action != "say":
            raise r.fail(at, "only spoken words interrupt the agent")
        interrupt = r.number(data["interrupt_after_ms"], at)
    return Turn(
        action=action,
        text=text,
        interrupt_after_ms=interrupt,
        expect=_turn_expect(r, data.get("expect", {}), (*where, "expect")),
        line=r.line(where),
    )


def _turn_expect(r: _Reader, value: Any, where: PathKey) -> TurnExpect:
    data = r.mapping(value, where, TURN_EXPECT_FIELDS, "expectations")
    matches = r.texts(data["matches"], (*where, "matches")) if "matches" in data else ()
    for i, pattern in enumerate(matches):
        try:
            re.compile(pattern)
        except re.error as exc:
            at = (
                (*where, "matches", i) if isinstance(data["matches"], list) else (*where, "matches")
            )
            raise r.fail(at, f"not a regular expression: {exc}") from None

    def opt_texts(key: str) -> tuple[str, ...]:
        return r.texts(data[key], (*where, key)) if key in data else ()

    return TurnExpect(
        equals=r.text(data["equals"], (*where, "equals"), empty=True) if "equals" in data else None,
        contains=opt_texts("contains"),
        not_contains=opt_texts("not_contains"),
        matches=matches,
        action=_action(r, data["action"], (*where, "action")) if "action" in data else None,
        latency_ms=r.number(data["latency_ms"], (*where, "latency_ms"), minimum=1)
        if "latency_ms" in data
        else None,
        interrupted=r.flag(data["interrupted"], (*where, "interrupted"))
        if "interrupted" in data
        else None,
        recalled=opt_texts("recalled"),
        tools=_tools(r, data["tool"], (*where, "tool")) if "tool" in data else (),
        rubric=r.text(data["rubric"], (*where, "rubric")) if "rubric" in data else None,
        line=r.line(where),
    )


def _call_expect(r: _Reader, value: Any, where: PathKey) -> CallExpect:
    data = r.mapping(value, where, CALL_EXPECT_FIELDS, "expectations of the whole call")
    return CallExpect(
        memory_written=r.texts(data["memory_written"], (*where, "memory_written"))
        if "memory_written" in data
        else (),
        action=_action(r, data["action"], (*where, "action")) if "action" in data else None,
        tools=_tools(r, data["tool"], (*where, "tool")) if "tool" in data else (),
        rubric=r.text(data["rubric"], (*where, "rubric")) if "rubric" in data else None,
        line=r.line(where),
    )


def _tools(r: _Reader, value: Any, where: PathKey) -> tuple[ToolExpect, ...]:
    """`tool: remember`, `tool: {name: remember, args: {fact: tea}, ok: true}`, or a list."""
    if not isinstance(value, list):
        return (_tool(r, value, where),)
    if not value:
        raise r.fail(where, "must not be an empty list")
    return tuple(_tool(r, v, (*where, i)) for i, v in enumerate(value))


def _tool(r: _Reader, value: Any, where: PathKey) -> ToolExpect:
    if isinstance(value, str):
        return ToolExpect(r.text(value, where))
    data = r.mapping(value, where, TOOL_FIELDS, "a tool name, or {name, args, ok}")
    if "name" not in data:
        raise r.fail(where, "name: missing (the tool's name, e.g. remember)")
    args = data.get("args")
    if args is not None and not isinstance(args, dict):
        raise r.fail((*where, "args"), f"must be a mapping of arguments, not {_kind(args)}")
    return ToolExpect(
        name=r.text(data["name"], (*where, "name")),
        args=args,
        ok=r.flag(data["ok"], (*where, "ok")) if "ok" in data else None,
    )


def _action(r: _Reader, value: Any, where: PathKey) -> ActionExpect:
    if isinstance(value, str):
        if value not in ACTIONS:
            raise r.fail(where, f"'{value}' is not one of {', '.join(ACTIONS)}")
        return ActionExpect(value)
    data = r.mapping(value, where, ("transfer",), "an action, or {transfer: <number>}")
    if "transfer" not in data:
        raise r.fail(where, "write an action name, or {transfer: <number>}")
    return ActionExpect("transfer", r.number_e164(data["transfer"], (*where, "transfer")))


def _simulated(r: _Reader, value: Any, where: PathKey) -> Simulated:
    data = r.mapping(value, where, ("persona", "goal", "max_turns"), "a simulated caller")
    for key in ("persona", "goal"):
        if key not in data:
            raise r.fail(where, f"{key}: missing")
    turns = int(r.number(data.get("max_turns", 8), (*where, "max_turns"), minimum=1))
    if turns > MAX_SIMULATED_TURNS:
        raise r.fail((*where, "max_turns"), f"must be at most {MAX_SIMULATED_TURNS}")
    return Simulated(
        persona=r.text(data["persona"], (*where, "persona")),
        goal=r.text(data["goal"], (*where, "goal")),
        max_turns=turns,
        line=r.line(where),
    )
