"""The model as a judge of rubrics and as a simulated caller, only when a model key is set.

It talks to the same OpenAI-compatible chat-completions API the orchestrator uses
(`OPENAI_API_KEY`, `OPENAI_BASE_URL` for any compatible server, `OPENAI_MODEL`; `EVAL_MODEL`
judges with another model than the agent's). A verdict is asked for as JSON with a schema
(`response_format: json_schema`, strict): `{"passed": bool, "reason": str}`. A simulated
caller's next line is plain text; `[DONE]` ends the call (goal met, or nothing left to say).
Without a key there is no `Model`: rubrics and simulated calls are reported as skipped, never
as passed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DONE = "[DONE]"
NO_KEY = (
    "no model key: set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server) to judge it"
)
MODEL_TIMEOUT_S = 60.0

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"passed": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["passed", "reason"],
    "additionalProperties": False,
}
JUDGE_PROMPT = (
    "You grade phone calls between a caller and an AI phone agent. You get a rubric and the "
    "call's transcript. Decide strictly whether the agent's side of the call satisfies the "
    "rubric. Answer with JSON: passed (true or false) and reason (one or two sentences, citing "
    "what the agent said)."
)
CALLER_PROMPT = (
    "You are role-playing a person calling a business on the phone; the other side is the "
    "business's AI phone agent. Persona: {persona}\nYour goal: {goal}\nSpeak as this caller, "
    "one short spoken line at a time (no stage directions, no quotes). When your goal is met, "
    f"or the agent has ended the call, or you have nothing more to say, answer exactly {DONE}."
)


class ModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    api_key: str
    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelConfig | None:
        env = os.environ if env is None else env
        key = env.get("OPENAI_API_KEY")
        if not key:
            return None
        return cls(
            api_key=key,
            base_url=(env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            model=env.get("EVAL_MODEL") or env.get("OPENAI_MODEL") or DEFAULT_MODEL,
        )


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


class Model:
    def __init__(self, config: ModelConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http

    async def complete(
        self, messages: Sequence[Mapping[str, str]], schema: dict[str, Any] | None = None
    ) -> str:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "temperature": 0,
        }
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": schema, "strict": True},
            }
        try:
            r = await self.http.post(
                f"{self.config.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.config.api_key}"},
                timeout=MODEL_TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise ModelError(f"the model is unreachable: {type(exc).__name__}") from None
        if r.status_code != 200:
            raise ModelError(f"the model answered HTTP {r.status_code}: {r.text[:200]}")
        try:
            return str(r.json()["choices"][0]["message"].get("content") or "")
        except (ValueError, KeyError, IndexError, TypeError):
            raise ModelError("the model's answer is not a chat completion") from None

    async def judge(self, rubric: str, transcript: str) -> Verdict:
        content = await self.complete(
            [
                {"role": "system", "content": JUDGE_PROMPT},
                {"role": "user", "content": f"Rubric: {rubric}\n\nTranscript:\n{transcript}"},
            ],
            VERDICT_SCHEMA,
        )
        try:
            data = json.loads(content)
            return Verdict(data["passed"] is True, str(data["reason"]))
        except (ValueError, KeyError, TypeError):
            raise ModelError(
                f"the model's verdict is not the JSON asked for: {content[:200]}"
            ) from None

    async def caller_line(
        self, persona: str, goal: str, transcript: Sequence[tuple[str, str]]
    ) -> str | None:
        """The simulated caller's next words, or None when the caller is done."""
        messages = [{"role": "system", "content": CALLER_PROMPT.format(persona=persona, goal=goal)}]
        for speaker, text in transcript:  # the agent speaks to "us": it is the user here
            messages.append(
                {"role": "user" if speaker == "agent" else "assistant", "content": text}
            )
        line = (await self.complete(messages)).strip()
        if not line or DONE in line:
            return None
        return line


def transcript_text(lines: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{'Agent' if who == 'agent' else 'Caller'}: {text}" for who, text in lines)
