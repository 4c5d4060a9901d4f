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

The request (not streamed), from the second call on: the SDK's own request, replayed. The first
call goes through the SDK as above; its request (URL with any default query, every header the
SDK sets: auth, `User-Agent`, `X-Stainless-*`, organisation/project, default headers; the
timeout extensions) is kept, and later calls send the same request with their own JSON body
(encoded by the SDK's encoder) straight to the pooled HTTP transport the SDK itself would use.
What that skips, per call: the SDK's request options model, header and URL merging, its retry
and auth wrappers (retries are 0 here and ours, `llm.calls`) and httpx's client layers (cookie
jar, auth flow, redirects: none apply to a JSON POST to the API; the API's Cloudflare cookies are
not sent back, as from any client without a jar). Errors are the SDK's: a status >= 400 becomes
the SDK's own `APIStatusError` subclass (`_make_status_error_from_response`), a timeout
`APITimeoutError`, any other transport failure `APIConnectionError`, a body that is not a JSON
object goes through the SDK's response parser. Clients whose auth or responses are rewritten per
request (workload identity tokens, provider runtimes) and requests with per-call headers, query
or timeout keep the SDK's path. Measured in the orchestrator under the bench load (py-spy), the
SDK's `create` was ~17 % of the process's samples, the largest single share of a turn.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import (
    _add_gateway_metadata,
    _handle_openai_api_error,
    _handle_openai_bad_request,
)
from openai._legacy_response import LegacyAPIResponse
from openai._models import FinalRequestOptions
from openai._utils._json import openapi_dumps
from openai.types.chat import ChatCompletion
from pydantic import PrivateAttr

from orchestrator.llm.completion_stream import CompletionFold
from orchestrator.llm.completion_stream import chunks as completion_chunks

# Moved out of the transformed body; each is sent as langchain-openai built it.
UNTRANSFORMED_KEYS = ("messages", "tools")
# `create()` arguments that are not body fields: a request with any of them keeps the SDK's path.
PER_CALL_OPTIONS = ("extra_headers", "extra_query", "timeout")
CHAT_PATH = "/chat/completions"
RAW_RESPONSE = (b"X-Stainless-Raw-Response", b"true")
_PER_REQUEST = (b"content-length", RAW_RESPONSE[0].lower())


@dataclass(frozen=True, slots=True)
class SentRequest:
    """What the SDK sent for a chat completion, minus its body: replayed with a new body."""

    url: httpx.URL
    headers: list[tuple[bytes, bytes]]
    extensions: dict[str, Any]

    @classmethod
    def of(cls, request: httpx.Request) -> SentRequest:
        """Minus the body's length and the SDK's raw-response marker (sent by its raw-response
        calls, not by its streams: `_replay` adds it back where the SDK would send it)."""
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _PER_REQUEST]
        return cls(request.url, headers, dict(request.extensions))


def replayable(client: openai.AsyncOpenAI) -> bool:
    """False for clients whose requests or responses are rewritten per call."""
    return (
        getattr(client, "_workload_identity_auth", None) is None
        and getattr(client, "_provider_runtime", None) is None
        and client.custom_auth is None
    )


class PhoneChatOpenAI(ChatOpenAI):
    """`ChatOpenAI` whose chat-completions body skips the SDK's identity transform, and whose
    plain (not streamed) completions replay the SDK's request after the first."""

    _sent: SentRequest | None = PrivateAttr(default=None)

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
        sent, plain = self._sent, _plain(payload)
        try:
            if sent is not None and plain:
                response = await self._replay(sent, payload)
            else:
                raw_response = await self.async_client.with_raw_response.create(**payload)
                response = raw_response.http_response
                if sent is None and plain and replayable(self.root_async_client):
                    self._sent = SentRequest.of(response.request)  # no per-call options in it
        except openai.BadRequestError as e:
            _handle_openai_bad_request(e)
        except openai.APIError as e:
            _handle_openai_api_error(e)
        generation_info: dict[str, Any] = {}
        _add_gateway_metadata(generation_info, response)
        body = _completion_json(response)
        if body is None:  # not a JSON object: the SDK's parser, and langchain-openai's error
            return self._create_chat_result(self._sdk_parse(response), generation_info)
        result = self._create_chat_result(body, generation_info)
        # What `_create_chat_result` adds for a parsed `ChatCompletion` and not for a dict.
        first = (body.get("choices") or [{}])[0]
        message = first.get("message") if isinstance(first, dict) else None
        if result.generations and isinstance(message, dict):
            kwargs_ = result.generations[0].message.additional_kwargs
            kwargs_.setdefault("refusal", message.get("refusal"))
        return result

    def streams_lean(self) -> bool:
        """True when a streamed completion can be read by `stream_message`: a chat-completions
        request with no structured output, no response headers or gateway metadata wanted, and
        no callbacks or tracing that would expect langchain's per-chunk events."""
        from langchain_core.tracers.context import _tracing_v2_is_enabled

        return not (
            self.callbacks
            or self.include_response_headers
            or self._uses_gateway
            or self._use_responses_api(self.model_kwargs)
            or _tracing_v2_is_enabled()
        )

    async def stream_message(
        self,
        messages: list[BaseMessage],
        *,
        tools: list[dict[str, Any]] | None,
        on_token: Callable[[str], Awaitable[None]],
    ) -> AIMessage:
        """One streamed completion, each piece of text awaited into `on_token` as it arrives;
        the whole answer returned as the `AIMessage` langchain's `astream` would merge
        (`completion_stream.py`). Closing early (cancellation) closes the upstream request."""
        kwargs: dict[str, Any] = {"stream": True}
        if tools:
            kwargs["tools"] = [convert_to_openai_tool(tool) for tool in tools]
        if self._should_stream_usage(None, **kwargs):
            kwargs["stream_options"] = {"include_usage": True}
        payload = self._get_request_payload(messages, **kwargs)
        fold = CompletionFold()
        try:
            response = await self._open_stream(payload)
            try:
                async for chunk in completion_chunks(response):
                    if text := fold.add(chunk):
                        await on_token(text)
            finally:
                await response.aclose()
        except openai.BadRequestError as e:
            _handle_openai_bad_request(e)
        except openai.APIError as e:
            _handle_openai_api_error(e)
        return fold.message()  # type: ignore[no-any-return]

    async def _open_stream(self, payload: dict[str, Any]) -> httpx.Response:
        """The streamed response, its body not yet read: the SDK's request replayed when one was
        learnt, else the SDK's own (and learnt from)."""
        sent, own = self._sent, _own_options(payload)
        if sent is not None and own:
            return await self._replay(sent, payload, stream=True)
        stream = await self.async_client.create(**payload)  # the SDK's stream, never iterated
        response: httpx.Response = stream.response
        if sent is None and own and replayable(self.root_async_client):
            self._sent = SentRequest.of(response.request)
        return response

    async def _replay(
        self, sent: SentRequest, payload: dict[str, Any], *, stream: bool = False
    ) -> httpx.Response:
        """POST `payload` as the SDK would (its body merge and JSON encoder, the request it
        sent before), read to the end unless `stream`; failures raised as the SDK raises them
        (an error status is always read, for its message)."""
        body = {k: v for k, v in payload.items() if k != "extra_body"}
        body.update(payload.get("extra_body") or {})
        request = httpx.Request(
            "POST",
            sent.url,
            headers=sent.headers if stream else [*sent.headers, RAW_RESPONSE],
            content=openapi_dumps(body),
            extensions=sent.extensions,
        )
        client: openai.AsyncOpenAI = self.root_async_client
        http: httpx.AsyncClient = client._client
        transport = http._transport_for_url(request.url)  # the SDK's pool (mounts, proxies)
        try:
            response = await transport.handle_async_request(request)
            response.request = request
            if not stream or response.status_code >= 400:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.TimeoutException as err:
            raise openai.APITimeoutError(request=request) from err
        except Exception as err:
            raise openai.APIConnectionError(request=request) from err
        if response.status_code >= 400:
            raise client._make_status_error_from_response(response) from None
        return response

    def _sdk_parse(self, response: httpx.Response) -> Any:
        """The SDK's reading of a completion response (its errors for a body it cannot read)."""
        return LegacyAPIResponse(
            raw=response,
            cast_to=ChatCompletion,
            client=self.root_async_client,
            stream=False,
            stream_cls=None,
            options=FinalRequestOptions.construct(method="post", url=CHAT_PATH),
        ).parse()


def _plain(payload: dict[str, Any]) -> bool:
    """A request not streamed whose headers, query and timeout are the client's own: one to
    learn the SDK's request from, and one that replaying it can send."""
    return not payload.get("stream") and _own_options(payload)


def _own_options(payload: dict[str, Any]) -> bool:
    """No per-call headers, query or timeout: the client's own request, with this body."""
    return not any(key in payload for key in PER_CALL_OPTIONS)


def _completion_json(response: httpx.Response) -> dict[str, Any] | None:
    """The response's JSON object, as a parsed `ChatCompletion` dumps to for the fields
    langchain-openai reads (`system_fingerprint` and each choice's `logprobs` null when
    absent); None if it is not one."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    body.setdefault("system_fingerprint", None)
    for choice in body.get("choices") or ():
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
    return body
