"""Amazon Connect, as the forwarder Lambda (deploy/aws-connect/forwarder.py) drives it: each
contact-flow invocation is a `ContactFlowEvent` POSTed to `/voice/webhook/aws-connect`, signed
with the generic-http HMAC (the gateway's own `signatures.signed_headers`); the answer is the
flat map the flow reads (`action`: speak | transfer | hangup, `text`, `transfer_number`,
`next_turn`). A turn carries the caller's words (`Parameters.input`) or digits, and the turn
number the previous answer gave; the contact's end is `Parameters.event = ended`."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from agent_eval.providers.base import CallerTurn, PathError, ProviderCall, check_status, elapsed_ms
from agent_eval.transcript import Reply
from realtime_gateway.signatures import signed_headers

PATH = "/voice/webhook/aws-connect"
ACTIONS = {"speak": "gather", "transfer": "transfer", "hangup": "hangup"}


class AwsConnectCall(ProviderCall):
    _turn: int = 0  # the turn number the flow carries (the previous answer's `next_turn`)

    def new_call_id(self) -> str:
        return str(uuid.uuid4())

    async def _invoke(self, parameters: dict[str, str]) -> Reply:
        secret = self.target.generic_secret
        if not secret:
            raise PathError("the aws-connect path needs the gateway's GENERIC_HTTP_SECRET")
        event = {
            "Name": "ContactFlowEvent",
            "Details": {
                "ContactData": {
                    "Attributes": {"agent_id": self.setup.agent_id, "turn": str(self._turn)},
                    "Channel": "VOICE",
                    "ContactId": self.call_id,
                    "InitialContactId": self.call_id,
                    "InitiationMethod": "INBOUND",
                    "CustomerEndpoint": {"Address": self.setup.caller, "Type": "TELEPHONE_NUMBER"},
                    "SystemEndpoint": {"Address": self.setup.to, "Type": "TELEPHONE_NUMBER"},
                },
                "Parameters": parameters,
            },
        }
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **signed_headers(secret, body)}
        started = time.perf_counter()
        r = await self.http.post(f"{self.target.gateway_url}{PATH}", content=body, headers=headers)
        took = elapsed_ms(started)
        check_status("Amazon Connect invocation", r)
        answer = r.json()
        self._turn = int(answer.get("next_turn") or self._turn + 1)
        kind = ACTIONS.get(str(answer.get("action")), "gather")
        action: dict[str, Any] = {"type": kind}
        if kind == "transfer":
            action["to"] = answer.get("transfer_number")
        return Reply(str(answer.get("text") or ""), [action], took, took, wire=r.text)

    async def start(self) -> Reply:
        self._turn = 0
        reply = await self._invoke({})
        reply.turn_id = "greeting"
        return reply

    async def turn(self, turn: CallerTurn) -> Reply:
        self.turns += 1
        number = str(self._turn)
        parameters = {"turn": number}
        if turn.action == "say":
            parameters["input"] = turn.text
        elif turn.action == "dtmf":
            parameters["digits"] = turn.text
        reply = await self._invoke(parameters)
        reply.turn_id = number
        return reply

    async def hang_up(self) -> None:
        await self._invoke({"event": "ended", "turn": str(self._turn)})
