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
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_openai import ChatOpenAI

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
