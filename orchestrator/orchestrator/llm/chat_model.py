"""`ChatOpenAI` for a phone turn, sending the same request with less of the SDK's per-call work.

Why: the `openai` 2.x client walks every request body through its TypedDict "transform" before
sending it (`openai._utils._transform`): each message is checked against every member of the
six-way `ChatCompletionMessageParam` union, and the tool schemas key by key, with `typing`
introspection and no cache. For chat completions the transform changes nothing (no chat request
field has an alias or a format), but it costs time that grows with the conversation: measured
in process on the 2-core bench machine, 0.9 ms with a system prompt and one question, 5.4 ms
with 10 history messages and 7.9 ms with 18 messages plus our tool schemas — more than the rest
of the orchestrator's turn.

How: langchain-openai builds the payload exactly as before (`_get_request_payload`, the hook
its own Azure/DeepSeek/xAI subclasses override); then `messages` and `tools` travel in
`extra_body`, which the SDK merges over the transformed body untouched (`_merge_mappings`: the
second mapping wins). The JSON on the wire is the same object — tested against stock
`ChatOpenAI` in `tests/orchestrator/test_llm_chat_model.py`. Requests with `response_format`
(structured output goes through `beta...parse`, which reads `messages`/`tools` itself) and
Responses-API payloads (no `messages` key) are left exactly as langchain-openai builds them.

The answer (not streamed): langchain-openai has the SDK build a `ChatCompletion` model from the
JSON (`construct_type`, recursive, no validation), then hands it to a worker thread where
`_create_chat_result` dumps it back to a dict. `_create_chat_result` takes the dict itself, so
`PhoneChatOpenAI` gives it the response's JSON and calls it on the event loop (it only builds a
message from a dict; the thread hop cost more than the work). Same errors (the SDK still raises
`APIStatusError`s, langchain-openai's handlers still wrap them), same `AIMessage` — tested
against stock `ChatOpenAI` for text, tool calls, refusals, usage and a non-JSON body.
Measured in process (`call_llm` with our tools, 11 messages, an instant HTTP fake): 1.54 ->
0.91 ms of CPU a call.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import (
    _add_gateway_metadata,
    _handle_openai_api_error,
    _handle_openai_bad_request,
)

# Moved out of the transformed body; each is sent as langchain-openai built it.
UNTRANSFORMED_KEYS = ("messages", "tools")


class PhoneChatOpenAI(ChatOpenAI):
    """`ChatOpenAI` whose chat-completions body skips the SDK's identity transform."""

    def _get_request_payload(
        self,
        input_: LanguageModelInput,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        if "messages" not in payload or "response_format" in payload:
            return payload
        extra = dict(payload.get("extra_body") or {})
        if any(key in extra for key in UNTRANSFORMED_KEYS):
            return payload  # the caller already overrides these: leave the request alone
        for key in UNTRANSFORMED_KEYS:
            if key in payload:
                extra[key] = payload.pop(key)
        payload["extra_body"] = extra
        # `messages` is a required argument of `create()`: an empty list costs nothing to
        # transform, and the one in `extra_body` replaces it.
        payload["messages"] = []
        return payload

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = self._get_request_payload(messages, stop=stop, **kwargs)
        if (
            "response_format" in payload
            or self._use_responses_api(payload)
            or self.include_response_headers
        ):  # structured output, the Responses API, headers wanted: langchain-openai's own way
            return await super()._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)
        try:
            raw_response = await self.async_client.with_raw_response.create(**payload)
        except openai.BadRequestError as e:
            _handle_openai_bad_request(e)
        except openai.APIError as e:
            _handle_openai_api_error(e)
        generation_info: dict[str, Any] = {}
        _add_gateway_metadata(generation_info, raw_response)
        body = _completion_json(raw_response)
        if body is None:  # not a JSON object: the SDK's parser, and langchain-openai's error
            return self._create_chat_result(raw_response.parse(), generation_info)
        result = self._create_chat_result(body, generation_info)
        # What `_create_chat_result` adds for a parsed `ChatCompletion` and not for a dict.
        first = (body.get("choices") or [{}])[0]
        message = first.get("message") if isinstance(first, dict) else None
        if result.generations and isinstance(message, dict):
            kwargs_ = result.generations[0].message.additional_kwargs
            kwargs_.setdefault("refusal", message.get("refusal"))
        return result


def _completion_json(raw_response: Any) -> dict[str, Any] | None:
    """The response's JSON object, as a parsed `ChatCompletion` dumps to for the fields
    langchain-openai reads (`system_fingerprint` and each choice's `logprobs` null when
    absent); None if it is not one."""
    try:
        body = json.loads(raw_response.http_response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    body.setdefault("system_fingerprint", None)
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
    return body
