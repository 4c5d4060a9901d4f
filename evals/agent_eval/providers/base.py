"""One simulated call on one provider path: the interface every path implements.

A path plays the provider's side of a real call against the gateway, in the provider's own
wire format and signed as the provider signs: it starts the call (the agent's greeting), plays
the caller's turns (words, keypad digits, silence), and hangs up. Each answer comes back as a
provider-neutral `Reply`, timed from the caller's words to the agent's first and last words.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from agent_eval.api import ServiceApi
from agent_eval.errors import REPLY_TIMEOUT_S, PathError

if TYPE_CHECKING:
    from agent_eval.events import EventWatch
from agent_eval.schema import CallerAction
from agent_eval.target import Target
from agent_eval.transcript import Reply

__all__ = ["REPLY_TIMEOUT_S", "CallSetup", "CallerTurn", "PathError", "ProviderCall"]


@dataclass(frozen=True)
class CallSetup:
    caller: str
    to: str
    agent_id: str
    label: str  # the scenario's name, for readable call ids


@dataclass(frozen=True)
class CallerTurn:
    action: CallerAction
    text: str = ""
    cut_after_ms: float | None = None  # the next turn talks over this reply after so long
    interrupts: bool = False  # this turn talks over the previous reply


class ProviderCall(ABC):
    """One call. `call_id` is the gateway's call id, which is also the conversation id."""

    streaming = False

    def __init__(
        self,
        target: Target,
        http: httpx.AsyncClient,
        api: ServiceApi,
        setup: CallSetup,
        events: EventWatch | None = None,
    ) -> None:
        self.target = target
        self.http = http
        self.api = api
        self.setup = setup
        self.events = events
        self.call_id = self.new_call_id()
        self.turns = 0  # caller turns played so far

    def new_call_id(self) -> str:
        slug = "".join(c if c.isalnum() else "-" for c in self.setup.label.lower())[:40]
        return f"eval-{slug}-{uuid.uuid4().hex[:10]}"

    @abstractmethod
    async def start(self) -> Reply:
        """Ring the agent: the call starts; its greeting."""

    @abstractmethod
    async def turn(self, turn: CallerTurn) -> Reply:
        """One caller turn and the agent's reply to it."""

    @abstractmethod
    async def hang_up(self) -> None:
        """The caller hangs up (the agent did not end the call itself)."""

    async def close(self) -> None:
        """Release what the call holds (a socket); safe to call twice."""
        return None


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def say_text(actions: list[dict[str, Any]]) -> str:
    return " ".join(
        str(a.get("text") or "").strip() for a in actions if a.get("type") == "say"
    ).strip()


def check_status(what: str, response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise PathError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
