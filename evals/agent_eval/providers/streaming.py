"""Streamed turns over a socket (the generic streaming socket, ConversationRelay): the turn
model both share, the wire format left to each path.

A turn sends the caller's words and reads `text` frames until the one marked `last`, timing
the first words. What the reply does next (transfer, hang-up) is read from the
`/ws` announcement of the turn (`events.py`): the gateway sends frames only for ending
actions, so the announcement says whether to wait for them. A caller who talks over the reply:
the turn before stops reading after `interrupt_after_ms` (`cut`), and this turn sends an
interruption, then its words; the cut reply's own `last` frame may still be on its way, and it
is counted in when that reply was announced whole before this turn's.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from typing import Any

from agent_eval.events import EventWatch
from agent_eval.providers.base import CallerTurn, PathError, ProviderCall, elapsed_ms
from agent_eval.providers.frames import FrameReader, SocketClosed
from agent_eval.transcript import Reply


class StreamCall(ProviderCall):
    streaming = True
    reader: FrameReader

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cut_turn: str | None = None  # a reply the caller stopped listening to
        self._heard = ""
        self.ended = False
        if self.events is None:
            raise PathError("a streamed call needs the gateway's /ws events")
        self.watch: EventWatch = self.events
        self.watch.watch(self.call_id)

    @abstractmethod
    def prompt_frame(self, turn: CallerTurn) -> dict[str, Any]: ...

    @abstractmethod
    def interrupt_frame(self, heard: str) -> dict[str, Any]: ...

    @abstractmethod
    async def ending(self, frame: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The actions an ending frame carries (None: not an ending frame)."""

    async def turn(self, turn: CallerTurn) -> Reply:
        if turn.action == "silence":
            raise PathError("a streaming socket has no silence turn (the provider handles it)")
        self.turns += 1
        turn_id, earlier = str(self.turns), self._cut_turn
        first_frame = len(self.reader.received)
        if turn.interrupts:
            await self.reader.send(self.interrupt_frame(self._heard))
        await self.reader.send(self.prompt_frame(turn))
        started = time.perf_counter()
        deadline = None if turn.cut_after_ms is None else started + turn.cut_after_ms / 1000
        pieces: list[str] = []
        first: float | None = None
        lasts_left = 1
        if earlier is not None:  # the cut reply's own end may still come: count it in
            await self.watch.outcome(self.call_id, turn_id)
            lasts_left += 1 if self.watch.answered_whole(self.call_id, earlier) else 0
        while lasts_left:
            frame = await self.reader.next(deadline)
            if frame is None:
                if deadline is not None and not self.reader.closed:
                    return self._cut(turn_id, pieces, first, started, first_frame)
                raise SocketClosed("the gateway closed the socket before the reply's end")
            if frame.get("type") == "error":
                raise PathError(f"the gateway refused a frame: {json.dumps(frame)}")
            if frame.get("type") != "text":
                continue
            token = str(frame.get("token") or "")
            if token.strip() and first is None:
                first = elapsed_ms(started)
            pieces.append(token)
            lasts_left -= 1 if frame.get("last") else 0
        total = elapsed_ms(started)
        self._cut_turn = None
        outcome = await self.watch.outcome(self.call_id, turn_id)
        said = "".join(pieces).strip()
        if earlier is not None:  # the cut reply's last words came first: the turn's own
            said = str(outcome.get("text") or said)
        actions = await self._actions(outcome)
        wire = "\n".join(json.dumps(f) for f in self.reader.received[first_frame:])
        reply = Reply(said, actions, first if first is not None else total, total, wire)
        reply.turn_id = turn_id
        return reply

    def _cut(
        self, turn_id: str, pieces: list[str], first: float | None, started: float, at: int
    ) -> Reply:
        self._cut_turn, self._heard = turn_id, "".join(pieces)
        took = elapsed_ms(started)
        wire = "\n".join(json.dumps(f) for f in self.reader.received[at:])
        reply = Reply(self._heard.strip(), [], first if first is not None else took, took, wire)
        reply.cut, reply.turn_id = True, turn_id
        return reply

    async def _actions(self, outcome: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply's actions as announced; an ending one is also read from its frames (the
        provider's own signal that the call ends)."""
        announced = [a for a in outcome.get("actions") or [] if isinstance(a, dict)]
        if not any(a.get("type") in ("transfer", "hangup") for a in announced):
            return [{"type": "gather"}]
        while True:
            frame = await self.reader.next()
            if frame is None:
                raise SocketClosed("the socket closed before the reply's ending action")
            actions = await self.ending(frame)
            if actions is not None:
                self.ended = True
                return actions

    async def close(self) -> None:
        reader = getattr(self, "reader", None)
        if reader is not None:
            await reader.close()
