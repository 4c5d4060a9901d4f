"""The responder seam: what answers a turn, and which one does.

`ConversationService` owns storage, idempotency and timing; a `Responder` only turns a turn into
a reply (`orchestrator.turns`: `TurnInputs` in, `ReplyDraft` out). `build_responder` returns the
agent graph (input -> memory -> orchestrator <-> tool,
`orchestrator.agents.graph_responder.GraphResponder`): LLM mode with OPENAI_API_KEY, else
offline; `warm_imports` loads its heavy modules beforehand. `RuleResponder` is the minimal
offline responder without Chroma (kept for tests of the turn service). A responder that can
stream its reply token by token is a `StreamingResponder`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from orchestrator.store.records import Agent, Conversation
from orchestrator.turns import ReplyDraft, TokenSink, TurnInputs
from shared.contract import Action

if TYPE_CHECKING:
    from orchestrator.config import OrchestratorSettings
    from orchestrator.health import HealthChecks
    from orchestrator.store.database import Database

log = logging.getLogger(__name__)


@runtime_checkable
class Responder(Protocol):
    mode: str  # shown in /health as services.llm, and logged at start-up

    async def greet(self, conversation: Conversation, agent: Agent) -> ReplyDraft: ...

    async def respond(self, turn: TurnInputs) -> ReplyDraft: ...

    async def on_call_end(self, conversation: Conversation) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class StreamingResponder(Responder, Protocol):
    async def stream(self, turn: TurnInputs, on_text: TokenSink) -> ReplyDraft:
        """Like `respond`, handing the reply's text to `on_text` as it is produced, each piece
        awaited before the next is read (what `on_text` does — write it to the caller — runs
        in the task that read it from the model). Cancelling it cancels the turn (the caller
        barged in)."""
        ...


_GOODBYE = re.compile(
    r"\b(good ?bye|bye|that'?s all|that is all|hang up|nothing else|no,? thanks?( you)?|"
    r"have a (good|nice) (day|one))\b",
    re.IGNORECASE,
)
_HUMAN = re.compile(
    r"\b(human|person|someone|somebody|operator|representative|agent|staff|transfer( me)?)\b",
    re.IGNORECASE,
)
_ASK = re.compile(r"\b(speak|talk|transfer|connect|put me through|get me)\b", re.IGNORECASE)
_ECHO_CHARS = 160


class RuleResponder:
    """Offline replies without an LLM: greeting, goodbye, transfer to a human, and an honest
    "I'm an offline assistant" for everything else. Deterministic, no network."""

    mode = "offline"

    async def greet(self, conversation: Conversation, agent: Agent) -> ReplyDraft:
        text = agent.greeting or "Hello! How can I help you today?"
        return ReplyDraft(text, [Action.say(text), Action.gather()])

    async def respond(self, turn: TurnInputs) -> ReplyDraft:
        message = " ".join(turn.message.split())
        input_type = turn.context.input_type
        if input_type == "timeout" or not message:
            text = "Sorry, I didn't catch that. Could you say it again?"
            return ReplyDraft(text, [Action.say(text), Action.gather()])
        if (input_type == "dtmf" and message == "0") or (
            _HUMAN.search(message) and (_ASK.search(message) or len(message.split()) <= 3)
        ):
            return self._transfer(turn.agent)
        if _GOODBYE.search(message):
            text = "Thank you for calling. Goodbye!"
            return ReplyDraft(text, [Action.say(text), Action.hangup("caller_goodbye")])
        echo = message if len(message) <= _ECHO_CHARS else message[: _ECHO_CHARS - 3] + "..."
        text = (
            f'I heard: "{echo}". I\'m an offline assistant without a language model, '
            "so I can't answer that yet. You can ask for a person, or say goodbye."
        )
        return ReplyDraft(text, [Action.say(text), Action.gather()])

    @staticmethod
    def _transfer(agent: Agent) -> ReplyDraft:
        if agent.transfer_number:
            text = "Connecting you to a member of our team now."
            return ReplyDraft(text, [Action.say(text), Action.transfer(agent.transfer_number)])
        text = (
            "I'm sorry, no one is available to take your call right now. "
            "Is there anything else I can help with?"
        )
        return ReplyDraft(text, [Action.say(text), Action.gather()])

    async def on_call_end(self, conversation: Conversation) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def build_responder(
    settings: OrchestratorSettings, database: Database, health: HealthChecks
) -> Responder:
    """The one place that picks the responder: the agent graph, with Chroma memory.

    `database` gives access to the stores; `health` is where the responder registers checks of its
    own dependencies (`chroma`, which `/health` reports as vector_store).
    """
    from orchestrator.agents.graph_responder import GraphResponder  # chromadb, langchain: here

    return await GraphResponder.open(settings, database, health)


def warm_imports(settings: OrchestratorSettings | None = None) -> None:
    """Import the agent graph's heavy modules (about 2 s cold) in a worker thread at start-up,
    while Postgres starts, instead of after it; with embedded Chroma in its own process, start
    the fork server that imports Chroma for it meanwhile too. The model client stack
    (langchain_openai, openai) is warmed after ready instead (`GraphResponder.open`): it would
    delay /health."""
    from orchestrator.memory.chroma import warm_chroma

    warm_chroma(settings)
    import langchain_core.messages  # noqa: F401

    import orchestrator.agents.graph_responder  # noqa: F401  (the graph's own modules)
