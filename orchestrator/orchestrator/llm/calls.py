"""One LLM round with our retry policy and optional token streaming.

Retryable: 429, 5xx, timeouts and connection errors, up to `max_retries` extra attempts with a
short backoff (a phone caller is waiting), none once `retry_window_s` has passed since the first
attempt (three slow timeouts in a row would keep the caller waiting for half a minute), and only
while nothing has been streamed to the caller
(a retry after tokens were spoken would repeat them). When the attempts are spent `LLMUnavailable`
is raised and the orchestrator agent speaks a graceful fallback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from orchestrator.metrics import count_error

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

    from orchestrator.llm.factory import ChatModel

log = logging.getLogger(__name__)

TokenSink = Callable[[str], Awaitable[None]]


class LLMUnavailable(Exception):
    """The model could not answer after the retries allowed."""


@dataclass(slots=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_s: float = 0.25
    max_backoff_s: float = 1.0
    # No retry starts after this long since the first attempt: a caller is on the line.
    retry_window_s: float = 10.0


@dataclass(slots=True)
class LLMResult:
    message: AIMessage
    attempts: int
    elapsed_ms: float
    streamed_chars: int = 0
    errors: list[str] = field(default_factory=list)


def is_retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError | openai.APITimeoutError | TimeoutError)


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """The transcript (langchain-core messages, the graph's state) as chat-completions JSON."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else json.dumps(m.content)
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": content})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": content})
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": content, "tool_call_id": m.tool_call_id})
        elif isinstance(m, AIMessage):
            entry: dict[str, Any] = {"role": "assistant", "content": content}
            calls = [
                {
                    "id": tc.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {"name": tc["name"], "arguments": json.dumps(tc.get("args") or {})},
                }
                for i, tc in enumerate(m.tool_calls)
            ] + [
                {
                    "id": bad.get("id") or f"invalid_{i}",
                    "type": "function",
                    "function": {"name": bad.get("name") or "", "arguments": bad.get("args") or ""},
                }
                for i, bad in enumerate(m.invalid_tool_calls)
            ]
            if calls:
                entry["tool_calls"] = calls
                entry["content"] = content or None
            out.append(entry)
        else:  # pragma: no cover - the graph builds only the four kinds above
            raise TypeError(f"unsupported message type {type(m).__name__}")
    return out


def _assistant_message(content: str, raw_calls: Sequence[tuple[str, str, str]]) -> AIMessage:
    """An AIMessage from the model's text and its (id, name, JSON arguments) tool calls;
    arguments that are not a JSON object become `invalid_tool_calls`, as langchain does."""
    from langchain_core.messages import AIMessage

    calls: list[dict[str, Any]] = []
    invalid: list[dict[str, Any]] = []
    for call_id, name, arguments in raw_calls:
        error: str | None
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            args, error = None, f"arguments are not JSON: {exc}"
        else:
            error = None if isinstance(args, dict) else "arguments are not a JSON object"
        if error is None:
            calls.append({"name": name, "args": args, "id": call_id, "type": "tool_call"})
        else:
            invalid.append(
                {
                    "name": name,
                    "args": arguments,
                    "id": call_id,
                    "error": error,
                    "type": "invalid_tool_call",
                }
            )
    return AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid)


async def _complete(
    llm: ChatModel,
    payload: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    on_token: TokenSink | None,
    streamed: list[int],
) -> AIMessage:
    from openai import omit

    messages = cast("list[ChatCompletionMessageParam]", payload)
    specs = cast("list[ChatCompletionToolParam]", tools) if tools else omit
    if on_token is None:
        response = await llm.client.chat.completions.create(
            model=llm.model, messages=messages, temperature=llm.temperature, tools=specs
        )
        message = response.choices[0].message
        return _assistant_message(
            message.content or "",
            [
                (tc.id, tc.function.name, tc.function.arguments)
                for tc in (message.tool_calls or [])
                if tc.type == "function"
            ],
        )
    stream = await llm.client.chat.completions.create(
        model=llm.model, messages=messages, temperature=llm.temperature, tools=specs, stream=True
    )
    text: list[str] = []
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    async with stream:
        async for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(tc.index, ["", "", ""])
                if tc.id:
                    slot[0] = tc.id
                if tc.function is not None:
                    slot[1] += tc.function.name or ""
                    slot[2] += tc.function.arguments or ""
            if delta.content:
                text.append(delta.content)
                streamed[0] += len(delta.content)
                await on_token(delta.content)
    return _assistant_message(
        "".join(text),
        [(c[0] or f"call_{i}", c[1], c[2]) for i, c in sorted(calls.items())],
    )


async def call_llm(
    llm: ChatModel,
    messages: Sequence[BaseMessage],
    *,
    tools: list[dict[str, Any]] | None = None,
    on_token: TokenSink | None = None,
    policy: RetryPolicy | None = None,
) -> LLMResult:
    policy = policy or RetryPolicy()
    payload = to_openai_messages(messages)
    started = time.perf_counter()
    errors: list[str] = []
    streamed = [0]
    for attempt in range(1, policy.max_retries + 2):
        try:
            message = await _complete(llm, payload, tools, on_token, streamed)
            return LLMResult(
                message,
                attempt,
                round((time.perf_counter() - started) * 1000, 3),
                streamed[0],
                errors,
            )
        except Exception as exc:
            errors.append(_describe(exc))
            elapsed_s = time.perf_counter() - started
            if (
                streamed[0]
                or not is_retryable(exc)
                or attempt > policy.max_retries
                or elapsed_s + policy.backoff_s > policy.retry_window_s
            ):
                log.warning(
                    "llm call failed",
                    extra={"attempts": attempt, "err": errors[-1], "streamed": streamed[0]},
                )
                count_error("llm")
                raise LLMUnavailable(errors[-1]) from exc
            delay = min(policy.backoff_s * (2 ** (attempt - 1)), policy.max_backoff_s)
            retry_after = _retry_after(exc)
            if retry_after is not None:
                delay = min(max(delay, retry_after), policy.max_backoff_s)
            log.info("llm call retried", extra={"attempt": attempt, "err": errors[-1]})
            await asyncio.sleep(delay)
    raise LLMUnavailable("unreachable")  # pragma: no cover


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}({status})" if status else type(exc).__name__


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
