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
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.metrics import count_error
from orchestrator.turns import TokenSink
from shared.errors import connection_refused

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_openai import ChatOpenAI

log = logging.getLogger(__name__)


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


async def call_llm(
    llm: ChatOpenAI,
    messages: Sequence[BaseMessage],
    *,
    tools: list[dict[str, Any]] | None = None,
    on_token: TokenSink | None = None,
    policy: RetryPolicy | None = None,
) -> LLMResult:
    from langchain_core.messages import AIMessage, AIMessageChunk

    from orchestrator.llm.chat_model import PhoneChatOpenAI

    policy = policy or RetryPolicy()
    started = time.perf_counter()
    errors: list[str] = []
    streamed = 0
    # What the text is handed to can fail (the caller's question could not be stored, ...):
    # that is not the model's failure, so it is neither retried nor reported as one.
    sink_failure: Exception | None = None

    async def counted(text: str) -> None:
        nonlocal streamed, sink_failure
        streamed += len(text)
        try:
            await on_token(text)  # type: ignore[misc]
        except Exception as exc:
            sink_failure = exc
            raise

    lean = on_token is not None and isinstance(llm, PhoneChatOpenAI) and llm.streams_lean()
    runnable: Any = None if lean else (llm.bind_tools(tools) if tools else llm)
    for attempt in range(1, policy.max_retries + 2):
        try:
            if on_token is None:
                message = await runnable.ainvoke(list(messages))
                assert isinstance(message, AIMessage)
            elif lean:  # completion_stream.py: one parse a token
                assert isinstance(llm, PhoneChatOpenAI)
                message = await llm.stream_message(list(messages), tools=tools, on_token=counted)
            else:
                full: AIMessageChunk | None = None
                async for chunk in runnable.astream(list(messages)):
                    full = chunk if full is None else full + chunk
                    text = chunk.content if isinstance(chunk.content, str) else ""
                    if text:
                        await counted(text)
                message = AIMessage(
                    content=full.content if full is not None else "",
                    tool_calls=full.tool_calls if full is not None else [],
                    invalid_tool_calls=full.invalid_tool_calls if full is not None else [],
                )
            return LLMResult(
                message, attempt, round((time.perf_counter() - started) * 1000, 3), streamed, errors
            )
        except Exception as exc:
            if exc is sink_failure:
                raise
            errors.append(_describe(exc))
            elapsed_s = time.perf_counter() - started
            if (
                streamed
                or not is_retryable(exc)
                or attempt > policy.max_retries
                or elapsed_s + policy.backoff_s > policy.retry_window_s
            ):
                log.warning(
                    "llm call failed",
                    extra={"attempts": attempt, "err": errors[-1], "streamed": streamed},
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
    if status:
        return f"{type(exc).__name__}({status})"
    if connection_refused(exc):  # reported as a timeout by httpx-aiohttp and openai
        return f"{type(exc).__name__}(connection refused)"
    return type(exc).__name__


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
