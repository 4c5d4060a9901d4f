"""Logs for both services, with the request id and call id of the work being done: JSON lines,
or short text lines for a person at a terminal (`LOG_FORMAT`, `log_format()`), same fields.

`setup_logging()` is called once per process. `RequestIdMiddleware` (pure ASGI) takes the
`X-Request-ID` header or makes one, exposes it in `request_id_var`, and echoes it in the response;
drivers set `call_id_var` once they know the call. A filter adds both to every record and masks
phone numbers and bearer tokens in the message, so neither reaches the logs: every line (the
access log's and the server's WebSocket lines included) is percent-decoded before it is matched,
so an escaped token (`eyJ...%2E...`) is scrubbed like a plain one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)

# "+1 555 123 4567", "+15551234567", or a bare 10-15 digit run (Vonage sends E.164 without "+").
_PHONE_RE = re.compile(r"(?<![\w/=.-])(?:\+\d[\d\s().-]{6,}\d|\d{10,15})(?![\w-])")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+")
_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)
SENSITIVE_KEYS = frozenset(
    {"authorization", "token", "password", "secret", "auth_token", "api_key", "private_key"}
)
PHONE_KEYS = frozenset({"from", "to", "caller", "callee", "phone", "phone_number", "number"})


def mask_phone(number: str | None) -> str:
    """`+15551234567` -> `+1555***4567`: enough to tell calls apart, not to dial."""
    if not number:
        return ""
    digits = re.sub(r"\D", "", number)
    if len(digits) < 7:
        return "***"
    prefix = "+" if number.strip().startswith("+") else ""
    return f"{prefix}{digits[:4]}***{digits[-4:]}"


# A credential in a query string (`/ws?token=...`, a signed URL's `sig=`), whatever its value.
_QUERY_SECRET_RE = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:token|access_token|jwt|sig|signature|secret|password)=)[^&\s\"']+"
)
_MAX_UNQUOTE_ROUNDS = 4


def _percent_decoded(text: str) -> str:
    """`%2E`, `%252E` (escaped twice), `%65%79%4A`: decoded until stable, so an escaped token
    or number is matched as the plain one would be (and logged decoded, then scrubbed)."""
    for _ in range(_MAX_UNQUOTE_ROUNDS):
        if "%" not in text:
            break
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def scrub_text(text: str) -> str:
    """Tokens (bearer, JWT, query-string credentials) and phone numbers out of one log text,
    whatever their percent-escaping (the server's own WebSocket line prints the raw query)."""
    text = _percent_decoded(text)
    text = _QUERY_SECRET_RE.sub(r"\1[redacted]", text)
    text = _BEARER_RE.sub(r"\1[redacted]", text)
    text = _JWT_RE.sub("[redacted-jwt]", text)
    return _PHONE_RE.sub(lambda m: mask_phone(m.group(0)), text)


def scrub_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if lowered in SENSITIVE_KEYS:
        return "[redacted]"
    if isinstance(value, str):
        return mask_phone(value) if lowered in PHONE_KEYS else scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_value(str(k), v) for k, v in value.items()}
    return value


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.call_id = getattr(record, "call_id", None) or call_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """One record's fields, scrubbed: what either format prints."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,  # ERROR, WARNING...: `docker-compose logs | grep ERROR`
            "service": self.service,
            "logger": record.name,
            "msg": scrub_text(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key in _RESERVED or key.startswith("_") or value is None:
                continue
            out[key] = scrub_value(key, value)
        if record.exc_info:
            out["exc"] = scrub_text(self.formatException(record.exc_info))
        return out

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str)


class TextFormatter(JsonFormatter):
    """`LOG_FORMAT=text`: one short line a person reads at a glance, the same scrubbed fields:
    `04:19:35.490 INFO  orchestrator  orchestrator ready  database=embedded llm=offline`."""

    def format(self, record: logging.LogRecord) -> str:
        out = self.fields(record)
        ts, level, msg = out.pop("ts")[11:23], out.pop("level"), out.pop("msg")
        out.pop("service")
        logger, exc = out.pop("logger"), out.pop("exc", None)
        extra = " ".join(f"{key}={_text_value(value)}" for key, value in out.items())
        line = f"{ts} {level:<7} {logger:<16} {msg}" + (f"  {extra}" if extra else "")
        return f"{line}\n{exc}" if exc else line


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if text and not any(c in text for c in ' "\n') else json.dumps(text)


def log_format(configured: str | None, production: bool) -> str:
    """JSON always in production; else LOG_FORMAT, else text on a terminal and JSON otherwise
    (files, pipes, containers: what a collector parses)."""
    if production:
        return "json"
    if configured:
        return configured
    return "text" if sys.stdout.isatty() else "json"


def setup_logging(
    service: str, debug: bool = False, level: str | None = None, fmt: str = "json"
) -> None:
    """`fmt`: "json" or "text" (`log_format()` picks it from LOG_FORMAT and the terminal)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_vao", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler._vao = True  # type: ignore[attr-defined]
    handler.setFormatter(TextFormatter(service) if fmt == "text" else JsonFormatter(service))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level or ("DEBUG" if debug else "INFO"))
    for noisy in ("httpx", "httpcore", "chromadb", "urllib3", "botocore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    # uvicorn's access log would duplicate ours without the request id; ours is in the middleware.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Takes or makes `X-Request-ID`, binds it (and clears the call id) for this request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else new_request_id()
        rid_token = request_id_var.set(rid)
        call_token = call_id_var.set(None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(rid_token)
            call_id_var.reset(call_token)
