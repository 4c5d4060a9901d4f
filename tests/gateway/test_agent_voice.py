"""The agent's configured voice (`Action.voice`) reaches the providers' speech verbs."""

from __future__ import annotations

from defusedxml import ElementTree

from realtime_gateway.drivers.twilio_twiml import render_actions as render_twiml
from realtime_gateway.drivers.vonage_ncco import render_actions as render_ncco
from shared.contract import Action


def test_twilio_say_carries_the_agents_voice_and_language() -> None:
    actions = [Action.say("Hello there", "en-GB", voice="Polly.Amy"), Action.gather()]
    root = ElementTree.fromstring(str(render_twiml(actions, "https://gw.example/g")))
    say = root.find("Gather/Say")
    assert say is not None
    assert (say.text, say.get("voice"), say.get("language")) == (
        "Hello there",
        "Polly.Amy",
        "en-GB",
    )


def test_twilio_say_without_a_voice_has_no_voice_attribute() -> None:
    root = ElementTree.fromstring(str(render_twiml([Action.say("Hi")], "https://gw.example/g")))
    say = root.find(".//Say")
    assert say is not None
    assert say.get("voice") is None


def test_vonage_talk_uses_a_numeric_voice_as_its_style_and_ignores_named_voices() -> None:
    styled = render_ncco([Action.say("Hello", "en-US", voice="2")], "https://gw.example/i", None)
    named = render_ncco(
        [Action.say("Hello", "en-US", voice="Polly.Amy")], "https://gw.example/i", None
    )
    talk = styled.ncco[0]
    assert talk["action"] == "talk"
    assert talk["style"] == 2
    assert "style" not in named.ncco[0]
