"""What each role reads of a call, the same rule as the orchestrator's (`orchestrator/api/
read_model.py`): operators and admins read everything; a viewer reads a call's status, provider,
agent, times, turns and timings, with phone numbers masked and the words withheld (what the
caller said, what the agent answered, the call's metadata).

Applied to the call API (`GET /voice/calls`, `GET /voice/calls/{id}/status`) and to the `/ws`
stream: an event is encoded once for everyone and once more, only if a viewer is connected to
receive it, in the viewer's form.
"""

from __future__ import annotations

import json
from typing import Any

from realtime_gateway.calls import LiveCall
from shared.logging import mask_phone

WITHHELD = "withheld"
# Event data fields that carry words or numbers (masked or withheld for viewers).
_NUMBERS = ("from", "to")
_WORDS = ("text", "digits")


def sees_personal_data(role: str) -> bool:
    return role in ("operator", "admin")


def public_call(call: LiveCall, role: str) -> dict[str, Any]:
    view = call.to_public()
    if sees_personal_data(role):
        return view
    view["from"], view["to"] = mask_phone(call.caller) or None, mask_phone(call.callee) or None
    view["metadata"] = {}
    view["personal_data"] = WITHHELD
    return view


def viewer_event(text: str) -> str:
    """An encoded `/ws` event in the viewer's form."""
    event = json.loads(text)
    data = event.get("data")
    if isinstance(data, dict):
        for key in _NUMBERS:
            if isinstance(data.get(key), str):
                data[key] = mask_phone(data[key])
        for key in _WORDS:
            if data.get(key) is not None:
                data[key] = None
        actions = data.get("actions")
        if isinstance(actions, list):
            data["actions"] = [{"type": a.get("type")} for a in actions if isinstance(a, dict)]
        data["personal_data"] = WITHHELD
    return json.dumps(event, separators=(",", ":"))
