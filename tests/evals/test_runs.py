"""Scenarios run against the real services (one set for the session, started as `make eval`
starts its own): the starter set passes offline, every provider path drives a whole call
signed as its provider signs, a wrong expectation fails with a readable diff and exit 1,
a tool expectation is checked against the tools the conversation record says each turn ran,
rubrics are skipped (not passed) without a model key."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent_eval.reports.summary import summarise
from agent_eval.runner import RunOptions
from tests.evals.conftest import STARTER, EvalServices, write

pytestmark = pytest.mark.slow

PATHS = """\
name: paths-{provider}
agent: demo-harbourside-bakery
provider: {provider}
turns:
  - say: What are your opening hours?
    expect: {{contains: 7 am to 6 pm, action: gather}}
  - dtmf: "5"
    expect: {{contains: You pressed 5}}
  - silence: true
    expect: {{action: gather}}
  - say: Can I speak to a person?
    expect: {{action: {{transfer: "+15550100199"}}}}
"""

RELAY = """\
name: paths-twilio-relay
agent:
  config:
    greeting: Hello from the relay agent.
    transfer_number: "+15550100123"
    voice_mode: relay
  knowledge:
    - title: hours
      text: We are open every day from 9 am to 5 pm.
provider: twilio-relay
greeting: {equals: Hello from the relay agent.}
turns:
  - say: When are you open?
    expect: {contains: 9 am to 5 pm, action: gather}
  - dtmf: "5"
    expect: {contains: You pressed 5}
  - say: Can I speak to a person?
    expect: {action: {transfer: "+15550100123"}}
"""

WRONG = """\
name: wrong-greeting
agent: demo-harbourside-bakery
greeting:
  equals: Good morning from the Harbourside Bakery demo agent. How can I help?
"""


def test_the_starter_set_passes_offline_in_parallel(eval_services: EvalServices) -> None:
    runs = eval_services.run(STARTER, options=RunOptions(concurrency=4))
    failures = {r.scenario.name: [str(f[2] or f[1] or f[0]) for f in r.failures()] for r in runs}
    assert all(r.status == "pass" for r in runs), failures
    assert len(runs) >= 8
    assert all(s.p50_ms is not None for s in summarise(runs))


def test_every_provider_path_drives_a_whole_call(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    for provider in ("twilio", "vonage", "aws-connect"):
        write(tmp_path, f"{provider}.yaml", PATHS.format(provider=provider))
    write(tmp_path, "relay.yaml", RELAY)
    runs = eval_services.run(tmp_path, options=RunOptions(concurrency=4))
    by_name = {r.scenario.name: r for r in runs}
    for name, run in by_name.items():
        assert run.status == "pass", (name, run.error, [str(f[2] or f[1]) for f in run.failures()])
    relay = by_name["paths-twilio-relay"].calls[0]
    assert relay.call_id.startswith("CA") and '"type": "text"' in relay.turns[1].reply.wire  # type: ignore[union-attr]
    twilio = by_name["paths-twilio"].calls[0]
    assert "<Gather" in twilio.turns[1].reply.wire  # type: ignore[union-attr]


def test_a_wrong_expectation_fails_with_a_readable_diff_and_exit_1(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    path = write(tmp_path, "wrong.yaml", WRONG)
    junit = tmp_path / "junit.xml"
    done = eval_services.cli(
        "run", path, "--no-start", "--junit", junit, "--html", tmp_path / "r.html"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert f"FAIL wrong-greeting call 1, greeting ({path}:3)" in out
    assert (
        "expected: equals Good morning from the Harbourside Bakery demo agent. How can I help?"
        in out
    )
    assert "actual:   Hello, this is the Harbourside Bakery demo agent. How can I help?" in out
    assert "diff:     [-Good morning from-] {+Hello, this is+} the Harbourside Bakery" in out
    suite = ET.parse(junit).getroot()  # noqa: S314 - our own file
    assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
    assert "Good morning" in (suite.find("testcase/failure").text or "")  # type: ignore[union-attr]


TOOLS = """\
name: tools
agent: demo-harbourside-bakery
turns:
  - say: Please remember that I like tea
    expect:
      tool: {name: remember, args: {fact: i like TEA}, ok: true}
  - say: Thanks, goodbye
    expect:
      tool: [end_call, {name: transfer_call, args: {to: sales}}]
expect:
  tool: [remember, search_knowledge]
"""


def test_a_tool_expectation_passes_and_fails_saying_which_tools_ran(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    path = write(tmp_path, "tools.yaml", TOOLS)
    done = eval_services.cli(
        "run", path, "--no-start", "--junit", tmp_path / "j.xml", "--html", tmp_path / "r.html"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "turn 1" not in out  # remember ran with the fact, and succeeded
    assert f"FAIL tools call 1, turn 2 ({path}:7)" in out, out
    assert "expected: tool transfer_call(to='sales')" in out, out
    assert "actual:   end_call(reason='caller_goodbye') ok" in out
    assert "transfer_call did not run" in out
    assert "expected: call tool search_knowledge" in out
    assert "actual:   remember(fact='I like tea') ok; end_call(reason='caller_goodbye') ok" in out
    failures = ET.parse(tmp_path / "j.xml").getroot().get("failures")  # noqa: S314
    assert failures == "1"


def test_a_rubric_without_a_model_key_is_skipped_with_its_reason_not_passed(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    write(
        tmp_path,
        "rubric.yaml",
        "agent: demo-harbourside-bakery\nturns:\n  - say: What are your opening hours?\n"
        "    expect: {rubric: The agent gives the opening hours politely.}\n",
    )
    done = eval_services.cli(
        "run", tmp_path, "--no-start", "--junit", tmp_path / "j.xml", "--html", tmp_path / "r.html"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "│ skip" in done.stdout  # the table: skipped, not passed
    assert "rubric: no model key: set OPENAI_API_KEY" in done.stdout
    skipped = ET.parse(tmp_path / "j.xml").getroot().find("testcase/skipped")  # noqa: S314
    assert skipped is not None and "no model key" in (skipped.get("message") or "")
