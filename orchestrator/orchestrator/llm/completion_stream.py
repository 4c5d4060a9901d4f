"""A streamed chat completion read straight off the wire: each `data:` line parsed once, its text
handed to the caller's sink, the deltas folded into one `AIMessage` at the end.

Why: on a streamed phone turn every token crosses the orchestrator, and each one went through
the `openai` SDK's SSE decoder and its `ChatCompletionChunk` model (`construct_type`, recursive),
back to a dict (`model_dump`), into a langchain `AIMessageChunk` with its callbacks, then merged
into the running message (`full + chunk`, a new message every token), with langchain-openai's
per-chunk `asyncio.wait_for` (a task per token on Python 3.11) on top. Measured under the relay
bench (py-spy, 20 calls) that was about a tenth of the orchestrator's CPU and most of what it
added between the model's first token and ours. Here a token costs one `json.loads` and one
await of the sink.

What stays the same: the request (langchain-openai builds the payload, `PhoneChatOpenAI` sends
it as the SDK would: the SDK itself the first time, its request replayed after; see
`chat_model.py`); the errors (a status >= 400 is the SDK's own `APIStatusError` subclass, a
timeout `APITimeoutError`, a broken connection `APIConnectionError`, an `error` object in the
stream `APIError`, as the SDK raises them); the per-chunk bound (the client's read timeout, which
the transport applies to every read); and the message (`content`, `tool_calls`,
`invalid_tool_calls`, parsed by langchain from the same merged tool-call chunks). Closing the
iterator closes the upstream request at once (barge-in: the model stops writing and billing).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from shared import sse

DONE = b"[DONE]"


@dataclass(slots=True)
class _ToolCallParts:
    id: str | None = None
    name: str | None = None
    args: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CompletionFold:
    """The deltas of one streamed completion, folded as they come."""

    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallParts] = field(default_factory=dict)
    finish_reason: str | None = None
    model: str | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Fold one chunk in; return its text (empty when it carries none)."""
        choices = chunk.get("choices")
        if not choices:
            return ""
        choice = choices[0]
        if reason := choice.get("finish_reason"):
            self.finish_reason = reason
            self.model = chunk.get("model") or self.model
        delta = choice.get("delta")
        if not delta:
            return ""
        for call in delta.get("tool_calls") or ():
            parts = self.tool_calls.setdefault(call.get("index", 0), _ToolCallParts())
            parts.id = parts.id or call.get("id")
            function = call.get("function") or {}
            parts.name = parts.name or function.get("name")
            if arguments := function.get("arguments"):
                parts.args.append(arguments)
        text = delta.get("content")
        if isinstance(text, str) and text:
            self.text.append(text)
            return text
        return ""

    def message(self) -> Any:
        """The whole answer as langchain's `AIMessage` (tool-call arguments parsed as langchain
        parses merged chunks: what is not JSON becomes an invalid tool call)."""
        from langchain_core.messages import AIMessage, AIMessageChunk

        merged = AIMessageChunk(
            content="".join(self.text),
            tool_call_chunks=[
                {
                    "name": parts.name,
                    "args": "".join(parts.args),
                    "id": parts.id,
                    "index": index,
                    "type": "tool_call_chunk",
                }
                for index, parts in sorted(self.tool_calls.items())
            ],
        )
        metadata: dict[str, Any] = {"model_provider": "openai"}
        if self.finish_reason:
            metadata["finish_reason"] = self.finish_reason
        if self.model:
            metadata["model_name"] = self.model
        return AIMessage(
            content=merged.content,
            tool_calls=merged.tool_calls,
            invalid_tool_calls=merged.invalid_tool_calls,
            response_metadata=metadata,
        )


async def chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON object of each `data:` line of a chat-completions event stream, until `[DONE]`.
    Raises `openai.APIError` for an `error` object in the stream (as the SDK does), and the
    SDK's timeout/connection errors for a read that fails."""
    request = response.request
    try:
        async for line in sse.lines(response.aiter_raw()):
            if not line.startswith(b"data:"):
                continue  # blank separators, `event:`/`id:`/`:` comment lines
            data = line[5:].strip()
            if data == DONE:
                return
            if not data:
                continue
            chunk = json.loads(data)
            if isinstance(chunk, dict):
                if chunk.get("error"):
                    raise _stream_error(chunk, request)
                yield chunk
    except httpx.TimeoutException as err:
        raise openai.APITimeoutError(request=request) from err
    except httpx.TransportError as err:
        raise openai.APIConnectionError(request=request) from err


def _stream_error(chunk: dict[str, Any], request: httpx.Request) -> openai.APIError:
    error = chunk["error"]
    message = error.get("message") if isinstance(error, dict) else None
    return openai.APIError(
        message=message or "An error occurred during streaming", request=request, body=error
    )
