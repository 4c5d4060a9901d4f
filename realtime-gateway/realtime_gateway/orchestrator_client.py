"""The gateway's side of the HTTP contract in `shared/contract.py`.

One pooled `httpx.AsyncClient` (opened by the app's lifespan) with explicit timeouts; every request
carries a short-lived service JWT and the current `X-Request-ID`. A whole call (both attempts) fits
in `TURN_TIMEOUT_S`, so a provider always gets its answer before its own deadline. One retry, on a
connect error, a pooled connection the server had closed, or a 5xx only, with the same
`Idempotency-Key`: the orchestrator answers a repeated turn from its stored reply, so a retry can
never store a turn twice. Any failure is raised as one `OrchestratorUnavailable`, which the call
flow turns into a spoken apology.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from realtime_gateway.circuit_breaker import CircuitBreaker
from shared import sse
from shared.auth import ServiceTokenSource
from shared.contract import (
    IDEMPOTENCY_HEADER,
    REQUEST_ID_HEADER,
    CallEnd,
    CallStart,
    ConversationEnded,
    Interruption,
    TurnReply,
    TurnRequest,
    idempotency_key,
)
from shared.errors import connection_refused
from shared.logging import request_id_var

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

RETRY_PAUSE_S = 0.05
MIN_ATTEMPT_S = 0.2  # no point retrying with less budget than this left


class OrchestratorUnavailable(Exception):
    """The orchestrator did not answer usefully in time (down, slow, 5xx, refused, bad reply)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OrchestratorClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: ServiceTokenSource,
        budget_s: float,
        connect_timeout_s: float,
        transport: httpx.AsyncBaseTransport,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._http = http
        # Turns go straight to the client's pooled transport (the one `http` wraps): the client's
        # per-request layers (URL merging, cookie jar, auth and redirect handling) cost more CPU
        # than the gateway's own turn work and none of them applies here.
        self._transport = transport
        self._base = str(http.base_url).rstrip("/")
        self.breaker = breaker
        self._tokens = tokens
        self._budget_s = budget_s
        self._connect_s = min(connect_timeout_s, budget_s)

    async def start(self, call_id: str, body: CallStart) -> TurnReply:
        return await self._post(f"/conversations/{_seg(call_id)}/start", body, TurnReply)

    async def post_turn(self, call_id: str, turn_id: str, body: TurnRequest) -> TurnReply:
        return await self._post(
            f"/conversations/{_seg(call_id)}/messages",
            body,
            TurnReply,
            idempotency=idempotency_key(call_id, turn_id),
        )

    async def stream_turn(
        self, call_id: str, turn_id: str, body: TurnRequest
    ) -> AsyncIterator[str | TurnReply]:
        """The turn's reply as the orchestrator writes it: text pieces, then the stored
        `TurnReply`. Raises `OrchestratorUnavailable` (before or during the stream). Closing the
        iterator (barge-in) closes the request at once, and the orchestrator closes the model's.
        No retry: a stream already heard in part cannot be replayed."""
        headers = self._headers(idempotency_key(call_id, turn_id))
        headers.append((b"Accept", b"text/event-stream"))
        # Straight to the pooled transport, as `_send`; each read waits at most the budget.
        request = httpx.Request(
            "POST",
            httpx.URL(f"{self._base}/conversations/{_seg(call_id)}/messages"),
            headers=headers,
            content=body.model_dump_json().encode(),
            extensions={"timeout": _timeouts(self._connect_s, self._budget_s)},
        )
        try:
            r = await self._transport.handle_async_request(request)
            r.request = request
            try:
                if r.status_code >= 400:
                    await r.aread()
                    raise OrchestratorUnavailable(
                        f"orchestrator refused the streamed turn ({r.status_code})", r.status_code
                    )
                async for event, data in sse.events(r.aiter_raw()):
                    if event == "token":
                        yield str(json.loads(data).get("text") or "")
                    elif event == "reply":
                        yield TurnReply.model_validate_json(data)
                        return
                    elif event == "error":
                        raise OrchestratorUnavailable(
                            f"orchestrator failed mid-reply: {data[:200]}"
                        )
            finally:
                await r.aclose()
        except httpx.HTTPError as exc:
            raise OrchestratorUnavailable(
                f"orchestrator stream failed: {type(exc).__name__}"
            ) from exc
        except ValidationError as exc:
            raise OrchestratorUnavailable("orchestrator sent a malformed reply") from exc
        raise OrchestratorUnavailable("orchestrator stream ended without its reply")

    async def interrupted(self, call_id: str, turn_id: str, heard: str) -> None:
        """Tell the orchestrator the caller interrupted the reply to `turn_id` after `heard`."""
        await self._post(
            f"/conversations/{_seg(call_id)}/messages/{_seg(turn_id)}/interrupted",
            Interruption(heard=heard),
            TurnReply,
        )

    async def end(self, call_id: str, body: CallEnd) -> ConversationEnded:
        return await self._post(f"/conversations/{_seg(call_id)}/end", body, ConversationEnded)

    async def health(self, timeout_s: float = 1.0) -> str:
        """ "connected" when the orchestrator's `/health` answers 200 within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                r = await self._http.get("/health", timeout=httpx.Timeout(timeout_s))
        except (httpx.HTTPError, TimeoutError):
            return "unavailable"
        return "connected" if r.status_code == 200 else f"unhealthy ({r.status_code})"

    async def _post(
        self, path: str, body: BaseModel, model: type[M], idempotency: str | None = None
    ) -> M:
        """`_attempts` behind the circuit breaker: while it is open, fail at once."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            raise OrchestratorUnavailable("orchestrator circuit open (recent failures)")
        try:
            result = await self._attempts(path, body, model, idempotency)
        except OrchestratorUnavailable as exc:
            if breaker is not None:
                if exc.status is not None and 400 <= exc.status < 500:
                    breaker.record_success()  # a refusal: the orchestrator is up
                else:
                    breaker.record_failure()
            raise
        except BaseException:
            if breaker is not None:
                breaker.abandon()  # e.g. cancelled mid-request: no verdict, free the probe
            raise
        if breaker is not None:
            breaker.record_success()
        return result

    async def _attempts(
        self, path: str, body: BaseModel, model: type[M], idempotency: str | None
    ) -> M:
        headers = self._headers(idempotency)
        content = body.model_dump_json().encode()
        url = httpx.URL(self._base + path)
        deadline = time.monotonic() + self._budget_s
        last: OrchestratorUnavailable | None = None
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            if remaining < (MIN_ATTEMPT_S if attempt > 1 else 0.001):
                break
            try:
                async with asyncio.timeout(remaining):
                    r = await self._send(url, headers, content, remaining)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                # RemoteProtocolError: a pooled keep-alive connection the server had closed
                # (e.g. it restarted); the idempotency key makes the retry safe.
                why = "connection refused" if connection_refused(exc) else type(exc).__name__
                last = OrchestratorUnavailable(f"orchestrator unreachable: {why}")
                log.warning(
                    "orchestrator unreachable",
                    extra={"path": path, "attempt": attempt, "err": why},
                )
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise OrchestratorUnavailable(
                    f"orchestrator timed out after {self._budget_s}s"
                ) from exc
            except httpx.HTTPError as exc:
                raise OrchestratorUnavailable(
                    f"orchestrator request failed: {type(exc).__name__}"
                ) from exc
            if r.status_code >= 500:
                last = OrchestratorUnavailable(
                    f"orchestrator answered {r.status_code}", r.status_code
                )
                log.warning(
                    "orchestrator error",
                    extra={"path": path, "status": r.status_code, "attempt": attempt},
                )
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if r.status_code >= 400:
                # 404/409 are expected states (a conversation never opened, a turn after the
                # end), not faults: a warning, not an error.
                level = logging.WARNING if r.status_code in (404, 409) else logging.ERROR
                log.log(
                    level,
                    "orchestrator refused the request",
                    extra={"path": path, "status": r.status_code, "body": r.text[:300]},
                )
                raise OrchestratorUnavailable(
                    f"orchestrator refused the request ({r.status_code})", r.status_code
                )
            try:
                return model.model_validate_json(r.content)
            except ValidationError as exc:
                raise OrchestratorUnavailable("orchestrator sent a malformed reply") from exc
        raise last or OrchestratorUnavailable(f"orchestrator timed out after {self._budget_s}s")

    def _headers(self, idempotency: str | None) -> list[tuple[bytes, bytes]]:
        """Every request's: the service token, JSON, the request id, the idempotency key."""
        headers = [
            (b"Authorization", f"Bearer {self._tokens.token()}".encode()),
            (b"Content-Type", b"application/json"),
        ]
        rid = request_id_var.get()
        if rid:
            headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
        if idempotency:
            headers.append((IDEMPOTENCY_HEADER.encode(), idempotency.encode()))
        return headers

    async def _send(
        self, url: httpx.URL, headers: list[tuple[bytes, bytes]], content: bytes, remaining: float
    ) -> httpx.Response:
        """One POST, read to the end, within `remaining` seconds (connect within the connect
        timeout); httpx's exceptions as the client raises them."""
        connect = min(self._connect_s, remaining)
        request = httpx.Request(
            "POST",
            url,
            headers=headers,
            content=content,
            extensions={"timeout": _timeouts(connect, remaining)},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response


def _timeouts(connect: float, each: float) -> dict[str, float]:
    """httpx's per-request timeouts: connect, and `each` for every read, write and pool wait."""
    return {"connect": connect, "read": each, "write": each, "pool": each}


def _seg(value: str) -> str:
    return quote(value, safe="")
