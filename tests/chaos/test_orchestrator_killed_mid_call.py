"""Chaos: the orchestrator PROCESS is killed (SIGKILL) during a live simulated Twilio call and
restarted on the same port. Both services are real uvicorn processes on the real Postgres;
webhooks are signed with Twilio's own `RequestValidator` against PUBLIC_BASE_URL.

Checked: every webhook meanwhile gets valid TwiML (parsed with defusedxml against Twilio's
documented verbs), the outage turns get the spoken fallback (apology + listen again) within the
turn budget, the call end reported during the outage reaches the orchestrator once it is back
(background retry), the call continues normally after the restart, and in Postgres every
answered turn is stored exactly once (one caller + one agent message), none twice.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from twilio.request_validator import RequestValidator

from realtime_gateway.prompts import say as _prompt
from tests.e2e.services import Service, free_port, run_service
from tests.gateway.provider_fakes import parse_twiml

FALLBACK_APOLOGY = _prompt("apology")

pytestmark = pytest.mark.slow

JWT_SECRET = "chaos-jwt-secret-" + "Zq8xW2" * 6
TOKEN = "chaos-twilio-auth-token"
ACCOUNT = "AC" + "c" * 32
OUR_NUMBER = "+15550009999"
CALLER = "+15550001111"
TURN_TIMEOUT_S = 3.0


class TwilioCall:
    """Posts a call's webhooks as Twilio does and parses every answer as TwiML."""

    def __init__(self, public: str) -> None:
        self.public = public
        self.sid = "CA" + uuid.uuid4().hex
        self.client = httpx.Client(base_url=public, timeout=30)
        self.validator = RequestValidator(TOKEN)

    def form(self, **extra: str) -> dict[str, str]:
        return {
            "CallSid": self.sid,
            "AccountSid": ACCOUNT,
            "From": CALLER,
            "To": OUR_NUMBER,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            **extra,
        }

    def post(self, path: str, form: dict[str, str]) -> tuple[Any, float]:
        sig = self.validator.compute_signature(f"{self.public}{path}", form)
        started = time.monotonic()
        r = self.client.post(path, data=form, headers={"X-Twilio-Signature": sig})
        elapsed = time.monotonic() - started
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/xml"), r.headers
        return parse_twiml(r.text), elapsed

    def say(self, path: str, words: str) -> tuple[str, str, float]:
        """One caller turn: (what the agent said, the next gather path, seconds taken)."""
        root, elapsed = self.post(path, self.form(SpeechResult=words, Confidence="0.9"))
        gather = root.find("Gather")
        assert gather is not None, "the call must keep listening"
        said = " ".join((el.text or "") for el in root.iter("Say"))
        parts = urlsplit(gather.get("action"))
        assert f"{parts.scheme}://{parts.netloc}" == self.public
        return said, f"{parts.path}?{parts.query}", elapsed


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def orchestrator_env(pg_dsn: str, data_dir: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": JWT_SECRET,
        "APP_ENV": "development",
        "DATABASE_URL": pg_dsn,
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
    }


def start_orchestrator(
    stack: ExitStack,
    pg_dsn: str,
    data_dir: Path,
    port: int,
    log_dir: Path,
    **extra_env: str,
) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    return stack.enter_context(
        run_service(
            "orchestrator",
            "orchestrator.main:create_app",
            {**orchestrator_env(pg_dsn, data_dir), **extra_env},
            log_dir,
            port=port,
        )
    )


class HangingLLM:
    """An OpenAI-compatible address that reads requests and never answers (the LLM, an external
    SaaS, faked at the network layer): a turn sent to the model stays in flight, and the test
    can wait until a request has actually arrived."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.asked = threading.Event()  # a whole request (its headers) was received
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed at the end of the test
                return
            self.held.append(conn)  # kept open, never answered
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        seen = b""
        try:
            while b"\r\n\r\n" not in seen:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                seen += chunk
        except OSError:
            return
        if b"/chat/completions" in seen.split(b"\r\n", 1)[0]:
            self.asked.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hanging_llm() -> Iterator[HangingLLM]:
    llm = HangingLLM()
    yield llm
    llm.close()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.05)


def breaker_cooled(gw: Service, reset_s: float = 0.5) -> Callable[[], bool]:
    """True once the gateway's breaker (if it opened) has been open `reset_s`, by the time of
    its own last "orchestrator circuit open" line: the next turn is let through as a probe."""

    def cooled() -> bool:
        opened = [line for line in gw.logs().splitlines() if '"orchestrator circuit open"' in line]
        if not opened:
            return True
        at = datetime.fromisoformat(json.loads(opened[-1])["ts"]).timestamp()
        return time.time() >= at + reset_s + 0.05

    return cooled


@pytest.fixture
def gateway_and_orchestrator(
    pg_dsn: str, tmp_path: Path, ports: tuple[int, int]
) -> Iterator[tuple[Service, Service, ExitStack]]:
    gw_port, orch_port = ports
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with ExitStack() as stack:
        orch = start_orchestrator(stack, pg_dsn, data_dir, orch_port, tmp_path / "orch-1")
        public = f"http://127.0.0.1:{gw_port}"
        gw_env = {
            "DATA_DIR": str(data_dir),
            "JWT_SECRET": JWT_SECRET,
            "APP_ENV": "development",
            "ORCHESTRATOR_URL": orch.url,
            "VOICE_PROVIDER": "twilio",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_PHONE_NUMBER": OUR_NUMBER,
            "PUBLIC_BASE_URL": public,
            "TURN_TIMEOUT_S": str(TURN_TIMEOUT_S),
            "LOG_FORMAT": "json",  # breaker_cooled reads its lines
            "ORCHESTRATOR_BREAKER_FAILURES": "3",
            "ORCHESTRATOR_BREAKER_RESET_S": "0.5",
        }
        gw = stack.enter_context(
            run_service("gateway", "realtime_gateway.app:create_app", gw_env, tmp_path, gw_port)
        )
        yield gw, orch, stack


async def stored_turns(pg_dsn: str, sid: str) -> tuple[str | None, dict[str, list[str]]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        status = await conn.fetchval("SELECT status FROM conversations WHERE id = $1", sid)
        rows = await conn.fetch(
            "SELECT turn_id, role FROM messages WHERE conversation_id = $1 AND turn_id IS NOT NULL"
            " ORDER BY created_at",
            sid,
        )
    finally:
        await conn.close()
    turns: dict[str, list[str]] = {}
    for row in rows:
        turns.setdefault(row["turn_id"], []).append(row["role"])
    return status, {turn: sorted(roles) for turn, roles in turns.items()}


def test_orchestrator_killed_and_restarted_mid_twilio_call(
    gateway_and_orchestrator: tuple[Service, Service, ExitStack],
    pg_dsn: str,
    tmp_path: Path,
    ports: tuple[int, int],
) -> None:
    gw, orch, stack = gateway_and_orchestrator
    call = TwilioCall(gw.url)
    root, _ = call.post("/voice/webhook/twilio", call.form())
    gather = root.find("Gather")
    assert gather is not None
    path = f"{urlsplit(gather.get('action')).path}?{urlsplit(gather.get('action')).query}"

    said, path, _ = call.say(path, "What are your opening hours?")  # turn 1, normal
    assert FALLBACK_APOLOGY not in said

    orch.proc.kill()  # SIGKILL: no graceful shutdown, connections die
    orch.proc.wait(10)

    outage: list[float] = []
    for words in ("Are you there?", "Hello?", "Can you hear me?", "Still there?"):
        said, path, elapsed = call.say(path, words)  # turns 2..5 during the outage
        assert FALLBACK_APOLOGY in said, said
        outage.append(elapsed)
    assert max(outage) < TURN_TIMEOUT_S + 1.0, outage  # within the turn budget (< Twilio's 15 s)
    assert min(outage) < 0.5, outage  # the breaker opened: fallback at once, no waiting

    # a status callback during the outage is still answered with valid (empty) TwiML
    status_root, _ = call.post(
        "/voice/webhook/twilio/status", call.form(CallStatus="in-progress", SequenceNumber="1")
    )
    assert status_root.tag == "Response"

    start_orchestrator(stack, pg_dsn, tmp_path / "data", ports[1], tmp_path / "orch-2")
    # the breaker's cool-down over: the next turn is its probe
    wait_until(breaker_cooled(gw), 10, "the breaker's cool-down")

    said, path, _ = call.say(path, "Do you open on Saturdays?")  # turn 6: the call continues
    assert FALLBACK_APOLOGY not in said, said
    said, path, _ = call.say(path, "Thank you")  # turn 7
    assert FALLBACK_APOLOGY not in said, said

    # Twilio retries turn 7's action (e.g. our answer looked slow): replayed, not stored twice
    retry_path = "/voice/webhook/twilio/gather?turn=7"
    root, _ = call.post(retry_path, call.form(SpeechResult="Thank you", Confidence="0.9"))
    assert root.find("Gather") is not None

    status, turns = asyncio.run(stored_turns(pg_dsn, call.sid))
    assert status == "active"
    # answered turns are stored once each (user + assistant); outage turns were never stored
    assert turns == {
        "greeting": ["assistant"],
        "1": ["assistant", "user"],
        "6": ["assistant", "user"],
        "7": ["assistant", "user"],
    }, turns

    call.post(
        "/voice/webhook/twilio/status",
        call.form(CallStatus="completed", CallDuration="40", SequenceNumber="9"),
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, _ = asyncio.run(stored_turns(pg_dsn, call.sid))
        if status == "ended":
            break
        time.sleep(0.1)
    assert status == "ended"
    logs = gw.logs()
    assert "orchestrator circuit open" in logs and "orchestrator circuit closed" in logs


def test_call_end_during_outage_reaches_the_orchestrator_after_restart(
    gateway_and_orchestrator: tuple[Service, Service, ExitStack],
    pg_dsn: str,
    tmp_path: Path,
    ports: tuple[int, int],
) -> None:
    gw, orch, stack = gateway_and_orchestrator
    call = TwilioCall(gw.url)
    call.post("/voice/webhook/twilio", call.form())
    call.say("/voice/webhook/twilio/gather?turn=1", "Hello")
    orch.proc.kill()
    orch.proc.wait(10)
    root, _ = call.post(
        "/voice/webhook/twilio/status",
        call.form(CallStatus="completed", CallDuration="12", SequenceNumber="3"),
    )
    assert root.tag == "Response" and len(root) == 0
    start_orchestrator(stack, pg_dsn, tmp_path / "data", ports[1], tmp_path / "orch-2")
    # end retries at 1, 3, 7, 15, 30 s... after the failure; a loaded machine restarts slowly
    deadline = time.monotonic() + 40
    status = None
    while time.monotonic() < deadline:
        status, turns = asyncio.run(stored_turns(pg_dsn, call.sid))
        if status == "ended":
            break
        time.sleep(0.2)
    assert status == "ended", gw.logs()[-2000:]
    assert turns == {"greeting": ["assistant"], "1": ["assistant", "user"]}


def test_orchestrator_killed_with_a_turn_in_flight(
    pg_dsn: str, tmp_path: Path, ports: tuple[int, int], hanging_llm: HangingLLM
) -> None:
    """The orchestrator dies while it is answering (its model call in flight): the caller still
    gets valid TwiML (the fallback) within the turn budget, the half-done turn is stored
    neither once nor half (a turn's two rows are written together), and after the restart the
    call goes on."""
    gw_port, orch_port = ports
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    llm = {
        "OPENAI_API_KEY": "sk-chaos-test",
        "OPENAI_BASE_URL": hanging_llm.url,
        "LLM_TIMEOUT_S": "30",
    }
    with ExitStack() as stack:
        orch = start_orchestrator(stack, pg_dsn, data_dir, orch_port, tmp_path / "o1", **llm)
        public = f"http://127.0.0.1:{gw_port}"
        gw_env = {
            "DATA_DIR": str(data_dir),
            "JWT_SECRET": JWT_SECRET,
            "APP_ENV": "development",
            "ORCHESTRATOR_URL": orch.url,
            "VOICE_PROVIDER": "twilio",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "PUBLIC_BASE_URL": public,
            "TURN_TIMEOUT_S": str(TURN_TIMEOUT_S),
            "LOG_FORMAT": "json",  # breaker_cooled reads its lines
            "ORCHESTRATOR_BREAKER_RESET_S": "0.5",
        }
        gw = stack.enter_context(
            run_service("gateway", "realtime_gateway.app:create_app", gw_env, tmp_path, gw_port)
        )
        call = TwilioCall(gw.url)
        call.post("/voice/webhook/twilio", call.form())
        result: dict[str, tuple[str, str, float]] = {}
        worker = threading.Thread(
            target=lambda: result.setdefault(
                "turn", call.say("/voice/webhook/twilio/gather?turn=1", "Book me a table")
            )
        )
        worker.start()
        # the turn is now waiting on the model inside the orchestrator (its request arrived)
        assert hanging_llm.asked.wait(TURN_TIMEOUT_S), "the turn never reached the model"
        assert worker.is_alive()
        orch.proc.kill()
        orch.proc.wait(10)
        worker.join(TURN_TIMEOUT_S + 2)
        said, path, elapsed = result["turn"]
        assert FALLBACK_APOLOGY in said and elapsed < TURN_TIMEOUT_S + 1.0, (said, elapsed)

        start_orchestrator(stack, pg_dsn, data_dir, orch_port, tmp_path / "o2")  # offline LLM
        wait_until(breaker_cooled(gw), 10, "the breaker's cool-down")
        said, path, _ = call.say(path, "Book me a table, please")
        assert FALLBACK_APOLOGY not in said, said

    _status, turns = asyncio.run(stored_turns(pg_dsn, call.sid))
    assert "1" not in turns, turns  # the turn cut short was not half-stored
    assert turns == {"greeting": ["assistant"], "2": ["assistant", "user"]}, turns
