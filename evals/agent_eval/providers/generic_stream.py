"""The generic streaming socket (`/voice/stream/generic-http`), as a bridge drives it: the
upgrade signed with the generic-http HMAC over `GET <path>` (the gateway's own
`signatures.signed_headers`), then our JSON frames (README, Streaming conversations)."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.asyncio.client import connect

from agent_eval.providers.base import CallerTurn, PathError, elapsed_ms
from agent_eval.providers.frames import FrameReader
from agent_eval.providers.streaming import StreamCall
from agent_eval.transcript import Reply
from realtime_gateway.signatures import signed_headers

PATH = "/voice/stream/generic-http"


class GenericStreamCall(StreamCall):
    async def start(self) -> Reply:
        secret = self.target.generic_secret
        if not secret:
            raise PathError("the generic streaming socket needs GENERIC_HTTP_SECRET (see --help)")
        url = "ws" + self.target.gateway_url[4:] + PATH
        headers = signed_headers(secret, f"GET {PATH}".encode())
        self.reader = FrameReader(await connect(url, additional_headers=headers))
        started = time.perf_counter()
        await self.reader.send(
            {
                "type": "start",
                "call_id": self.call_id,
                "from": self.setup.caller,
                "to": self.setup.to,
                "agent_id": self.setup.agent_id,
            }
        )
        pieces: list[str] = []
        first: float | None = None
        while True:
            frame = await self.reader.next()
            if frame is None:
                raise PathError("the gateway closed the socket before the greeting")
            if frame.get("type") == "error":
                raise PathError(f"the gateway refused the start frame: {frame}")
            if frame.get("type") == "text":
                pieces.append(str(frame.get("token") or ""))
                first = first if first is not None else elapsed_ms(started)
                if frame.get("last"):
                    break
        took = elapsed_ms(started)
        wire = "\n".join(json.dumps(f) for f in self.reader.received)
        reply = Reply("".join(pieces).strip(), [{"type": "gather"}], first or took, took, wire)
        reply.turn_id = "greeting"
        return reply

    def prompt_frame(self, turn: CallerTurn) -> dict[str, Any]:
        if turn.action == "dtmf":
            return {"type": "dtmf", "digits": turn.text}
        return {"type": "prompt", "text": turn.text}

    def interrupt_frame(self, heard: str) -> dict[str, Any]:
        return {"type": "interrupt", "heard": heard}

    async def ending(self, frame: dict[str, Any]) -> list[dict[str, Any]] | None:
        if frame.get("type") == "action" and isinstance(frame.get("action"), dict):
            action = dict(frame["action"])
            if action.get("type") in ("transfer", "hangup"):
                return [action]
        return None

    async def hang_up(self) -> None:
        if not self.ended and not self.reader.closed:
            await self.reader.send({"type": "end"})
        await self.close()
