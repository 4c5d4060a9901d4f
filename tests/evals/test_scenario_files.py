"""Scenario files are checked before anything runs: a bad one is refused naming its file, line
and field, and `vao-eval` exits 2 without placing a call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent_eval.loading import InvalidScenarios, load_file, load_scenarios
from agent_eval.schema import ScenarioError
from agent_eval.services import ROOT
from agent_eval.yamlsource import SourceError
from tests.evals.conftest import STARTER, write

GOOD = """\
name: ok
agent: demo-harbourside-bakery
turns:
  - say: What are your opening hours?
    expect:
      contains: 7 am
"""


@pytest.mark.parametrize(
    ("text", "line", "field", "says"),
    [
        (
            GOOD.replace("      contains:", "      contians:"),
            6,
            "turns[0].expect.contians",
            "did you mean 'contains'",
        ),
        (GOOD.replace("  - say: What", "  - sya: What"), 4, "turns[0].sya", "unknown field 'sya'"),
        (GOOD + "  - expect: {contains: x}\n", 7, "turns[1]", "exactly one of say, dtmf, silence"),
        (GOOD + "  - dtmf: 12a\n", 7, "turns[1].dtmf", "not keypad digits"),
        (
            GOOD + "  - say: hi\n    expect: {matches: '(unclosed'}\n",
            8,
            "turns[1].expect.matches",
            "not a regular expression",
        ),
        (
            GOOD + "  - say: hi\n    interrupt_after_ms: 100\n",
            8,
            "turns[1].interrupt_after_ms",
            "needs a streaming provider",
        ),
        (
            GOOD + "  - say: hi\n    expect: {latency_ms: fast}\n",
            8,
            "turns[1].expect.latency_ms",
            "must be a number",
        ),
        (
            GOOD + "  - say: hi\n    expect: {action: {transfer: '555'}}\n",
            8,
            "turns[1].expect.action.transfer",
            "not an E.164 number",
        ),
        (
            GOOD + "  - say: hi\n    expect:\n      tool: {nmae: remember}\n",
            9,
            "turns[1].expect.tool.nmae",
            "did you mean 'name'",
        ),
        (
            GOOD + "  - say: hi\n    expect:\n      tool:\n        - remember\n"
            "        - {ok: true}\n",
            11,
            "turns[1].expect.tool[1]",
            "name: missing",
        ),
        (
            GOOD + "  - say: hi\n    expect:\n      tool: {name: remember, args: tea}\n",
            9,
            "turns[1].expect.tool.args",
            "must be a mapping of arguments",
        ),
        (
            GOOD + "  - say: hi\n    expect:\n      tool: {name: end_call, ok: yes please}\n",
            9,
            "turns[1].expect.tool.ok",
            "must be true or false",
        ),
        (
            GOOD + "expect:\n  tool: []\n",
            8,
            "expect.tool",
            "must not be an empty list",
        ),
        (GOOD.replace("agent: demo-harbourside-bakery\n", ""), 1, "", "agent: missing"),
        (
            GOOD.replace("provider", "x") + "provider: skype\n",
            7,
            "provider",
            "'skype' is not one of",
        ),
    ],
)
def test_an_invalid_scenario_is_refused_naming_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str, says: str
) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ScenarioError) as refused:
        load_file(path)
    error = refused.value
    assert (error.path, error.line, error.field) == (path, line, field)
    assert says in error.message
    assert str(error).startswith(f"{path}:{line}: {field + ': ' if field else ''}")


def test_yaml_that_does_not_parse_is_refused_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", GOOD + "  - say: [unclosed\n")
    with pytest.raises(SourceError) as refused:
        load_file(path)
    assert refused.value.path == path and refused.value.line >= 7


def test_every_refused_file_is_reported_and_none_runs(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD.replace("say:", "shout:"))
    write(tmp_path, "c.yaml", GOOD.replace("name: ok", "name: ok2").replace("contains", "containz"))
    with pytest.raises(InvalidScenarios) as refused:
        load_scenarios([tmp_path])
    assert [e.path.name for e in refused.value.errors] == ["b.yaml", "c.yaml"]


def test_the_command_line_refuses_an_invalid_file_with_exit_2_and_the_place(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", GOOD.replace("      contains:", "      contians:"))
    done = subprocess.run(
        [sys.executable, "-m", "agent_eval", "run", str(path), "--no-start"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{path}:6: turns[0].expect.contians: unknown field 'contians'" in done.stderr


def test_the_starter_set_is_valid_and_covers_every_behaviour_the_issue_names() -> None:
    scenarios = {s.name: s for s in load_scenarios([STARTER])}
    assert set(scenarios) >= {
        "greeting",
        "knowledge-answer",
        "transfer",
        "goodbye",
        "memory-across-calls",
        "dtmf",
        "silence-reprompt",
        "caller-interruption",
    }
    assert len(scenarios["memory-across-calls"].calls) == 2
    assert any(
        t.interrupt_after_ms is not None for t in scenarios["caller-interruption"].calls[0].turns
    )
