"""Provider-neutral `Action`s rendered as a Vonage NCCO (a JSON array of actions).

Built with the SDK's `vonage_voice` models so every action is validated as Vonage defines it.
Rules: prompts before an `input` barge in; a reply that neither listens, transfers, streams nor
hangs up gets an `input` appended; a hang-up is prompts with no `input` (Vonage ends the call
when the NCCO runs out; the driver also hangs up through the API).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vonage_voice.models.connect_endpoints import PhoneEndpoint, WebsocketEndpoint
from vonage_voice.models.input_types import Dtmf, Speech
from vonage_voice.models.ncco import Connect, Input, NccoAction, Record, Stream, Talk

from shared.contract import Action
from shared.phone import digits_only

DEFAULT_LANGUAGE = "en-US"
END_ON_SILENCE_S = 1.0
DTMF_MAX_DIGITS = 20
DTMF_TIMEOUT_S = 5
CONNECT_TIMEOUT_S = 30
STREAM_CONTENT_TYPE = "audio/l16;rate=16000"

Ncco = list[dict[str, Any]]
_TAG = re.compile(r"<[^>]*>")


@dataclass(slots=True)
class RenderedNcco:
    ncco: Ncco
    hangup: bool = False  # the call should end after the prompts (no input, no connect)
    spoken_chars: int = 0


def dump(action: NccoAction) -> dict[str, Any]:
    data: dict[str, Any] = action.model_dump(by_alias=True, exclude_none=True, mode="json")
    return data


def plain_text(text: str) -> str:
    """Agent text is plain text. Vonage reads a `talk` text that starts with `<speak>` as SSML,
    and rejects it (or speaks markup) unless it is well-formed: such text is spoken as its
    words, without the markup."""
    stripped = text.strip()
    lowered = stripped.lower()
    if "<speak" not in lowered and "</speak" not in lowered:
        return stripped
    words = _TAG.sub(" ", stripped)
    return " ".join(html.unescape(words).split())


def input_action(event_url: str, action: Action | None = None) -> dict[str, Any]:
    language = (action.language if action else None) or DEFAULT_LANGUAGE
    kinds = list(action.input) if action and action.input else ["speech", "dtmf"]
    speech = None
    if "speech" in kinds:
        start_timeout = None
        if action and action.timeout_s:
            start_timeout = min(60, max(1, round(action.timeout_s)))
        speech = Speech(
            endOnSilence=END_ON_SILENCE_S, language=language, startTimeout=start_timeout
        )
    dtmf = (
        Dtmf(maxDigits=DTMF_MAX_DIGITS, timeOut=DTMF_TIMEOUT_S, submitOnHash=True)
        if "dtmf" in kinds
        else None
    )
    return dump(
        Input(type=kinds, speech=speech, dtmf=dtmf, eventUrl=[event_url], eventMethod="POST")
    )


def _prompt(action: Action, barge_in: bool) -> list[dict[str, Any]]:
    if action.type == "say" and action.text and action.text.strip():
        # Vonage picks a voice by language + numeric `style`: an agent voice that is a number
        # is that style; a named voice (another provider's) is not translatable and is ignored.
        style = int(action.voice) if action.voice and action.voice.isdigit() else None
        return [
            dump(
                Talk(
                    text=plain_text(action.text),
                    bargeIn=barge_in,
                    language=action.language or None,
                    style=style,
                )
            )
        ]
    if action.type == "play" and action.url:
        return [dump(Stream(streamUrl=[action.url], bargeIn=barge_in))]
    return []


def render_actions(
    actions: Sequence[Action],
    input_url: str,
    from_number: str | None,
    transfer_url: str | None = None,
) -> RenderedNcco:
    """NCCO for one reply; `input_url` is the eventUrl of the next `input`; `transfer_url`
    receives the transferred leg's events synchronously, so a transfer nobody answers can be
    replaced by a new NCCO (the agent takes the caller back)."""
    ncco: Ncco = []
    prompts: list[Action] = []
    spoken = 0

    def flush(barge_in: bool) -> None:
        nonlocal spoken
        for prompt in prompts:
            ncco.extend(_prompt(prompt, barge_in))
            spoken += len(prompt.text or "") if prompt.type == "say" else 0
        prompts.clear()

    for action in actions:
        if action.type in ("say", "play"):
            prompts.append(action)
        elif action.type == "gather":
            flush(barge_in=True)
            ncco.append(input_action(input_url, action))
            return RenderedNcco(ncco, spoken_chars=spoken)
        elif action.type == "transfer" and action.to and from_number:
            flush(barge_in=False)
            ncco.append(
                dump(
                    Connect(
                        from_=digits_only(from_number),
                        endpoint=[PhoneEndpoint(number=digits_only(action.to))],
                        timeout=CONNECT_TIMEOUT_S,
                        eventType="synchronous" if transfer_url else None,
                        eventUrl=[transfer_url] if transfer_url else None,
                        eventMethod="POST" if transfer_url else None,
                    )
                )
            )
            return RenderedNcco(ncco, spoken_chars=spoken)
        elif action.type == "hangup":
            flush(barge_in=False)
            return RenderedNcco(ncco, hangup=True, spoken_chars=spoken)
        elif action.type == "stream" and action.url and from_number:
            flush(barge_in=False)
            ncco.append(
                dump(
                    Connect(
                        from_=digits_only(from_number),
                        endpoint=[
                            WebsocketEndpoint(uri=action.url, contentType=STREAM_CONTENT_TYPE)
                        ],
                    )
                )
            )
            return RenderedNcco(ncco, spoken_chars=spoken)
        # send_digits has no NCCO form (Vonage sends DTMF through its REST API): skipped.
    flush(barge_in=True)
    ncco.append(input_action(input_url))
    return RenderedNcco(ncco, spoken_chars=spoken)


def record_action(event_url: str) -> dict[str, Any]:
    return dump(
        Record(
            eventUrl=[event_url],
            eventMethod="POST",
            split="conversation",
            channels=2,
            format="mp3",
        )
    )
