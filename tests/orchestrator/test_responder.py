"""`RuleResponder`, the minimal offline responder behind the `Responder` seam."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.services.responder import Responder, RuleResponder
from orchestrator.store.records import Agent, Conversation
from orchestrator.turns import TurnInputs
from shared.contract import TurnContext

NOW = datetime.now(UTC)


def agent(**configuration: Any) -> Agent:
    return Agent("agt_1", "Reception", "voice", configuration, True, NOW, NOW)


def turn(message: str, a: Agent | None = None, input_type: str = "speech") -> TurnInputs:
    conversation = Conversation("c1", "c1", "agt_1", None, None, "twilio", "active", NOW)
    return TurnInputs(
        conversation=conversation,
        agent=a or agent(),
        turn_id="1",
        message=message,
        context=TurnContext(input_type=input_type),  # type: ignore[arg-type]
        history=[],
    )


def test_rule_responder_satisfies_the_protocol() -> None:
    assert isinstance(RuleResponder(), Responder)
    assert RuleResponder.mode == "offline"


async def test_greets_with_the_agents_greeting_and_listens() -> None:
    conversation = turn("").conversation
    draft = await RuleResponder().greet(conversation, agent(greeting="Hi, Acme here."))
    assert draft.text == "Hi, Acme here."
    assert [(a.type, a.text) for a in draft.actions] == [
        ("say", "Hi, Acme here."),
        ("gather", None),
    ]


@pytest.mark.parametrize("message", ["Goodbye", "ok bye!", "no thanks, that's all"])
async def test_goodbye_says_goodbye_and_hangs_up(message: str) -> None:
    draft = await RuleResponder().respond(turn(message))
    assert [a.type for a in draft.actions] == ["say", "hangup"]


@pytest.mark.parametrize("message", ["Can I speak to a human?", "operator", "transfer me please"])
async def test_asking_for_a_person_transfers_to_the_agents_number(message: str) -> None:
    draft = await RuleResponder().respond(turn(message, agent(transfer_number="+15550009999")))
    assert draft.actions[-1].type == "transfer" and draft.actions[-1].to == "+15550009999"


async def test_asking_for_a_person_without_a_transfer_number_apologises_and_listens() -> None:
    draft = await RuleResponder().respond(turn("I want to talk to a real person"))
    assert [a.type for a in draft.actions] == ["say", "gather"]
    assert "no one is available" in draft.text


async def test_dtmf_zero_transfers() -> None:
    draft = await RuleResponder().respond(
        turn("0", agent(transfer_number="+15550009999"), input_type="dtmf")
    )
    assert draft.actions[-1].type == "transfer"


async def test_anything_else_gets_an_honest_offline_answer_and_a_gather() -> None:
    draft = await RuleResponder().respond(turn("What's the weather like tomorrow?"))
    assert "offline assistant" in draft.text and "weather" in draft.text
    assert [a.type for a in draft.actions] == ["say", "gather"]


async def test_silence_asks_again() -> None:
    for t in (turn("", input_type="timeout"), turn("   ")):
        draft = await RuleResponder().respond(t)
        assert "didn't catch that" in draft.text and draft.actions[-1].type == "gather"
