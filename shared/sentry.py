"""Sentry error reporting for both services, only when `SENTRY_DSN` is set.

`init_sentry()` is called once by each service's `create_app`; without a DSN it does nothing and
`sentry_sdk` is not even imported. The environment is `APP_ENV` (the spec's `NODE_ENV` is its
alias, see `CommonSettings.app_env`), the release `<service>@<version>`.

Nothing personal or secret leaves the process: `send_default_pii=False`, and `scrub_event` (the
`before_send` hook, which sees the serialized event: exception messages, stack-frame variables,
log extras, breadcrumbs, request data) masks phone numbers (`shared.logging.mask_phone` /
`scrub_text`), drops bearer tokens and JWTs, redacts every value under a secret-looking key
(authorization, cookie, token, secret, signature, password, api key, DSN...), and removes
query strings (they can carry `?token=`) and cookies from the request. If scrubbing fails, the
SDK drops the event rather than sending it unscrubbed.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any, cast

from shared.logging import PHONE_KEYS, mask_phone, scrub_text

if TYPE_CHECKING:
    from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

    from shared.config import CommonSettings

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
# A key containing any of these holds a secret, whatever the value looks like.
SECRET_KEY_PARTS = (
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "api_key",
    "apikey",
    "api-key",
    "private_key",
    "credential",
    "dsn",
    "session",
    "x-amz-",
    "query_string",  # an ASGI scope's, in stack-frame variables
)
# Structural fields of an event, left untouched (ids, SDK and package versions).
UNTOUCHED_KEYS = frozenset(
    {"event_id", "timestamp", "start_timestamp", "sdk", "modules", "release", "environment",
     "platform", "level", "trace_id", "span_id", "parent_span_id"}
)  # fmt: skip


# A URL's query string anywhere in a text (`?token=...` in a repr), and a URL-encoded "+" number.
_URL_QUERY_RE = re.compile(r"((?:https?|wss?)://[^\s'\"?#]*)\?[^\s'\"#]*")
_ENCODED_PHONE_RE = re.compile(r"(?i)%2B(\d{7,15})(?!\d)")
# `'x-gateway-signature': 'v1=...'` or `token='...'` inside a repr (e.g. of a request's headers),
# and `token=...` in a bare query string.
_SENSITIVE_NAMES = (
    r"(?:authorization|cookie|token|secret|password|signature|api[_-]?key|credential)"
)
_QUOTED_SECRET_RE = re.compile(
    rf"(?i)(['\"]?[\w.-]*{_SENSITIVE_NAMES}[\w.-]*['\"]?\s*[:=]\s*)(['\"])[^'\"]*\2"
)
_BARE_SECRET_RE = re.compile(rf"(?i)(\b[\w.-]*{_SENSITIVE_NAMES}[\w.-]*=)[^&\s'\",;)]+")


def init_sentry(settings: CommonSettings, service: str, version: str, **options: Any) -> bool:
    """Start the Sentry client when `SENTRY_DSN` is set; True when started. `options` go to
    `sentry_sdk.init` (tests pass a `transport`)."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk  # only when configured: not on the default start-up path
    from sentry_sdk.integrations.starlette import StarletteIntegration

    # No auto-enabled integrations: they import every supported library installed (langchain,
    # boto3, huggingface...), seconds of start-up for nothing. Logging (errors become events,
    # other lines breadcrumbs) and the web framework (request context, unhandled errors) it is.
    integrations: list[Any] = [StarletteIntegration()]
    if "fastapi" in sys.modules:  # the orchestrator; the gateway never imports FastAPI
        from sentry_sdk.integrations.fastapi import FastApiIntegration

        integrations.append(FastApiIntegration())
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.app_env,
        release=f"{service}@{version}",
        send_default_pii=False,
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        auto_enabling_integrations=False,
        integrations=integrations,
        **options,
    )
    sentry_sdk.set_tag("service", service)
    log.info("sentry enabled", extra={"environment": settings.app_env})
    return True


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def scrub(value: Any, key: str = "") -> Any:
    """A copy of `value` with secrets redacted and phone numbers masked, at any depth."""
    if key:
        if key in UNTOUCHED_KEYS:
            return value
        if is_secret_key(key) and value not in (None, "", [], {}):
            return REDACTED
    if isinstance(value, str):
        return mask_phone(value) if key.lower() in PHONE_KEYS else scrub_string(value)
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # [name, value] pairs (e.g. headers sent as a list): the name decides for the value
        if len(value) == 2 and isinstance(value[0], str) and is_secret_key(value[0]):
            return [value[0], REDACTED]
        return [scrub(v, key) for v in value]
    return value


def scrub_string(text: str) -> str:
    """`shared.logging.scrub_text` (bearer tokens, JWTs, phone numbers), plus what reprs of
    requests carry: URL query strings, URL-encoded numbers, secret-named values."""
    text = _URL_QUERY_RE.sub(r"\1?[redacted]", text)
    text = _QUOTED_SECRET_RE.sub(r"\1\2[redacted]\2", text)
    text = _BARE_SECRET_RE.sub(r"\1[redacted]", text)
    text = _ENCODED_PHONE_RE.sub(lambda m: mask_phone("+" + m.group(1)), text)
    return scrub_text(text)


def scrub_event(event: Event, hint: Hint) -> Event | None:
    """`before_send`: the event without phone numbers, tokens, cookies or query strings."""
    request = cast("dict[str, Any]", event).get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        if request.get("query_string"):
            request["query_string"] = REDACTED
        url = request.get("url")
        if isinstance(url, str) and "?" in url:
            request["url"] = url.split("?", 1)[0]
    return cast("Event", scrub(event))


def scrub_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb | None:
    """`before_breadcrumb`: log lines and HTTP calls kept for context, scrubbed the same way."""
    data = crumb.get("data")
    if isinstance(data, dict) and isinstance(data.get("url"), str):
        data["url"] = data["url"].split("?", 1)[0]
    return cast("Breadcrumb", scrub(crumb))
