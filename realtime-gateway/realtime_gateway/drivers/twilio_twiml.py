"""Provider-neutral `Action`s rendered as TwiML with the SDK's `VoiceResponse`.

Kept apart from the driver so the webhook code reads as "parse, drive the flow, render".
Rules: `say`/`play` that come right before a `gather` are nested in the `<Gather>` so the
caller can barge in; a reply that neither listens, transfers, streams nor hangs up gets a
`<Gather>` appended (the conversation goes on); a `<Dial>` is followed by `<Hangup/>`, so a
call always ends with a hang-up we sent rather than an open line.
"""

from __future__ import annotations

from collections.abc import Sequence

from twilio.twiml.voice_response import Gather, VoiceResponse

from shared.contract import Action

DEFAULT_LANGUAGE = "en-US"
DIAL_TIMEOUT_S = 20


def _gather(response: VoiceResponse, action: Action | None, action_url: str) -> Gather:
    language = (action.language if action else None) or DEFAULT_LANGUAGE
    kwargs: dict[str, object] = {
        "input": " ".join(action.input) if action and action.input else "speech dtmf",
        "action": action_url,
        "method": "POST",
        "speech_timeout": "auto",
        "action_on_empty_result": True,
        "language": language,
    }
    if action and action.timeout_s:
        # `timeout`: seconds Twilio waits for the caller to start (integer, Twilio's rule).
        kwargs["timeout"] = max(1, round(action.timeout_s))
    return response.gather(**kwargs)


def _add_prompt(target: VoiceResponse | Gather, action: Action) -> None:
    if action.type == "say" and action.text and action.text.strip():
        attrs: dict[str, str] = {}
        if action.language:
            attrs["language"] = action.language
        if action.voice:  # the agent's configured voice, e.g. "Polly.Joanna" or "alice"
            attrs["voice"] = action.voice
        target.say(action.text, **attrs)
    elif action.type == "play" and action.url:
        target.play(action.url)


def render_actions(
    actions: Sequence[Action],
    gather_url: str,
    caller_id: str | None = None,
    dial_url: str | None = None,
) -> VoiceResponse:
    """TwiML for one reply; `gather_url` is the action URL of the next `<Gather>`, `dial_url`
    the `<Dial action>` Twilio requests when a transfer ends (to recover a failed one)."""
    response = VoiceResponse()
    prompts: list[Action] = []

    def flush() -> None:
        for prompt in prompts:
            _add_prompt(response, prompt)
        prompts.clear()

    ended = False
    for action in actions:
        if action.type in ("say", "play"):
            prompts.append(action)
        elif action.type == "send_digits":
            flush()
            if action.digits:
                response.play(digits=action.digits)
        elif action.type == "gather":
            gather = _gather(response, action, gather_url)
            for prompt in prompts:
                _add_prompt(gather, prompt)
            prompts.clear()
            ended = True
            break
        elif action.type == "transfer" and action.to:
            flush()
            dial_kwargs: dict[str, object] = {"answer_on_bridge": True, "timeout": DIAL_TIMEOUT_S}
            if caller_id:
                dial_kwargs["caller_id"] = caller_id
            if dial_url:
                dial_kwargs["action"] = dial_url
                dial_kwargs["method"] = "POST"
            dial = response.dial(**dial_kwargs)
            dial.number(action.to)
            response.hangup()
            ended = True
            break
        elif action.type == "hangup":
            flush()
            response.hangup()
            ended = True
            break
        elif action.type == "stream" and action.url:
            flush()
            connect = response.connect()
            connect.stream(url=action.url)
            ended = True
            break
    if not ended:
        gather = _gather(response, None, gather_url)
        for prompt in prompts:
            _add_prompt(gather, prompt)
        prompts.clear()
    return response
