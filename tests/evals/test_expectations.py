"""Each expectation type, passing and failing, on replies as the provider paths return them
(the end-to-end runs in test_runs.py check them again against the real services)."""

from __future__ import annotations

from typing import Any

import pytest

from agent_eval.expectations import check_call, check_turn, word_diff
from agent_eval.schema import ActionExpect, CallExpect, ToolExpect, TurnExpect
from agent_eval.transcript import Check, Reply

HOURS = "Our opening hours are Monday to Friday from 7 am to 6 pm."


def reply(text: str = HOURS, *actions: dict[str, Any], latency_ms: float = 120.0) -> Reply:
    return Reply(
        text, list(actions) or [{"type": "say", "text": text}, {"type": "gather"}], latency_ms
    )


def only(checks: list[Check]) -> Check:
    assert len(checks) == 1, checks
    return checks[0]


@pytest.mark.parametrize(
    ("expect", "passes", "fails"),
    [
        (TurnExpect(equals=HOURS), reply(), reply(HOURS.replace("7 am", "8 am"))),
        (TurnExpect(contains=("monday to friday",)), reply(), reply("We are closed.")),
        (TurnExpect(not_contains=("closed",)), reply(), reply("Sorry, we are closed today.")),
        (TurnExpect(matches=(r"\b7 ?am\b",)), reply(), reply("from seven in the morning")),
        (TurnExpect(action=ActionExpect("gather")), reply(), reply("Bye.", {"type": "hangup"})),
        (TurnExpect(action=ActionExpect("hangup")), reply("Bye.", {"type": "hangup"}), reply()),
        (
            TurnExpect(action=ActionExpect("transfer", "+15550100199")),
            reply("", {"type": "transfer", "to": "+15550100199"}),
            reply("", {"type": "transfer", "to": "+15550100100"}),
        ),
        (TurnExpect(latency_ms=500), reply(latency_ms=499), reply(latency_ms=501)),
    ],
    ids=[
        "equals",
        "contains",
        "not_contains",
        "matches",
        "gather",
        "hangup",
        "transfer",
        "latency",
    ],
)
def test_each_reply_expectation_passes_and_fails(
    expect: TurnExpect, passes: Reply, fails: Reply
) -> None:
    assert only(check_turn(expect, passes)).status == "pass"
    failed = only(check_turn(expect, fails))
    assert failed.status == "fail" and failed.detail


def test_a_wrong_equals_fails_with_a_word_diff_beside_what_was_said() -> None:
    failed = only(
        check_turn(
            TurnExpect(equals="Good morning from the bakery."), reply("Hello from the bakery.")
        )
    )
    assert failed.expected == "Good morning from the bakery."
    assert failed.actual == "Hello from the bakery."
    assert failed.detail == "[-Good morning-] {+Hello+} from the bakery."
    assert word_diff("a b c", "a  b\nc") == "a b c"  # whitespace is how it is said, not a change


def test_the_scenario_latency_budget_applies_unless_the_turn_sets_its_own() -> None:
    assert (
        only(check_turn(TurnExpect(), reply(latency_ms=900), latency_budget_ms=800)).status
        == "fail"
    )
    own = TurnExpect(latency_ms=1000)
    assert only(check_turn(own, reply(latency_ms=900), latency_budget_ms=800)).status == "pass"
    cut = reply(latency_ms=900)
    cut.cut = True  # a reply the caller talked over has no latency to hold to a budget
    assert check_turn(TurnExpect(), cut, latency_budget_ms=800) == []


def test_interrupted_is_checked_against_the_conversation_record() -> None:
    expect = TurnExpect(interrupted=True)
    assert only(check_turn(expect, reply(), interrupted=True)).status == "pass"
    assert only(check_turn(expect, reply(), interrupted=False)).status == "fail"
    unknown = only(check_turn(expect, reply(), interrupted=None))
    assert unknown.status == "fail" and "no reply" in unknown.detail


def test_recalled_needs_the_words_said_and_remembered_before_the_call() -> None:
    expect = TurnExpect(recalled=("name is Sam",))
    said = reply("Welcome back! I have a note: your name is Sam.")
    assert only(check_turn(expect, said, memories=["my name is Sam"])).status == "pass"
    made_up = only(check_turn(expect, said, memories=[]))
    assert made_up.status == "fail" and "no memory" in made_up.detail
    assert only(check_turn(expect, reply("Hello!"), memories=["my name is Sam"])).status == "fail"


def test_memory_written_and_the_calls_last_action() -> None:
    expect = CallExpect(memory_written=("name is Sam",), action=ActionExpect("hangup"))
    bye = reply("Goodbye!", {"type": "say", "text": "Goodbye!"}, {"type": "hangup"})
    passed = check_call(expect, bye, ["my name is Sam", "The caller asked about hours."])
    assert [c.status for c in passed] == ["pass", "pass"]
    failed = check_call(expect, reply(), ["The caller asked about hours."])
    assert [c.status for c in failed] == ["fail", "fail"]
    assert failed[1].actual == "The caller asked about hours."


REMEMBERED = [
    {"name": "remember", "args": {"fact": "I like  Tea", "tags": ["drinks"]}, "ok": True},
    {"name": "transfer_call", "args": {}, "ok": False},
]


@pytest.mark.parametrize(
    ("tool", "detail"),
    [
        (ToolExpect("end_call"), "end_call did not run"),
        (ToolExpect("remember", {"fact": "I like coffee"}), "remember ran with other arguments"),
        (ToolExpect("remember", {"fact": "I like tea", "when": "now"}), "other arguments"),
        (ToolExpect("remember", {"tags": "drinks"}), "other arguments"),  # a list is not text
        (ToolExpect("transfer_call", ok=True), "transfer_call failed"),
        (ToolExpect("remember", ok=False), "remember succeeded"),
    ],
)
def test_a_tool_expectation_fails_saying_which_tools_ran_with_which_arguments(
    tool: ToolExpect, detail: str
) -> None:
    failed = only(check_turn(TurnExpect(tools=(tool,)), reply(), tools=REMEMBERED))
    assert failed.status == "fail" and detail in failed.detail
    assert failed.actual == (
        "remember(fact='I like  Tea', tags=['drinks']) ok; transfer_call() failed"
    )


def test_a_tool_expectation_passes_on_name_argument_subset_and_outcome() -> None:
    expect = TurnExpect(
        tools=(
            ToolExpect("remember"),
            ToolExpect("remember", {"fact": "i like tea"}, ok=True),  # as spoken, any case
            ToolExpect("remember", {"tags": ["Drinks"]}),
            ToolExpect("transfer_call", ok=False),
        )
    )
    checks = check_turn(expect, reply(), tools=REMEMBERED)
    assert [c.status for c in checks] == ["pass"] * 4
    assert checks[1].expected == "remember(fact='i like tea') ok"


def test_a_tool_expectation_without_a_record_or_arguments_to_read_fails() -> None:
    expect = TurnExpect(tools=(ToolExpect("remember", {"fact": "tea"}),))
    none_ran = only(check_turn(expect, reply(), tools=[]))
    assert none_ran.detail == "no tool ran" and none_ran.actual == "(no tool ran)"
    unknown = only(check_turn(expect, reply(), tools=None))
    assert unknown.status == "fail" and "no reply for this turn" in unknown.detail
    withheld = [{"name": "remember", "args": None, "ok": True}]
    hidden = only(check_turn(expect, reply(), tools=withheld))
    assert hidden.status == "fail" and "withheld" in hidden.detail
    named = TurnExpect(tools=(ToolExpect("remember"),))
    assert only(check_turn(named, reply(), tools=withheld)).status == "pass"


def test_a_call_tool_expectation_looks_at_every_turn() -> None:
    expect = CallExpect(tools=(ToolExpect("transfer_call"), ToolExpect("end_call")))
    checks = check_call(expect, reply(), [], REMEMBERED)
    assert [(c.name, c.status) for c in checks] == [("call tool", "pass"), ("call tool", "fail")]
