"""Vonage Voice, as Vonage drives it: the answer webhook as a GET, each NCCO `input` result
POSTed to its `eventUrl` (the gateway's own signed URL), the call's end POSTed to the event
URL; every request carries Vonage's signature, an HS256 JWT made with the signature secret
whose `payload_hash` covers the query of a GET (the gateway's own `query_payload_hash`) or the
body of a POST, with a fresh `jti` each time. NCCO answers are read as Vonage runs them: `talk`
is spoken, `input` listens, `connect` to a phone transfers, an NCCO with neither ends the call.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import jwt

from agent_eval.providers.base import CallerTurn, PathError, ProviderCall, check_status, elapsed_ms
from agent_eval.transcript import Reply
from realtime_gateway.signatures import query_payload_hash

ANSWER_PATH = "/voice/webhook/vonage/answer"
EVENT_PATH = "/voice/webhook/vonage/status"


def read_ncco(ncco: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str | None]:
    """(what is said, what the call does, the next `input`'s eventUrl)."""
    said = [str(a.get("text") or "").strip() for a in ncco if a.get("action") == "talk"]
    for action in ncco:
        if action.get("action") == "input":
            return " ".join(said), [{"type": "gather"}], str((action.get("eventUrl") or [""])[0])
        if action.get("action") == "connect":
            phones = [e for e in action.get("endpoint") or [] if e.get("type") == "phone"]
            to = "+" + str(phones[0]["number"]) if phones else None
            return " ".join(said), [{"type": "transfer", "to": to}], None
    return " ".join(s for s in said if s), [{"type": "hangup"}], None


class VonageCall(ProviderCall):
    def new_call_id(self) -> str:
        return str(uuid.uuid4())

    def _token(self, payload_hash: str) -> str:
        secret = self.target.vonage_signature_secret
        if not secret:
            raise PathError("the vonage path needs the gateway's VONAGE_SIGNATURE_SECRET")
        claims: dict[str, Any] = {
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
            "iss": "Vonage",
            "payload_hash": payload_hash,
        }
        if self.target.vonage_api_key:
            claims["api_key"] = self.target.vonage_api_key
        return jwt.encode(claims, secret, algorithm="HS256")

    def _reply(self, text: str, took: float) -> Reply:
        try:
            ncco = json.loads(text) if text.strip() else []
        except ValueError:
            raise PathError(f"the gateway's answer is not an NCCO: {text[:200]}") from None
        said, actions, self._next = read_ncco(ncco if isinstance(ncco, list) else [])
        return Reply(said, actions, took, took, wire=text)

    async def start(self) -> Reply:
        query = urlencode(
            {
                "to": self.setup.to.lstrip("+"),
                "from": self.setup.caller.lstrip("+"),
                "uuid": self.call_id,
                "conversation_uuid": f"CON-{self.call_id}",
                "agent_id": self.setup.agent_id,
            }
        )
        url = f"{self.target.public_base}{ANSWER_PATH}?{query}"
        headers = {"Authorization": f"Bearer {self._token(query_payload_hash(url))}"}
        started = time.perf_counter()
        r = await self.http.get(self.target.local(url), headers=headers)
        took = elapsed_ms(started)
        check_status("Vonage answer webhook", r)
        reply = self._reply(r.text, took)
        reply.turn_id = "greeting"
        return reply

    async def _post(self, url: str, body: dict[str, Any]) -> tuple[str, float]:
        raw = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._token(hashlib.sha256(raw).hexdigest())}",
        }
        started = time.perf_counter()
        r = await self.http.post(self.target.local(url), content=raw, headers=headers)
        took = elapsed_ms(started)
        check_status("Vonage webhook", r)
        return r.text, took

    async def turn(self, turn: CallerTurn) -> Reply:
        if not self._next:
            raise PathError("the last NCCO did not listen (no input action): nothing to answer")
        self.turns += 1
        results = [{"text": turn.text, "confidence": "0.92"}] if turn.action == "say" else []
        body = {
            "speech": {"results": results} if results else {"timeout_reason": "start_timeout"},
            "dtmf": {"digits": turn.text if turn.action == "dtmf" else None, "timed_out": False},
            "uuid": self.call_id,
            "conversation_uuid": f"CON-{self.call_id}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        text, took = await self._post(self._next, body)
        reply = self._reply(text, took)
        reply.turn_id = str(self.turns)
        return reply

    async def hang_up(self) -> None:
        body = {
            "uuid": self.call_id,
            "conversation_uuid": f"CON-{self.call_id}",
            "status": "completed",
            "direction": "inbound",
            "duration": "30",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        await self._post(f"{self.target.public_base}{EVENT_PATH}", body)
