"""Chat models for the orchestrator agent: langchain-openai `ChatOpenAI` (as `PhoneChatOpenAI`,
see `chat_model.py`), one per (model, temperature).

Why `openai` is pinned to 2.x: the 2.x client sends every request through `httpx`, so the tests
fake the OpenAI API at the HTTP layer with `respx` (a real `ChatOpenAI`, a real `openai` client,
real request/response parsing and SSE decoding; only the network is replaced). `openai` 3.x moved
to `httpx2`, which respx does not intercept. We also hand the client our own pooled
`httpx.AsyncClient` (opened in the lifespan), so connections are reused across turns.

`max_retries=0`: retries on 429/5xx are ours (`llm.calls`), with short waits that fit a phone
turn, and only before the first streamed token reaches the caller. `OPENAI_BASE_URL` points the
same code at any OpenAI-compatible server (Ollama, vLLM, LiteLLM).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import httpx

from orchestrator.config import OrchestratorSettings

if TYPE_CHECKING:
    from orchestrator.llm.chat_model import PhoneChatOpenAI


class LLMFactory:
    def __init__(self, settings: OrchestratorSettings, http: httpx.AsyncClient) -> None:
        if settings.openai_api_key is None:
            raise ValueError("OPENAI_API_KEY is not set; use the offline responder")
        self._settings = settings
        self._http = http
        self._own_http: httpx.AsyncClient | None = None
        self._lock = threading.Lock()  # chat() is first called from a warm-up thread
        self._cache: dict[tuple[str, float], PhoneChatOpenAI] = {}

    def _client(self) -> httpx.AsyncClient:
        """The HTTP client the models send through: with LLM_HTTP_TRANSPORT=aiohttp (default) our
        own pooled client over httpx-aiohttp, made on first use (aiohttp is imported off the
        start-up path, by the background warm-up); with `httpx`, the client handed in."""
        if self._settings.llm_http_transport == "httpx":
            return self._http
        with self._lock:
            if self._own_http is None:
                from httpx_aiohttp import AiohttpTransport

                base = str(self._settings.openai_base_url or "https://api.openai.com/v1")
                self._own_http = httpx.AsyncClient(
                    timeout=self._http.timeout,
                    follow_redirects=False,
                    transport=AiohttpTransport(
                        verify=base.startswith("https://"),
                        limits=httpx.Limits(max_connections=200),
                    ),
                )
            return self._own_http

    async def aclose(self) -> None:
        if self._own_http is not None:
            await self._own_http.aclose()

    @property
    def default_model(self) -> str:
        return self._settings.openai_model

    def chat(self, model: str | None = None, temperature: float = 0.3) -> PhoneChatOpenAI:
        # langchain-openai's ChatOpenAI, minus the SDK's per-request body walk (chat_model.py).
        from orchestrator.llm.chat_model import PhoneChatOpenAI

        key = (model or self._settings.openai_model, round(float(temperature), 3))
        llm = self._cache.get(key)
        if llm is None:
            s = self._settings
            assert s.openai_api_key is not None
            llm = PhoneChatOpenAI(
                model=key[0],
                temperature=key[1],
                api_key=s.openai_api_key,
                base_url=str(s.openai_base_url).rstrip("/") if s.openai_base_url else None,
                timeout=s.llm_timeout_s,
                max_retries=0,
                http_async_client=self._client(),
                stream_usage=False,
            )
            self._cache[key] = llm
        return llm
