"""`make call`'s program (`realtime_gateway.terminal_phone`) driven through a pseudo-terminal, as a
person types into it: the greeting, a question whose reply streams with its latency, digits, a
barge-in, then `/hangup` (or Ctrl-C): the program exits 0 and the call is over on both services."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.console.conftest import Services

pytestmark = pytest.mark.slow

PROGRAM = [sys.executable, "-m", "realtime_gateway.terminal_phone"]
TIMEOUT_S = 20.0


@dataclass
class Terminal:
    """The program on a pty: what it printed so far, and a way to type into it."""

    pid: int
    fd: int
    output: str = ""

    def expect(self, pattern: str, timeout_s: float = TIMEOUT_S) -> re.Match[str]:
        """Wait until the output (since the start) matches `pattern`."""
        deadline = time.monotonic() + timeout_s
        regex = re.compile(pattern)
        while (found := regex.search(self.output)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} in:\n{self.output}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the program exited: its pty is closed
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the program exited before {pattern!r}:\n{self.output}")
                self.output += chunk.decode(errors="replace").replace("\r\n", "\n")
        return found

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout_s: float = TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            select.select([self.fd], [], [], 0.1)
            with contextlib.suppress(OSError):
                self.output += os.read(self.fd, 4096).decode(errors="replace")
        raise AssertionError(f"the program did not exit:\n{self.output}")


@pytest.fixture
def terminal(services: Services) -> Iterator[Terminal]:
    env = {
        **os.environ,
        "VAO_TOKEN": services.token("operator"),
        "GATEWAY_URL": services.gateway.url,
        "PYTHONUNBUFFERED": "1",
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal (Ctrl-C is its SIGINT)
        os.execve(PROGRAM[0], PROGRAM, env)  # noqa: S606 - our own program, no shell
    term = Terminal(pid, fd)
    try:
        yield term
    finally:
        with contextlib.suppress(ChildProcessError):  # reaped already by exit_code()
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(fd)


def _wait_call_ended(services: Services, call_id: str) -> None:
    """Until the gateway has ended the call (its status has an `ended_at`)."""
    token = services.token("viewer")
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(
            f"{services.gateway.url}/voice/calls/{call_id}/status",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        if r.json().get("ended_at") is not None:
            return
        assert time.monotonic() < deadline, "the gateway never ended the call"
        time.sleep(0.1)


def test_a_whole_conversation_from_the_terminal_to_a_hang_up(
    terminal: Terminal, services: Services
) -> None:
    call_id = terminal.expect(r"In call (web-[0-9a-f]+)").group(1)
    terminal.expect(r"agent: \S.*\n  \[first word \d+ ms · reply [\d.]+ m?s\]\nyou> ")

    terminal.type("What are your opening hours?\n")
    terminal.expect(r"agent: Certainly\. Our opening hours are nine to five, Monday to Friday\.")
    assert len(re.findall(r"\[first word .+ · reply .+\]", terminal.expect(r"you> $").string)) == 2

    terminal.type("/dtmf 123\n")
    terminal.expect(r"you> /dtmf 123\nagent: .*\n  \[first word .*\]\nyou> ")

    terminal.type("/dance\n")
    terminal.expect(r"\[unknown command /dance")

    before = terminal.output.count("agent: ")
    terminal.type("Tell me a long story\n")
    terminal.expect(rf"(?s)(agent: .*){{{before + 1}}}")  # the next reply has started…
    terminal.type("Sorry, one more thing\n")  # …and the caller talks over it
    terminal.expect(r" \[interrupted\]")
    terminal.expect(r"(?s)one more thing.*agent: Certainly.*\[first word")

    terminal.type("/hangup\n")
    terminal.expect(r"call ended \(you hung up: /hangup\)")
    assert terminal.exit_code() == 0

    _wait_call_ended(services, call_id)
    conversation = httpx.get(
        f"{services.orchestrator.url}/conversations/{call_id}",
        headers={"Authorization": f"Bearer {services.token('operator')}"},
    ).json()
    messages = conversation["messages"]
    turn_of = {m["content"]: m["turn_id"] for m in messages if m["role"] == "user"}
    expected = {"What are your opening hours?", "123", "Sorry, one more thing"}
    assert expected <= set(turn_of), messages
    interrupted = [m["turn_id"] for m in messages if m["interrupted"]]
    assert interrupted == [turn_of["Tell me a long story"]], messages


def test_ctrl_c_ends_the_call_cleanly(terminal: Terminal, services: Services) -> None:
    call_id = terminal.expect(r"In call (web-[0-9a-f]+)").group(1)
    terminal.expect(r"you> ")
    terminal.type("\x03")  # Ctrl-C, as the terminal sends it
    terminal.expect(r"call ended \(you hung up: Ctrl-C\)")
    assert terminal.exit_code() == 0
    _wait_call_ended(services, call_id)


def test_without_a_token_or_a_gateway_it_says_what_to_do(services: Services) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VAO_TOKEN", "TOKEN")}
    no_token = subprocess.run(PROGRAM, env=env, capture_output=True, text=True, timeout=30)
    assert no_token.returncode == 2 and "make -s token ROLE=operator" in no_token.stderr
    env["VAO_TOKEN"] = services.token("viewer")
    viewer = subprocess.run(
        [*PROGRAM, "--gateway", services.gateway.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert viewer.returncode == 1
    assert "needs the operator or admin role" in viewer.stderr, viewer.stderr
    down = subprocess.run(
        [*PROGRAM, "--gateway", "http://127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 1 and "cannot reach the gateway" in down.stderr, down.stderr
