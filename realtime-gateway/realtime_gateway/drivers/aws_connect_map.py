"""The flat answer map an Amazon Connect contact flow reads, for the Connect adapter.

A contact flow reads our answer as `$.External.<key>`: one flat `{str: str}` map with `action`
(`speak` | `transfer` | `hangup`), `text`, `transfer_number`, `next_turn`, `silent`, `language`,
`fallback`. `render_reply` turns the call flow's actions into that map. Rendering lives here,
like `twilio_twiml.py` and `vonage_ncco.py`, so the adapter (`aws_connect.py`) keeps verify +
parse + render and stays under the 350-line rule for provider modules.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.contract import Action
from shared.languages import DEFAULT_LANGUAGE


def connect_map(
    action: str,
    text: str = "",
    *,
    next_turn: int,
    silent: int = 0,
    transfer_number: str = "",
    language: str = DEFAULT_LANGUAGE,
    fallback: bool = False,
) -> dict[str, str]:
    """The flat string map a contact flow reads as `$.External.*` (all values strings)."""
    return {
        "action": action,
        "text": text,
        "transfer_number": transfer_number,
        "next_turn": str(next_turn),
        "silent": str(silent),
        "language": language,
        "fallback": "true" if fallback else "false",
    }


def render_reply(
    actions: Sequence[Action], next_turn: int, fallback: bool, silent: int = 0
) -> dict[str, str]:
    """Actions -> one Connect map: the words to speak, then what the flow does next."""
    said: list[str] = []
    language = DEFAULT_LANGUAGE
    for action in actions:
        if action.language:
            language = action.language
        if action.type == "say" and action.text and action.text.strip():
            said.append(action.text.strip())
        elif action.type == "gather":
            break
        elif action.type == "transfer" and action.to:
            return connect_map(
                "transfer",
                " ".join(said),
                next_turn=next_turn,
                silent=silent,
                transfer_number=action.to,
                language=language,
                fallback=fallback,
            )
        elif action.type == "hangup":
            return connect_map(
                "hangup",
                " ".join(said),
                next_turn=next_turn,
                silent=silent,
                language=language,
                fallback=fallback,
            )
        # play / stream / send_digits have no form in this protocol: skipped.
    return connect_map(
        "speak",
        " ".join(said),
        next_turn=next_turn,
        silent=silent,
        language=language,
        fallback=fallback,
    )
