"""Everything the gateway itself says to a caller, per language, in one place.

The agent's own words come from the orchestrator; these are the gateway's: when the orchestrator
cannot answer, when the caller is silent, when a transfer fails, when the gateway is shutting
down. A caller hears them in the agent's language when we have it (by its base language: `fr-CA`
uses `fr`), else in English.
"""

from __future__ import annotations

from typing import Literal

from shared.languages import base

Prompt = Literal[
    "greeting",  # the call starts but the orchestrator cannot give the agent's greeting
    "apology",  # a turn the orchestrator could not answer: the caller is asked again
    "unavailable",  # the call cannot be handled at all: said before hanging up
    "busy",  # a new call while this instance shuts down
    "reprompt",  # the caller said nothing
    "silence_goodbye",  # the caller stayed silent: goodbye and hang up
    "transfer_failed",  # the person the call was transferred to did not answer
    "goodbye",  # a polite end
    "holding",  # a streamed reply is slow to start: said while the agent keeps working
]

PROMPTS: dict[str, dict[Prompt, str]] = {
    "en": {
        "greeting": "Hello! How can I help you today?",
        "apology": "Sorry, one moment please. Could you say that again?",
        "unavailable": "Sorry, we're having trouble right now. Please call again later. Goodbye.",
        "busy": "Sorry, we can't take your call right now. Please call back in a moment. Goodbye.",
        "reprompt": "Sorry, I didn't catch that. Could you say it again?",
        "silence_goodbye": (
            "I can't hear you, so I'll hang up now. Please call again any time. Goodbye."
        ),
        "transfer_failed": (
            "I'm sorry, I couldn't connect you right now. Is there anything else I can help with?"
        ),
        "goodbye": "Thank you for calling. Goodbye.",
        "holding": "One moment, please.",
    },
    "fr": {
        "greeting": "Bonjour ! Comment puis-je vous aider ?",
        "apology": "Excusez-moi, un instant. Pourriez-vous répéter ?",
        "unavailable": (
            "Désolé, nous rencontrons un problème. Merci de rappeler plus tard. Au revoir."
        ),
        "busy": "Désolé, nous ne pouvons pas prendre votre appel. Merci de rappeler. Au revoir.",
        "reprompt": "Pardon, je n'ai pas compris. Pourriez-vous répéter ?",
        "silence_goodbye": "Je ne vous entends pas, je vais raccrocher. Au revoir.",
        "transfer_failed": (
            "Désolé, je n'ai pas pu vous mettre en relation. Puis-je vous aider autrement ?"
        ),
        "goodbye": "Merci de votre appel. Au revoir.",
        "holding": "Un instant, s'il vous plaît.",
    },
    "es": {
        "greeting": "¡Hola! ¿En qué puedo ayudarle?",
        "apology": "Perdón, un momento. ¿Podría repetirlo?",
        "unavailable": "Lo sentimos, tenemos un problema. Llame más tarde, por favor. Adiós.",
        "busy": "Lo sentimos, no podemos atender su llamada ahora. Llame en un momento. Adiós.",
        "reprompt": "Perdón, no le he entendido. ¿Podría repetirlo?",
        "silence_goodbye": "No le oigo, así que voy a colgar. Llame cuando quiera. Adiós.",
        "transfer_failed": "Lo siento, no he podido transferirle. ¿Puedo ayudarle en algo más?",
        "goodbye": "Gracias por llamar. Adiós.",
        "holding": "Un momento, por favor.",
    },
    "de": {
        "greeting": "Hallo! Wie kann ich Ihnen helfen?",
        "apology": "Entschuldigung, einen Moment bitte. Könnten Sie das wiederholen?",
        "unavailable": (
            "Entschuldigung, wir haben gerade ein Problem. Bitte rufen Sie später an. "
            "Auf Wiederhören."
        ),
        "busy": "Wir können Ihren Anruf gerade nicht annehmen. Bitte rufen Sie gleich wieder an.",
        "reprompt": "Entschuldigung, das habe ich nicht verstanden. Könnten Sie es wiederholen?",
        "silence_goodbye": "Ich höre Sie nicht und lege jetzt auf. Auf Wiederhören.",
        "transfer_failed": (
            "Ich konnte Sie leider nicht verbinden. Kann ich sonst noch etwas für Sie tun?"
        ),
        "goodbye": "Danke für Ihren Anruf. Auf Wiederhören.",
        "holding": "Einen Moment, bitte.",
    },
}


def say(prompt: Prompt, language: str | None = None) -> str:
    """The words of `prompt` in `language` (English when we have no translation)."""
    return PROMPTS.get(base(language), PROMPTS["en"])[prompt]
