"""Agent languages: what we accept, and the tag each provider is given.

An agent may say `fr`; Twilio refuses `<Gather language="fr">` (error 13512) and Vonage's speech
input wants `fr-FR`. So a language is stored as the agent wrote it, checked at agent creation
against the languages the providers can both hear and speak (`speakable`, a 422 naming it
otherwise), and turned into a full tag (`for_provider`) only where it is rendered: a bare
language gets its usual region (`fr` -> `fr-FR`, `pt` -> `pt-BR`), a tag keeps its own.

The table is the intersection of Twilio's `<Gather>` speech languages, Vonage's ASR languages and
Amazon Lex's locales for the common cases, which is what a phone agent can use on every provider.
"""

from __future__ import annotations

DEFAULT_LANGUAGE = "en-US"

# language -> its region when none is given
DEFAULT_REGION: dict[str, str] = {
    "ar": "ar-AE",
    "ca": "ca-ES",
    "cs": "cs-CZ",
    "da": "da-DK",
    "de": "de-DE",
    "el": "el-GR",
    "en": "en-US",
    "es": "es-ES",
    "fi": "fi-FI",
    "fr": "fr-FR",
    "he": "he-IL",
    "hi": "hi-IN",
    "hu": "hu-HU",
    "id": "id-ID",
    "it": "it-IT",
    "ja": "ja-JP",
    "ko": "ko-KR",
    "nb": "nb-NO",
    "nl": "nl-NL",
    "pl": "pl-PL",
    "pt": "pt-BR",
    "ro": "ro-RO",
    "ru": "ru-RU",
    "sv": "sv-SE",
    "th": "th-TH",
    "tr": "tr-TR",
    "uk": "uk-UA",
    "vi": "vi-VN",
    "zh": "zh-CN",
}

# full tags the providers hear and speak
SPEECH_TAGS: frozenset[str] = frozenset(
    {
        *DEFAULT_REGION.values(),
        "de-AT",
        "de-CH",
        "en-AU",
        "en-CA",
        "en-GB",
        "en-IE",
        "en-IN",
        "en-NZ",
        "en-ZA",
        "es-MX",
        "es-US",
        "fr-BE",
        "fr-CA",
        "fr-CH",
        "nl-BE",
        "pt-PT",
        "zh-HK",
        "zh-TW",
    }
)


def canonical(language: str) -> str:
    """`EN_us` -> `en-US`, `fr` -> `fr` (case and separator only)."""
    parts = language.strip().replace("_", "-").split("-")
    head, rest = parts[0].lower(), parts[1:]
    return "-".join([head, *(p.upper() if len(p) == 2 else p.title() for p in rest)])


def full_tag(language: str | None) -> str | None:
    """The full tag for a language we can speak, or None: `fr` -> `fr-FR`, `en-gb` -> `en-GB`."""
    if not language or not language.strip():
        return None
    tag = canonical(language)
    if tag in SPEECH_TAGS:
        return tag
    return DEFAULT_REGION.get(tag)


def speakable(language: str) -> bool:
    return full_tag(language) is not None


def for_provider(language: str | None) -> str:
    """What a provider is given: the full tag, or our default for a missing or unknown one
    (agents are checked at creation; this keeps an old stored value from breaking a call)."""
    return full_tag(language) or DEFAULT_LANGUAGE


def base(language: str | None) -> str:
    """`fr-CA` -> `fr` (the key of caller-facing prompts)."""
    return canonical(language).split("-")[0] if language and language.strip() else "en"
