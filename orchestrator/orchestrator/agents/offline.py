"""The offline responder: honest, useful answers without a language model and without network.

It greets (with what it remembers of a returning caller), answers questions from the knowledge
base by retrieval (the best-matching sentences of the best chunks), answers from the caller's own
memories ("what is my account number?"), and recognises transfer / goodbye / "remember that"
intents, which it turns into the same tool calls the LLM would make, so the tool agent emits the
same actions on both paths. When it has nothing relevant, it says so and offers a person.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from orchestrator.agents.input_agent import NormalisedInput
from orchestrator.agents.tool_agent import ToolCall
from orchestrator.memory.caller_memory import FACT, MemoryRecord
from orchestrator.memory.embeddings import content_words, hash_embed
from orchestrator.memory.knowledge import KnowledgeHit

KNOWLEDGE_MIN_SCORE = 0.18
MEMORY_MIN_SCORE = 0.3
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PRONOUNS = (
    (r"\bmy\b", "your"),
    (r"\bmine\b", "yours"),
    (r"\bI am\b", "you are"),
    (r"\bI'm\b", "you're"),
    (r"\bI\b", "you"),
    (r"\bme\b", "you"),
)


@dataclass(slots=True)
class OfflineDecision:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    source: str = "rule"  # rule | knowledge | memory | fallback


def second_person(fact: str) -> str:
    """'my account number is 4411' -> 'your account number is 4411'."""
    out = fact
    for pattern, repl in _PRONOUNS:
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    return out


@lru_cache(maxsize=4096)
def _sentence_vector(text: str) -> np.ndarray:
    """Knowledge sentences recur turn after turn: embed each once (read-only vectors)."""
    vec = hash_embed(text)
    vec.setflags(write=False)
    return vec


@lru_cache(maxsize=4096)
def _sentence_words(text: str) -> frozenset[str]:
    return frozenset(content_words(text))


def _score(query_vec: np.ndarray, text: str) -> float:
    return float(np.dot(query_vec, _sentence_vector(text)))


def best_sentences(query: str, hits: Sequence[KnowledgeHit], limit: int = 2) -> tuple[str, float]:
    """The sentences of the retrieved chunks that best match the query, in document order."""
    qv = hash_embed(query)
    qwords = set(content_words(query))
    scored: list[tuple[float, int, str]] = []
    order = 0
    for hit in hits:
        for sentence in _SENTENCE.split(hit.text):
            sentence = sentence.strip()
            if len(sentence) < 3:
                continue
            overlap = len(qwords & _sentence_words(sentence)) / max(1, len(qwords))
            scored.append((0.6 * _score(qv, sentence) + 0.4 * overlap, order, sentence))
            order += 1
    if not scored:
        return "", 0.0
    ranked = sorted(scored, key=lambda t: -t[0])
    top = ranked[0][0]
    chosen = [t for t in ranked[:limit] if t[0] >= max(KNOWLEDGE_MIN_SCORE, top * 0.75)]
    chosen.sort(key=lambda t: t[1])
    return " ".join(t[2] for t in chosen), top


def relevant_memory(
    query: str, memories: Sequence[MemoryRecord]
) -> tuple[MemoryRecord | None, float]:
    if not memories:
        return None, 0.0
    qv = hash_embed(query)
    qwords = set(content_words(query)) - {"remember", "told", "tell", "said", "know"}
    best: tuple[MemoryRecord | None, float] = (None, 0.0)
    for memory in memories:
        vec = memory.embedding if memory.embedding is not None else hash_embed(memory.text)
        overlap = len(qwords & set(content_words(memory.text))) / max(1, len(qwords))
        score = 0.5 * float(np.dot(qv, vec)) + 0.5 * overlap
        if score > best[1]:
            best = (memory, score)
    return best


def greeting_for(base: str, memories: Sequence[MemoryRecord]) -> str:
    """The agent's greeting, plus what we kept from the caller's last call(s)."""
    if not memories:
        return base
    facts = [m for m in memories if m.kind == FACT][:2]
    if facts:
        noted = "; ".join(second_person(m.text).rstrip(".") for m in facts)
        return f"{base} Welcome back! I have a note from your last call: {noted}."
    return f"{base} Welcome back! Last time: {memories[0].text.rstrip('.')}."


def decide(
    inp: NormalisedInput,
    *,
    memories: Sequence[MemoryRecord],
    knowledge: Sequence[KnowledgeHit],
    can_transfer: bool,
) -> OfflineDecision:
    if inp.intent == "empty":
        return OfflineDecision("Sorry, I didn't catch that. Could you say it again?")
    if inp.intent == "dtmf":
        if inp.dtmf == "0" and can_transfer:
            return OfflineDecision("", [ToolCall("offline-transfer", "transfer_call", {})])
        return OfflineDecision(f"You pressed {' '.join(inp.dtmf or '')}. How can I help?")
    if inp.injection:
        return OfflineDecision(
            "I can't change how I work, but I'm happy to help with your question."
        )
    if inp.intent == "transfer":
        if can_transfer:
            return OfflineDecision("", [ToolCall("offline-transfer", "transfer_call", {})])
        return OfflineDecision(
            "I'm sorry, no one is available to take your call right now. "
            "Is there anything else I can help with?"
        )
    if inp.intent == "goodbye":
        return OfflineDecision(
            "", [ToolCall("offline-end", "end_call", {"reason": "caller_goodbye"})]
        )
    if inp.intent == "remember" and inp.remember_fact:
        fact = inp.remember_fact
        return OfflineDecision(
            f"Okay, I'll remember that {second_person(fact)}.",
            [ToolCall("offline-remember", "remember", {"fact": fact})],
        )
    if inp.intent == "greeting":
        return OfflineDecision("Hello! How can I help you today?")
    memory, m_score = relevant_memory(inp.text, memories)
    answer, k_score = best_sentences(inp.text, knowledge)
    if memory is not None and m_score >= MEMORY_MIN_SCORE and m_score >= k_score:
        return OfflineDecision(
            f"You told me before that {second_person(memory.text).rstrip('.')}.", source="memory"
        )
    if answer and k_score >= KNOWLEDGE_MIN_SCORE:
        return OfflineDecision(answer, source="knowledge")
    offer = " I can transfer you to a person if you like." if can_transfer else ""
    return OfflineDecision(
        "I'm sorry, I don't have information about that." + offer, source="fallback"
    )


def summarise(user_lines: Sequence[str], facts: Sequence[str]) -> str:
    """An extractive call summary: what the caller asked about, and what we noted."""
    parts: list[str] = []
    topics = [line for line in user_lines if len(line.split()) >= 3][:3]
    if topics:
        parts.append("The caller asked: " + "; ".join(t.rstrip(".?!") for t in topics) + ".")
    if facts:
        parts.append("Noted: " + "; ".join(f.rstrip(".") for f in facts) + ".")
    return " ".join(parts)
