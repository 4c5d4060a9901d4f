"""Chat models for the orchestrator agent: the `openai` 2.x async client, called directly.

The graph's transcript stays langchain-core messages (LangGraph state); the model call itself
(`llm.calls.call_llm`) goes straight to `openai.AsyncOpenAI` with tool calling and streaming:
langchain's `ChatOpenAI` added ~1 ms a turn of Runnable/callback machinery on top of the same
client (measured 4.3 vs 3.5 ms per streamed call against an instant server).

Why `openai` is pinned to 2.x: the 2.x client sends every request through `httpx`, so the tests
fake the OpenAI API at the HTTP layer with `respx` (a real `openai` client, real
request/response parsing and SSE decoding; only the network is replaced). `openai` 3.x moved
to `httpx2`, which respx does not intercept. We also hand the client our own pooled
`httpx.AsyncClient` (opened in the lifespan), so connections are reused across turns.

`max_retries=0`: retries on 429/5xx are ours (`llm.calls`), with short waits that fit a phone
turn, and only before the first streamed token reaches the caller. `OPENAI_BASE_URL` points the
same code at any OpenAI-compatible server (Ollama, vLLM, LiteLLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from orchestrator.config import OrchestratorSettings

if TYPE_CHECKING:
    from openai import AsyncOpenAI


@dataclass(frozen=True, slots=True)
class ChatModel:
    """What one model call needs: the shared client, the model name and its temperature."""

    client: AsyncOpenAI
    model: str
    temperature: float


class LLMFactory:
    def __init__(self, settings: OrchestratorSettings, http: httpx.AsyncClient) -> None:
        if settings.openai_api_key is None:
            raise ValueError("OPENAI_API_KEY is not set; use the offline responder")
        self._settings = settings
        self._http = http
        self._client: AsyncOpenAI | None = None

    @property
    def default_model(self) -> str:
        return self._settings.openai_model

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            from openai import AsyncOpenAI

            s = self._settings
            assert s.openai_api_key is not None
            self._client = AsyncOpenAI(
                api_key=s.openai_api_key.get_secret_value(),
                base_url=str(s.openai_base_url).rstrip("/") if s.openai_base_url else None,
                timeout=s.llm_timeout_s,
                max_retries=0,
                http_client=self._http,
            )
            # Load the chat resources now (the SDK imports them lazily, ~0.5 s cold).
            _ = self._client.chat.completions
        return self._client

    def chat(self, model: str | None = None, temperature: float = 0.3) -> ChatModel:
        return ChatModel(
            self.client, model or self._settings.openai_model, round(float(temperature), 3)
        )
