"""The generic-http webhook path, as a SIP/web bridge drives it: signed JSON events POSTed to
`/voice/webhook/generic-http`, each answered with the bridge's actions. Signed with the
gateway's own `signatures.signed_headers` (HMAC-SHA256 over `timestamp.body`)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from agent_eval.providers.base import (
    CallerTurn,
    PathError,
    ProviderCall,
    check_status,
    elapsed_ms,
    say_text,
)
from agent_eval.transcript import Reply
from realtime_gateway.signatures import signed_headers

PATH = "/voice/webhook/generic-http"


class GenericHttpCall(ProviderCall):
    async def _send(self, event: dict[str, Any]) -> Reply:
        secret = self.target.generic_secret
        if not secret:
            raise PathError(
                "generic-http needs the gateway's secret: set GENERIC_HTTP_SECRET "
                "(or DATA_DIR to the folder holding generic_http_secret)"
            )
        event = {
            "event_id": uuid.uuid4().hex,
            "call_id": self.call_id,
            "timestamp": int(time.time()),
            **event,
        }
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", **signed_headers(secret, body)}
        started = time.perf_counter()
        r = await self.http.post(f"{self.target.gateway_url}{PATH}", content=body, headers=headers)
        took = elapsed_ms(started)
        check_status(f"{event['type']} event", r)
        actions = list(r.json().get("actions") or [])
        return Reply(say_text(actions), actions, took, took, wire=r.text)

    async def start(self) -> Reply:
        reply = await self._send(
            {
                "type": "call.started",
                "from": self.setup.caller,
                "to": self.setup.to,
                "direction": "inbound",
                "agent_id": self.setup.agent_id,
                "metadata": {"source": "vao-eval"},
            }
        )
        reply.turn_id = "greeting"
        return reply

    async def turn(self, turn: CallerTurn) -> Reply:
        self.turns += 1
        heard: dict[str, Any] = {"type": "speech", "text": turn.text, "confidence": 0.95}
        if turn.action == "dtmf":
            heard = {"type": "dtmf", "digits": turn.text}
        elif turn.action == "silence":
            heard = {"type": "timeout"}
        reply = await self._send({"type": "call.input", "turn_id": str(self.turns), "input": heard})
        reply.turn_id = str(self.turns)
        return reply

    async def hang_up(self) -> None:
        await self._send({"type": "call.ended", "reason": "hangup"})
