"""Provider webhooks: build a provider-neutral `WebhookRequest`, verify, hand to the driver.

The URL given to the driver is the one the provider requested, since signatures cover it:
`PUBLIC_BASE_URL` + path + query, else (with `TRUST_PROXY`) the `X-Forwarded-Proto`/`-Host`
the proxy saw, else the URL this process received.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from realtime_gateway import metrics
from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.registry import DriverUnavailable, UnknownProvider
from realtime_gateway.management_auth import require_role
from realtime_gateway.public_urls import public_url
from realtime_gateway.runtime import get_runtime
from realtime_gateway.vocabulary import ProviderConfigError, SignatureError, WebhookRequest
from realtime_gateway.webhook_guard import count_failed_verification
from realtime_gateway.webhook_selftest import run_selftest
from shared.errors import ApiError, error_response

log = logging.getLogger(__name__)

TEST_PROVIDER = "test"

_SIGNATURE_CODES = {
    401: "invalid_signature",
    403: "forbidden",
    405: "method_not_allowed",
    409: "replayed_event",
}


async def current_provider_webhook(request: Request) -> Response:
    provider = get_runtime(request).drivers.current_name
    return await metrics.observe_webhook(provider, _dispatch(request, provider, ""))


async def provider_webhook(request: Request) -> Response:
    provider = request.path_params["provider"]
    step = str(request.path_params.get("step", "")).strip("/")
    if provider == TEST_PROVIDER:
        return await webhook_check(request)
    return await metrics.observe_webhook(provider, _dispatch(request, provider, step))


async def webhook_check(request: Request) -> JSONResponse:
    """`/voice/webhook/test` (the spec's troubleshooting check): the webhook is reachable, under
    this public URL (what signatures are checked against), and a synthetic signed call start
    went through the current provider's parser and renderer (`webhook_selftest`) without
    touching live state. Always 200: it is a diagnostic; `status` says how it went. It signs
    with the provider's secret and runs the driver, so it is a management route: an operator
    (or admin) token, and the management rate limit (`management_auth.SELFTEST_PATH`)."""
    require_role(request, "operator", "the webhook self-test")
    rt = get_runtime(request)
    provider = rt.drivers.current_name
    report = await run_selftest(provider, rt.settings, rt.provider_http)
    if report.status != "ok":
        log.warning(
            "webhook self-test did not pass",
            extra={"provider": provider, "status": report.status, "step": report.step},
        )
    body = report.as_dict()
    body["public_url"] = public_url(request, rt.settings)
    body["current_provider"] = provider
    return JSONResponse(body)


async def _dispatch(request: Request, provider: str, step: str) -> Response:
    rt = get_runtime(request)
    try:
        driver = await rt.drivers.get(provider)
    except UnknownProvider as exc:
        return error_response(404, "unknown_provider", str(exc))
    except DriverUnavailable as exc:
        log.error(
            "webhook for an unavailable provider",
            extra={"provider": provider, "reason": exc.reason},
        )
        return error_response(503, "provider_unavailable", str(exc))
    webhook = await build_webhook_request(request, rt.settings)
    try:
        await driver.verify_request(webhook)
    except SignatureError as exc:
        log.warning(
            "webhook rejected",
            extra={"provider": provider, "status": exc.status, "reason": str(exc)},
        )
        throttled = await count_failed_verification(request)
        if throttled is not None:
            return throttled
        code = exc.code or _SIGNATURE_CODES.get(exc.status, "rejected")
        return error_response(exc.status, code, str(exc))
    except ProviderConfigError as exc:
        log.error(
            "webhook for a misconfigured provider", extra={"provider": provider, "reason": str(exc)}
        )
        return error_response(503, "provider_not_configured", str(exc))
    except (ApiError, HTTPException):
        raise
    except Exception:
        # e.g. the call store (replay check) is unreachable: the request could not be verified,
        # so nothing is done; 503 asks the provider to retry later.
        log.exception("webhook verification failed", extra={"provider": provider})
        return error_response(503, "verification_unavailable", "could not verify the request now")
    try:
        return await driver.handle_webhook(webhook, step)
    except ProviderConfigError as exc:
        return error_response(503, "provider_not_configured", str(exc))
    except (ApiError, HTTPException):
        raise
    except Exception:
        # A verified provider request must still get a valid reply (never a 5xx): the
        # driver's fallback (an apology and a new listen) when it has one.
        log.exception("webhook handling failed", extra={"provider": provider, "step": step})
        fallback = driver.fallback_response(webhook, step)
        if fallback is None:
            raise
        metrics.webhook_failed()
        return fallback


async def build_webhook_request(request: Request, settings: GatewaySettings) -> WebhookRequest:
    body = await read_body(request, settings.max_body_bytes)
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    form: dict[str, str] = {}
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
                form.setdefault(key, value)
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "form body is not UTF-8") from None
    return WebhookRequest(
        method=request.method,
        url=public_url(request, settings),
        headers=headers,
        query=dict(request.query_params),
        body=body,
        form=form,
        client_ip=request.client.host if request.client else None,
    )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
