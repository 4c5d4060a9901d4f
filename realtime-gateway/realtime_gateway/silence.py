"""The silence policy: what the caller hears when they say nothing.

One rule for every provider that reports silence to us (Twilio's empty `<Gather>` result,
Vonage's empty `input`, a Connect turn with no words): ask again, and after `MAX_SILENT_TURNS`
silent turns in a row say goodbye and hang up. Silence never reaches the orchestrator (it is not
something the caller said). The count travels with the provider's next callback (a query
parameter or a contact attribute), so no call state is needed for it.
"""

from __future__ import annotations

from realtime_gateway import prompts
from shared.contract import Action

MAX_SILENT_TURNS = 2


def on_silence(silent_before: int, language: str | None) -> tuple[list[Action], int]:
    """The actions for one more silent turn, and the count of silent turns so far."""
    silent = max(0, silent_before) + 1
    if silent >= MAX_SILENT_TURNS:
        goodbye = prompts.say("silence_goodbye", language)
        return [Action.say(goodbye, language), Action.hangup("caller silent")], silent
    return [
        Action.say(prompts.say("reprompt", language), language),
        Action.gather(language=language),
    ], silent
