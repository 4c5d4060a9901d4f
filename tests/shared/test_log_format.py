"""`LOG_FORMAT` (issue 23): short text lines for a person at a terminal, JSON elsewhere and
always in production; both formats carry the same fields and scrub tokens and numbers alike."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from shared.auth import mint_token
from shared.logging import call_id_var, log_format, request_id_var, setup_logging

TOKEN = mint_token("log-format-test-secret-" + "x" * 24, sub="someone", role="admin")


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    """What our handler writes (pytest captures the real stdout)."""
    buffer = io.StringIO()
    yield buffer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_vao", False):
            root.removeHandler(handler)


def setup(service: str, fmt: str, buffer: io.StringIO) -> None:
    setup_logging(service, fmt=fmt)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_vao", False):
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(buffer)


def emit(fmt: str, buffer: io.StringIO) -> None:
    setup("orchestrator", fmt, buffer)
    rid, cid = request_id_var.set("r-9f"), call_id_var.set("CA1")
    try:
        logging.getLogger("orchestrator").info(
            "turn answered for +15551234567 with Bearer %s",
            TOKEN,
            extra={"turn": 3, "latency_ms": 41.5, "token": TOKEN, "url": f"/ws?token={TOKEN}"},
        )
    finally:
        request_id_var.reset(rid)
        call_id_var.reset(cid)


def test_text_lines_are_short_readable_and_carry_the_same_scrubbed_fields(
    stdout: io.StringIO,
) -> None:
    emit("json", stdout)
    record = json.loads(stdout.getvalue())
    stdout.seek(0)
    stdout.truncate()
    emit("text", stdout)
    line = stdout.getvalue().rstrip("\n")
    assert "\n" not in line and not line.startswith("{")
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} INFO ", line)  # the time of day, as in `ts`
    assert f"orchestrator     {record['msg']}" in line
    for key in ("turn", "latency_ms", "request_id", "call_id", "token", "url"):
        value = record[key]
        assert f"{key}={value}" in line, key
    assert "+1555***4567" in line and "15551234567" not in line
    for out in (line, json.dumps(record)):
        assert TOKEN not in out and TOKEN.split(".")[1] not in out


def test_an_exception_follows_its_text_line(stdout: io.StringIO) -> None:
    setup("realtime-gateway", "text", stdout)
    try:
        raise RuntimeError(f"failed with {TOKEN}")
    except RuntimeError:
        logging.getLogger("realtime_gateway.turns").exception("turn failed")
    first, *rest = stdout.getvalue().splitlines()
    assert first.endswith("turn failed") and " ERROR " in first
    assert any("RuntimeError: failed with [redacted-jwt]" in r for r in rest)
    assert TOKEN not in stdout.getvalue()


def test_json_always_in_production_text_only_on_a_terminal_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert log_format("text", production=True) == "json"
    assert log_format(None, production=True) == "json"
    assert log_format("json", production=False) == "json"
    assert log_format("text", production=False) == "text"
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a pipe, a file, a container
    assert log_format(None, production=False) == "json"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert log_format(None, production=False) == "text"


def test_log_format_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.config import OrchestratorSettings

    monkeypatch.setenv("LOG_FORMAT", "text")
    assert OrchestratorSettings(_env_file=None).log_format == "text"  # type: ignore[call-arg]
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        OrchestratorSettings(_env_file=None)  # type: ignore[call-arg]
