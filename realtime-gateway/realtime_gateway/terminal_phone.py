"""`make call` / `vao-call`: talk to an agent from a terminal, through the running gateway.

Why: a developer wants to hear (read) their agent before buying a number. This is a caller on
the gateway's generic streaming socket (`/voice/stream/generic-http`), exactly as a browser or a
SIP bridge is: an operator token mints a 5-minute call token (`POST /voice/calls/stream-tokens`),
the socket opens with it, and every line typed is what the caller says. The agent's reply
streams in as it is written, with the actions it takes (transfer, hang-up, digits) and the
turn's latency as the caller feels it (prompt sent -> first word, -> last word). `/dtmf 123`
keys digits, `/hangup`, Ctrl-D or Ctrl-C end the call cleanly (the gateway is told, the
conversation is closed and kept). A line typed while the agent is still talking interrupts it
(barge-in: what was shown so far is what the caller heard).

Light on purpose: the standard library and `websockets` (which the gateway already runs on); no
gateway code, no settings, no SDK, so it starts at once and runs anywhere the gateway is reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

DEFAULT_GATEWAY = f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT') or 3000}"
DESCRIPTION = "A test call to an agent from the terminal, through the running gateway."
HELP = "Type what the caller says. /dtmf 123 keys digits; /hangup, Ctrl-D or Ctrl-C ends the call."
PROMPT_DELAY_S = 0.15
_DTMF = re.compile(r"/dtmf\s+([0-9*#]+)")


class CallRefused(Exception):
    """The gateway could not be reached or refused the call; the message says which."""


def mint_call_token(gateway: str, token: str, agent: str | None) -> dict[str, Any]:
    """`POST /voice/calls/stream-tokens` with the operator's token (before the event loop)."""
    body = json.dumps({"agent_id": agent} if agent else {}).encode()
    request = urllib.request.Request(  # noqa: S310 - the gateway's own URL, http(s) checked
        f"{gateway}/voice/calls/stream-tokens",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            minted: dict[str, Any] = json.loads(answer.read())
            return minted
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        raise CallRefused(f"the gateway refused the call: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CallRefused(
            f"cannot reach the gateway at {gateway} ({reason}); is it running?"
        ) from None


def socket_url(gateway: str, call_token: str) -> str:
    scheme = "wss" if gateway.startswith("https://") else "ws"
    host = urlsplit(gateway).netloc
    return f"{scheme}://{host}/voice/stream/generic-http?token={quote(call_token)}"


def describe(action: dict[str, Any]) -> str:
    kind = action.get("type")
    if kind == "transfer":
        return f"transfer to {action.get('to')}"
    if kind == "hangup":
        return f"hang up ({action.get('reason') or 'completed'})"
    if kind == "send_digits":
        return f"send digits {action.get('digits')}"
    return str(kind)


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass
class Reply:
    """The agent's reply being streamed: when it was asked for, what arrived, when."""

    asked_at: float
    text: str = ""
    first_at: float | None = None
    done: bool = False


@dataclass
class Phone:
    """One call: frames from the socket are printed, lines from stdin are sent."""

    url: str
    call_id: str
    out: TextIO = sys.stdout
    caller: str | None = None
    reply: Reply | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str = ""
    lines: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    _buffer: bytes = b""
    _prompt: asyncio.TimerHandle | None = None

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):  # not on Windows' default loop
            loop.add_signal_handler(signal.SIGINT, self.hang_up_soon, "Ctrl-C")
        try:
            async with websockets.connect(self.url, open_timeout=10) as ws:
                self.reply = Reply(time.perf_counter())  # the greeting
                await ws.send(json.dumps({"type": "start", "from": self.caller}))
                listening = self._watch_stdin(loop)
                tasks = [
                    asyncio.create_task(self._frames(ws)),
                    asyncio.create_task(self._typed(ws)),
                    asyncio.create_task(self.ended.wait()),
                ]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    listening()
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                # The caller's side hangs up, also after the agent's transfer or hang-up (there
                # is no one to transfer a test call to): the gateway ends the call there.
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(json.dumps({"type": "end"}))
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            self.say(f"vao-call: the call's socket did not open: {exc}")
            return 1
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        self._cancel_prompt()
        self.say(f"\ncall ended ({self.end_reason or 'the gateway closed it'})")
        return 0

    def hang_up_soon(self, how: str) -> None:
        self.end_reason = f"you hung up: {how}"
        self.ended.set()

    # -- the caller: lines typed -------------------------------------------------------------

    def _watch_stdin(self, loop: asyncio.AbstractEventLoop) -> Callable[[], object]:
        """Read stdin without a thread (a blocked reader thread would hold the exit)."""
        fd = sys.stdin.fileno()

        def readable() -> None:
            chunk = os.read(fd, 4096)
            if not chunk:
                loop.remove_reader(fd)
                self.lines.put_nowait(None)
                return
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, _, self._buffer = self._buffer.partition(b"\n")
                self.lines.put_nowait(line.decode(errors="replace").strip())

        loop.add_reader(fd, readable)
        return lambda: loop.remove_reader(fd)

    async def _typed(self, ws: ClientConnection) -> None:
        while True:
            line = await self.lines.get()
            if line is None:
                self.hang_up_soon("end of input")
                return
            if not line:
                continue
            if line in ("/hangup", "/quit", "/exit"):
                self.hang_up_soon("/hangup")
                return
            if line == "/help":
                self.say(HELP)
                continue
            digits = _DTMF.fullmatch(line)
            if line.startswith("/") and digits is None:
                self.say(f"  [unknown command {line.split()[0]}; {HELP}]")
                continue
            await self._barge_in(ws)
            self.reply = Reply(time.perf_counter())
            if digits is not None:
                await ws.send(json.dumps({"type": "dtmf", "digits": digits.group(1)}))
            else:
                await ws.send(json.dumps({"type": "prompt", "text": line}))

    async def _barge_in(self, ws: ClientConnection) -> None:
        """A line typed while the agent is talking interrupts it, keeping what was shown."""
        reply = self.reply
        if reply is None or reply.done or reply.first_at is None:
            return
        reply.done = True
        self.say(" [interrupted]")
        await ws.send(json.dumps({"type": "interrupt", "heard": reply.text}))

    # -- the agent: frames received ----------------------------------------------------------

    async def _frames(self, ws: ClientConnection) -> None:
        async for raw in ws:
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if self._frame(frame):
                return
        self.end_reason = self.end_reason or "the gateway closed the socket"

    def _frame(self, frame: dict[str, Any]) -> bool:
        """Print one frame; True once the call is over."""
        kind = frame.get("type")
        if kind == "started":
            self.say(f"In call {frame.get('call_id')}. {HELP}")
        elif kind == "text":
            self._token(str(frame.get("token") or ""), bool(frame.get("last")))
        elif kind == "action":
            self._cancel_prompt()
            self.say(f"  [action: {describe(frame.get('action') or {})}]")
            self._prompt_soon()
        elif kind == "error":
            self.say(f"  [error: {(frame.get('error') or {}).get('message')}]")
        elif kind == "end":
            self._cancel_prompt()
            self.end_reason = f"the agent ended it: {frame.get('reason')}"
            return True
        return False

    def _token(self, token: str, last: bool) -> None:
        reply = self.reply
        if reply is None or reply.done:
            return  # what is left of an interrupted reply
        if reply.first_at is None:
            reply.first_at = time.perf_counter()
            self.say("agent: ", end="")
        reply.text += token
        self.say(token, end="")
        if last:
            reply.done = True
            first, total = reply.first_at - reply.asked_at, time.perf_counter() - reply.asked_at
            self.say(f"\n  [first word {milliseconds(first)} · reply {milliseconds(total)}]")
            self._prompt_soon()

    def _prompt_soon(self) -> None:
        """`you> `, unless the reply's actions (sent right after it) or the call's end come
        first: they are printed before it, or instead of it."""
        self._cancel_prompt()
        self._prompt = asyncio.get_running_loop().call_later(PROMPT_DELAY_S, self.say, "you> ", "")

    def _cancel_prompt(self) -> None:
        if self._prompt is not None:
            self._prompt.cancel()
            self._prompt = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vao-call", description=DESCRIPTION)
    parser.add_argument("--gateway", default=os.environ.get("GATEWAY_URL") or DEFAULT_GATEWAY)
    parser.add_argument("--agent", help="the agent's id (default: the default agent)")
    parser.add_argument("--from", dest="caller", help="the caller's number, E.164")
    parser.add_argument(
        "--token", help="an operator or admin JWT (default: $VAO_TOKEN, else $TOKEN)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = args.token or os.environ.get("VAO_TOKEN") or os.environ.get("TOKEN")
    gateway = args.gateway.rstrip("/")
    if not token:
        print(
            "vao-call: needs an operator token: TOKEN=$(make -s token ROLE=operator)",
            file=sys.stderr,
        )
        return 2
    if not gateway.startswith(("http://", "https://")):
        print(f"vao-call: --gateway must be an http(s) URL, not {gateway!r}", file=sys.stderr)
        return 2
    try:
        minted = mint_call_token(gateway, token, args.agent)
    except CallRefused as exc:
        print(f"vao-call: {exc}", file=sys.stderr)
        return 1
    print(f"Calling {args.agent or 'the default agent'} through {gateway} …", flush=True)
    phone = Phone(socket_url(gateway, minted["token"]), minted["call_id"], caller=args.caller)
    return asyncio.run(phone.run())


if __name__ == "__main__":
    sys.exit(main())
