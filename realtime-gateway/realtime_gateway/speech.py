"""Fitting a reply to what a provider can speak: its language tags and its length limits.

The call flow applies `fit` to every reply before an adapter renders it, so no adapter has to
know that Twilio refuses `<Gather language="fr">` (it wants `fr-FR`), that one `<Say>` stops at
4,096 characters (3,000 for Amazon Polly voices), that a Vonage `talk` stops at 1,500, or that an
Amazon Connect answer must stay a small flat map. Long text is split at sentence boundaries (then
at word boundaries for a sentence longer than the limit), never mid-word; where a provider can
only speak a bounded amount per reply (`reply_chars`), whole sentences past it are dropped and
logged, rather than the text being cut anywhere.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.contract import Action
from shared.languages import for_provider

log = logging.getLogger(__name__)

# after . ! ? … and their CJK full-width forms
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026\u3002\uff01\uff1f])\s+")


@dataclass(frozen=True, slots=True)
class SpeechLimits:
    say_chars: int = 4096  # one spoken element
    # a smaller limit for voices whose name starts with one of these prefixes
    voice_say_chars: tuple[tuple[str, int], ...] = field(default=())
    reply_chars: int | None = None  # everything spoken in one reply (None: no limit)

    def for_voice(self, voice: str | None) -> int:
        for prefix, limit in self.voice_say_chars:
            if voice and voice.startswith(prefix):
                return min(limit, self.say_chars)
        return self.say_chars


def sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def _pack(parts: list[str], limit: int) -> list[str]:
    """Consecutive `parts` joined by spaces into pieces of at most `limit` characters (a part
    is never split here)."""
    pieces: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current} {part}" if current else part
        if len(candidate) > limit and current:
            pieces.append(current)
            current = part
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def _words_within(sentence: str, limit: int) -> list[str]:
    """A sentence longer than `limit`, cut at spaces (a single longer word is cut as a last
    resort: no provider can speak it whole anyway)."""
    words: list[str] = []
    for word in sentence.split():
        words.extend(word[i : i + limit] for i in range(0, len(word), limit))
    return _pack(words, limit)


def split_text(text: str, limit: int) -> list[str]:
    """`text` as consecutive pieces of at most `limit` characters, cut between sentences."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    for sentence in sentences(text):
        parts.extend([sentence] if len(sentence) <= limit else _words_within(sentence, limit))
    return _pack(parts, limit)


def _truncate(text: str, budget: int) -> str:
    """The longest run of whole sentences (or, for a first sentence too long, whole words)
    that fits in `budget` characters."""
    kept = ""
    for sentence in sentences(text):
        candidate = f"{kept} {sentence}" if kept else sentence
        if len(candidate) > budget:
            if not kept:
                pieces = _words_within(sentence, budget)
                kept = pieces[0] if pieces else ""
            break
        kept = candidate
    return kept


def fit(actions: Sequence[Action], limits: SpeechLimits) -> list[Action]:
    """The reply with full language tags and every `say` within the provider's limits."""
    out: list[Action] = []
    budget = limits.reply_chars
    for action in actions:
        if action.language is not None:
            action = action.model_copy(update={"language": for_provider(action.language)})
        if action.type != "say" or not action.text:
            out.append(action)
            continue
        text = action.text.strip()
        if budget is not None:
            if len(text) > budget:
                kept = _truncate(text, budget)
                log.warning(
                    "reply longer than the provider can speak; trailing sentences dropped",
                    extra={"chars": len(text), "kept": len(kept)},
                )
                text = kept
            budget = max(0, budget - len(text) - 1)
            if not text:
                continue
        for piece in split_text(text, limits.for_voice(action.voice)):
            out.append(action.model_copy(update={"text": piece}))
    return out
