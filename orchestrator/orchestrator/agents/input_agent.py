"""Input agent: cleans what the caller said, classifies the intent, guards the agent's rules.

Pure functions, no I/O: a few microseconds per turn. Card numbers and similar secrets are
redacted here, so the model never sees them. The guard does not refuse to answer a caller
who tries to rewrite the agent's instructions ("ignore your previous instructions", "you are now",
"system prompt: ..."); it marks the turn, strips the attempt from what reaches the LLM as an
instruction, and the orchestrator agent tells the model to treat the caller's words as data.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

from shared.redaction import redact_secrets

MAX_UTTERANCE_CHARS = 1000

Intent = Literal[
    "empty", "dtmf", "greeting", "goodbye", "transfer", "remember", "question", "statement"
]

_NOISE = re.compile(
    r"^(?:\W|_|\b(?:uh+|um+|hmm+|mm+|ah+|er+|erm|huh|noise|inaudible|static|silence|"
    r"background noise|unintelligible)\b)*$",
    re.IGNORECASE,
)
_BRACKETED = re.compile(r"\[(?:noise|inaudible|music|silence|laughter|static|crosstalk)\]", re.I)
_DTMF = re.compile(r"^[0-9*#]{1,32}$")
_SPOKEN_DTMF = re.compile(
    r"^(?:(?:i\s+)?(?:press(?:ed)?|dial(?:ed)?|enter(?:ed)?)\s+)?([0-9*#](?:[\s,-]*[0-9*#])*)$",
    re.I,
)
_GOODBYE = re.compile(
    r"\b(?:good\s?bye|bye(?:\s?bye)?|hang\s+up|that'?s\s+all|end\s+(?:the|this)\s+call|"
    r"i'?m\s+done|no\s+more\s+questions|talk\s+(?:to\s+you\s+)?later|have\s+a\s+(?:good|nice)\s+"
    r"(?:day|one|night))\b",
    re.I,
)
_TRANSFER = re.compile(
    r"\b(?:(?:speak|talk)\s+(?:to|with)\s+(?:a|an|the|some|your)?\s*(?:real\s+)?"
    r"(?:human|person|agent|representative|operator|someone|manager|somebody)|"
    r"(?:get|give|find)\s+me\s+(?:a|an|the|some)?\s*(?:real\s+)?"
    r"(?:human|person|agent|representative|operator|someone|manager|somebody)|"
    r"^(?:a\s+|an\s+)?(?:real\s+)?(?:human|person|agent)(?:\s+please)?[.!]?$|"
    r"transfer\s+me|put\s+me\s+through|connect\s+me\s+(?:to|with)|"
    r"(?:human|live|real)\s+(?:agent|person|representative)|representative|operator)\b",
    re.I,
)
_REMEMBER = re.compile(
    r"\b(?:please\s+)?(?:remember|note|keep\s+in\s+mind|don'?t\s+forget|make\s+a\s+note)"
    r"(?:\s+(?:that|this))?\s*[:,]?\s+(?P<fact>.+)$",
    re.I,
)
_GREETING = re.compile(
    r"^(?:hi|hello|hey|good\s+(?:morning|afternoon|evening)|howdy)\b[\s!.,]*$", re.I
)
_QUESTION = re.compile(
    r"\?\s*$|^(?:what|when|where|who|whom|why|how|which|is|are|am|do|does|did|can|could|would|"
    r"will|should|may|have|has|tell\s+me|i\s+(?:want|need|would\s+like)\s+to\s+know)\b",
    re.I,
)
_INJECTION = re.compile(
    r"(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|my\s+)*"
    r"(?:previous|prior|above|earlier|system|original)?\s*(?:instructions|rules|prompts?|guidelines)"
    r"|\byou\s+are\s+now\b|\bfrom\s+now\s+on\s+you\b|\bact\s+as\s+(?:if|an?|the)\b"
    r"|\b(?:system|developer)\s*(?:prompt|message|instructions?)\s*[:=]"
    r"|\bnew\s+instructions?\s*[:=]|\bjailbreak\b|\bDAN\b"
    r"|\breveal\s+(?:your|the)\s+(?:system\s+)?(?:prompt|instructions)"
    r"|\bpretend\s+(?:to\s+be|you\s+are)\b"
    r"|</?(?:system|assistant|instructions?)>",
    re.I,
)


@dataclass(slots=True)
class NormalisedInput:
    text: str  # what the rest of the graph sees
    intent: Intent
    dtmf: str | None = None
    remember_fact: str | None = None
    injection: bool = False
    trimmed: bool = False
    flags: list[str] = field(default_factory=list)


def _clean(raw: str) -> str:
    text = unicodedata.normalize("NFKC", raw)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    text = _BRACKETED.sub(" ", text)
    return " ".join(text.split())


def classify(text: str) -> tuple[Intent, str | None]:
    m = _REMEMBER.search(text)
    if m:
        fact = m.group("fact").strip(" .!")
        if fact:
            return "remember", fact
    if _TRANSFER.search(text):
        return "transfer", None
    if _GOODBYE.search(text):
        return "goodbye", None
    if _GREETING.match(text):
        return "greeting", None
    if _QUESTION.search(text):
        return "question", None
    return "statement", None


def normalise(raw: str, input_type: str = "speech") -> NormalisedInput:
    text = _clean(raw or "")
    if not text or _NOISE.match(text):
        return NormalisedInput(text="", intent="empty", flags=["empty"] if not text else ["noise"])
    digits: str | None = None
    if input_type == "dtmf":
        digits = re.sub(r"[\s,-]", "", text)
    elif m := _SPOKEN_DTMF.match(text):
        digits = re.sub(r"[\s,-]", "", m.group(1)) if m.group(0) != m.group(1) else None
    if digits and _DTMF.match(digits):
        return NormalisedInput(text=f"The caller pressed {digits}.", intent="dtmf", dtmf=digits)
    flags: list[str] = []
    redacted = redact_secrets(text)
    if redacted != text:  # a card number or similar never reaches the model or the store
        text = redacted
        flags.append("redacted")
    trimmed = False
    if len(text) > MAX_UTTERANCE_CHARS:
        cut = text.rfind(" ", 0, MAX_UTTERANCE_CHARS)
        text = text[: cut if cut > MAX_UTTERANCE_CHARS // 2 else MAX_UTTERANCE_CHARS]
        trimmed = True
        flags.append("trimmed")
    injection = bool(_INJECTION.search(text))
    if injection:
        flags.append("injection")
    intent, fact = classify(text)
    return NormalisedInput(
        text=text,
        intent=intent,
        remember_fact=fact,
        injection=injection,
        trimmed=trimmed,
        flags=flags,
    )
