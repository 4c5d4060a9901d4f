"""A scripted fake of the OpenAI chat-completions API at the HTTP layer (respx), for agent tests.

Only the network is faked: the real `ChatOpenAI` and `openai` 2.x client build the requests and
parse the JSON / server-sent-event responses. Each request takes the next scripted response;
`requests` keeps every JSON body so tests can check what the model was sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import respx

if TYPE_CHECKING:
    from tests.orchestrator.conftest import RunningApp

OPENAI_BASE = "https://api.openai.test/v1"


def _completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n"


@dataclass
class Scripted:
    kind: str  # "reply" | "tool" | "error"
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    tool_name: str = ""
    tool_args: list[str] = field(default_factory=list)  # JSON text, split into chunks
    status: int = 200
    tool_id: str = "call_1"


class FakeOpenAI:
    def __init__(self, router: respx.MockRouter, base_url: str = OPENAI_BASE) -> None:
        self.script: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.route = router.post(f"{base_url}/chat/completions").mock(side_effect=self._answer)
        self.embedded: list[str] = []
        self.embeddings_route = router.post(f"{base_url}/embeddings").mock(side_effect=self._embed)

    def _embed(self, request: httpx.Request) -> httpx.Response:
        """Deterministic lexical vectors (the offline hashing embedding stands in for the model)."""
        from orchestrator.memory.embeddings import hash_embed

        texts = json.loads(request.content)["input"]
        self.embedded.extend(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": hash_embed(t, 256).tolist()}
            for i, t in enumerate(texts)
        ]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": data,
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )

    # -- scripting ----------------------------------------------------------------------------

    def reply(self, text: str, tokens: list[str] | None = None) -> FakeOpenAI:
        self.script.append(Scripted("reply", text=text, tokens=tokens or _split(text)))
        return self

    def tool_call(
        self,
        name: str,
        args: dict[str, Any] | str,
        *,
        parts: int = 3,
        call_id: str = "call_1",
        text: str = "",
    ) -> FakeOpenAI:
        """A tool call (arguments split into `parts` stream chunks), optionally after `text`."""
        raw = args if isinstance(args, str) else json.dumps(args)
        size = max(1, -(-len(raw) // parts))
        pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
        self.script.append(
            Scripted(
                "tool",
                text=text,
                tokens=_split(text) if text else [],
                tool_name=name,
                tool_args=pieces,
                tool_id=call_id,
            )
        )
        return self

    def error(self, status: int) -> FakeOpenAI:
        self.script.append(Scripted("error", status=status))
        return self

    # -- answering ----------------------------------------------------------------------------

    def _answer(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        problem = _transcript_problem(body.get("messages", []))
        if problem:  # what the real API rejects, so a malformed transcript fails the test
            return httpx.Response(400, json={"error": {"message": problem, "type": "invalid"}})
        if not self.script:
            return httpx.Response(500, json={"error": {"message": "fake: script exhausted"}})
        step = self.script.pop(0)
        if step.kind == "error":
            return httpx.Response(
                step.status,
                json={"error": {"message": f"fake error {step.status}", "type": "server_error"}},
                headers={"retry-after": "0"},
            )
        if body.get("stream"):
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=self._sse(step).encode(),
            )
        if step.kind == "reply":
            return httpx.Response(
                200, json=_completion({"role": "assistant", "content": step.text}, "stop")
            )
        return httpx.Response(
            200,
            json=_completion(
                {
                    "role": "assistant",
                    "content": step.text or None,
                    "tool_calls": [
                        {
                            "id": step.tool_id,
                            "type": "function",
                            "function": {
                                "name": step.tool_name,
                                "arguments": "".join(step.tool_args),
                            },
                        }
                    ],
                },
                "tool_calls",
            ),
        )

    @staticmethod
    def _sse(step: Scripted) -> str:
        out = [_chunk({"role": "assistant", "content": ""})]
        if step.kind == "reply":
            out += [_chunk({"content": token}) for token in step.tokens]
            out.append(_chunk({}, "stop"))
        else:
            out += [_chunk({"content": token}) for token in step.tokens]
            out.append(
                _chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": step.tool_id,
                                "type": "function",
                                "function": {"name": step.tool_name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in step.tool_args:  # the arguments arrive split across chunks
                out.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            out.append(_chunk({}, "tool_calls"))
        out.append("data: [DONE]\n\n")
        return "".join(out)

    # -- reading what was sent ----------------------------------------------------------------

    def system_prompt(self, index: int = -1) -> str:
        messages = self.requests[index]["messages"]
        return "\n".join(m["content"] for m in messages if m["role"] == "system")

    def tool_results(self, index: int = -1) -> list[str]:
        return [m["content"] for m in self.requests[index]["messages"] if m["role"] == "tool"]


def _transcript_problem(messages: list[dict[str, Any]]) -> str | None:
    """Every tool call of an assistant message is answered by a `tool` message before anything
    else, and every `tool` message answers one (the real API returns 400 otherwise)."""
    calls: set[str] = set()
    unanswered: set[str] = set()
    for message in messages:
        role = message.get("role")
        if role == "tool":
            if message.get("tool_call_id") not in calls:
                return f"tool message for unknown tool_call_id {message.get('tool_call_id')!r}"
            unanswered.discard(message["tool_call_id"])
            continue
        if unanswered:
            return f"tool calls {sorted(unanswered)} have no tool message"
        if role == "assistant":
            calls = {c["id"] for c in message.get("tool_calls") or []}
            unanswered = set(calls)
    return None


def _split(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


@asynccontextmanager
async def app_with_model(
    data_dir: Path, pg_dsn: str
) -> AsyncIterator[tuple[RunningApp, FakeOpenAI]]:
    """The real app on Postgres with its model faked at the HTTP layer: the app, and the fake
    to script its answers with."""
    from tests.orchestrator.conftest import make_settings, run_app

    settings = make_settings(
        data_dir, pg_dsn, openai_api_key="sk-test", openai_base_url=OPENAI_BASE
    )
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        async with run_app(settings) as app:
            yield app, fake
