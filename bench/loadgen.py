"""The load generator. Runs in its own process (`python -m bench.loadgen '<json spec>'`) so it
never shares an event loop with what it measures; prints one JSON result line on stdout.

Closed loop: each virtual caller holds one keep-alive connection and sends its next request
when the previous answer arrived (after its think time, if any). Every request that starts in the
window (after the warm-up) counts, however long it takes; none starts after the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.fake_llm import REPLY
from bench.rawhttp import RawConnection
from bench.results_io import write_result

REPLY_MARK = REPLY.split(",")[0].encode()  # what a real (not apologetic) answer contains
QUESTION = "What are your opening hours on Saturday?"
CALLEE = "+15550002222"
CALLERS_POOL = 100_000  # calls come from many numbers, a few of them twice (as in life)


def caller_number() -> str:
    return f"+1555{random.randrange(CALLERS_POOL):07d}"


SLOWEST = 20


def wall_clock(monotonic: float) -> float:
    """A `time.monotonic()` reading as wall-clock time (what the services' logs carry)."""
    return time.time() - (time.monotonic() - monotonic)


@dataclass
class Recorder:
    window_start: float
    window_end: float
    latencies_ms: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    degraded: int = 0
    requests: int = 0  # every measured-kind request sent, warm-up included (for CPU per turn)
    error_samples: list[str] = field(default_factory=list)
    # wall-clock start of each turn in `latencies_ms`: the slowest are reported with their
    # time, to be matched against the services' `event loop blocked` log lines
    started_wall: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])

    async def measure(self, send: Callable[[], Awaitable[tuple[int, bytes]]]) -> bytes | None:
        start = time.monotonic()
        self.requests += 1
        try:
            status, body = await send()
        except Exception as exc:  # counted, never raised: a caller keeps calling
            if self.window_start <= start < self.window_end:
                self.error(f"{type(exc).__name__}: {exc}")
            return None
        end = time.monotonic()
        if not self.window_start <= start < self.window_end:
            return body if status == 200 else None
        if status != 200:
            self.error(f"HTTP {status}: {body[:200]!r}")
            return None
        self.latencies_ms.append((end - start) * 1000)
        self.started_wall.append(wall_clock(start))
        if REPLY_MARK in body:
            self.ok += 1
        else:
            self.degraded += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"degraded: {body[:200]!r}")
        return body

    def result(self) -> dict[str, Any]:
        return {
            "latencies_ms": self.latencies_ms,
            "ok": self.ok,
            "errors": self.errors,
            "degraded": self.degraded,
            "requests": self.requests,
            "window_s": self.window_end - self.window_start,
            "window_wall": [round(wall_clock(t), 3) for t in (self.window_start, self.window_end)],
            "slowest": [
                [round(at, 3), round(ms, 1)]
                for at, ms in sorted(
                    zip(self.started_wall, self.latencies_ms, strict=True), key=lambda x: -x[1]
                )[:SLOWEST]
            ],
            "error_samples": self.error_samples,
        }


def thinker(spec: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """The caller's side of a turn (speaking, hearing the reply): `think_s` = [lo, hi] seconds,
    uniform; [0, 0] sends back to back (a saturation run)."""
    lo, hi = spec.get("think_s") or (0.0, 0.0)
    rng = random.Random()

    async def think() -> None:
        if hi > 0:
            await asyncio.sleep(rng.uniform(lo, hi))

    return think


def generic_signed(secret: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Gateway-Timestamp": ts,
        "X-Gateway-Signature": f"v1={sig}",
    }
    return body, headers


def generic_event(type_: str, call_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "type": type_,
        "call_id": call_id,
        "timestamp": int(time.time()),
        **fields,
    }


def call_lengths(spec: dict[str, Any], i: int) -> Iterator[int]:
    """Turns in each of a virtual caller's successive calls. With `steady`, the first call is
    cut short at random (1..n turns), so the callers' calls end and new ones start all through
    the measured window, as on a line in steady state, not all together after it; the later
    calls have n turns."""
    n = spec["turns_per_call"]
    if spec.get("steady"):
        yield random.Random(f"{spec['tag']}-{i}").randint(1, n)
    while True:
        yield n


async def caller_floor(spec: dict[str, Any], conn: RawConnection, rec: Recorder, i: int) -> None:
    body = json.dumps({"message": QUESTION}).encode()
    headers = {"Content-Type": "application/json"}

    async def send() -> tuple[int, bytes]:
        r = await conn.request("POST", "/turn", headers, body)
        return r.status, r.body

    think = thinker(spec)
    while time.monotonic() < rec.window_end:
        await think()
        await rec.measure(send)


async def caller_generic(spec: dict[str, Any], conn: RawConnection, rec: Recorder, i: int) -> None:
    secret = spec["secret"]
    path = "/voice/webhook/generic-http"
    think = thinker(spec)

    async def post(event: dict[str, Any]) -> tuple[int, bytes]:
        body, headers = generic_signed(secret, event)
        r = await conn.request("POST", path, headers, body)
        return r.status, r.body

    lengths = call_lengths(spec, i)
    while time.monotonic() < rec.window_end:
        turns = next(lengths)
        call_id = f"bench-{spec['tag']}-{i}-{uuid.uuid4().hex[:8]}"
        started = generic_event(
            "call.started",
            call_id,
            **{"from": caller_number(), "to": CALLEE, "direction": "inbound", "metadata": {}},
        )
        try:
            await post(started)
        except Exception as exc:
            rec.error(f"call.started: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)
            continue
        for turn in range(1, turns + 1):
            await think()
            if time.monotonic() >= rec.window_end:
                break
            ev = generic_event(
                "call.input",
                call_id,
                turn_id=str(turn),
                input={"type": "speech", "text": QUESTION, "confidence": 0.93},
            )
            body, headers = generic_signed(secret, ev)

            async def send(
                body: bytes = body, headers: dict[str, str] = headers
            ) -> tuple[int, bytes]:
                r = await conn.request("POST", path, headers, body)
                return r.status, r.body

            await rec.measure(send)
        with contextlib.suppress(Exception):
            await post(generic_event("call.ended", call_id, reason="hangup", duration_s=30.0))


ACTION = re.compile(rb'action="([^"]+)"')


async def caller_twilio(spec: dict[str, Any], conn: RawConnection, rec: Recorder, i: int) -> None:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(spec["twilio_token"])
    think = thinker(spec)
    public = spec["public_base_url"].rstrip("/")

    def signed(path_qs: str, form: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        sig = validator.compute_signature(public + path_qs, form)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sig,
        }
        return urlencode(form).encode(), headers

    lengths = call_lengths(spec, i)
    while time.monotonic() < rec.window_end:
        turns = next(lengths)
        sid = "CA" + uuid.uuid4().hex
        base = {
            "CallSid": sid,
            "AccountSid": spec["twilio_account_sid"],
            "From": caller_number(),
            "To": CALLEE,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        body, headers = signed("/voice/webhook/twilio", {**base, "CallStatus": "ringing"})
        try:
            r = await conn.request("POST", "/voice/webhook/twilio", headers, body)
        except Exception as exc:
            rec.error(f"voice webhook: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)
            continue
        reply = r.body
        for turn in range(1, turns + 1):
            await think()
            if time.monotonic() >= rec.window_end:
                break
            found = ACTION.search(reply or b"")
            if found:
                action = html.unescape(found.group(1).decode())
                parts = urlsplit(action)
                path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
            else:
                path_qs = f"/voice/webhook/twilio/gather?turn={turn}"
            form = {
                **base,
                "CallStatus": "in-progress",
                "SpeechResult": QUESTION,
                "Confidence": "0.93",
            }
            body, headers = signed(path_qs, form)

            async def send(
                path_qs: str = path_qs, body: bytes = body, headers: dict[str, str] = headers
            ) -> tuple[int, bytes]:
                r = await conn.request("POST", path_qs, headers, body)
                return r.status, r.body

            reply = await rec.measure(send) or b""
        form = {**base, "CallStatus": "completed", "CallDuration": "30"}
        body, headers = signed("/voice/webhook/twilio/status", form)
        with contextlib.suppress(Exception):
            await conn.request("POST", "/voice/webhook/twilio/status", headers, body)


CALLERS = {"floor": caller_floor, "generic-http": caller_generic, "twilio": caller_twilio}


async def run_turns(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["url"])
    now = time.monotonic()
    rec = Recorder(now + spec["warmup_s"], now + spec["warmup_s"] + spec["duration_s"])
    caller = CALLERS[spec["workload"]]
    conns = [
        RawConnection(url.hostname or "127.0.0.1", url.port or 80)
        for _ in range(spec["concurrency"])
    ]

    async def one(i: int) -> None:
        # Calls begin spread over the ramp, as calls arrive, not all at one instant.
        await asyncio.sleep(i * spec.get("ramp_s", 0.0) / max(1, spec["concurrency"]))
        try:
            await caller(spec, conns[i], rec, i)
        finally:
            await conns[i].close()

    await asyncio.gather(*(one(i) for i in range(spec["concurrency"])))
    return rec.result()


async def run_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """LLM first token (the fake LLM's clock) -> first byte of that text in the SSE reply."""
    from shared.auth import ServiceTokenSource

    tokens = ServiceTokenSource(spec["jwt_secret"])
    url = urlsplit(spec["url"])
    llm = urlsplit(spec["fake_llm_url"])
    first_text = REPLY.split(" ")[0].encode()
    arrivals: dict[str, float] = {}
    errors: list[str] = []
    content_types: set[str] = set()
    deadline = time.monotonic() + spec["duration_s"]

    direct_ms: list[float] = []
    timings: list[dict[str, float]] = []

    async def worker(w: int) -> None:
        """Conversations of 10 turns; turns alternate streamed (SSE) and plain JSON, so both
        are measured under the same conditions; the JSON reply carries the stage timings."""
        conn = RawConnection(url.hostname or "127.0.0.1", url.port or 80)
        try:
            while time.monotonic() < deadline and len(arrivals) + len(errors) < spec["requests"]:
                await conversation(conn, w)
        finally:
            await conn.close()

    async def conversation(conn: RawConnection, w: int) -> None:
        call_id = f"bench-stream-{w}-{uuid.uuid4().hex[:8]}"
        auth = {"Authorization": f"Bearer {tokens.token()}", "Content-Type": "application/json"}
        start_body = json.dumps(
            {"call_id": call_id, "provider": "generic-http", "caller": caller_number()}
        ).encode()
        try:
            r = await conn.request("POST", f"/conversations/{call_id}/start", auth, start_body)
        except Exception as exc:
            errors.append(f"start: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)
            return
        if r.status != 200:
            errors.append(f"start: HTTP {r.status}: {r.body[:200]!r}")
            await asyncio.sleep(0.5)
            return
        for turn in range(1, 21):
            if time.monotonic() >= deadline or len(arrivals) + len(errors) >= spec["requests"]:
                return
            nonce = f"bench-{uuid.uuid4().hex[:12]}"
            body = json.dumps({"message": f"{QUESTION} ref {nonce}", "turn_id": str(turn)}).encode()
            streamed = turn % 2 == 1
            headers = {
                **auth,
                "Accept": "text/event-stream" if streamed else "application/json",
                "Idempotency-Key": f"{call_id}:{turn}",
                "Authorization": f"Bearer {tokens.token()}",
            }
            seen: list[float] = []
            buf = bytearray()

            def on_chunk(
                t: float, data: bytes, seen: list[float] = seen, buf: bytearray = buf
            ) -> None:
                buf.extend(data)
                if not seen and first_text in buf:
                    seen.append(t)

            sent = time.monotonic()
            try:
                r = await conn.request(
                    "POST", f"/conversations/{call_id}/messages", headers, body, on_chunk
                )
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if r.status != 200:
                errors.append(f"HTTP {r.status}: {r.body[:200]!r}")
                continue
            if not streamed:
                direct_ms.append((time.monotonic() - sent) * 1000)
                with contextlib.suppress(ValueError, AttributeError):
                    timings.append(dict(json.loads(r.body).get("timings_ms") or {}))
                continue
            content_types.add(r.headers.get("content-type", "").split(";")[0])
            if seen:
                arrivals[nonce] = seen[0]
            else:
                errors.append(f"no reply text in stream: {bytes(buf[:200])!r}")

    await asyncio.gather(*(worker(w) for w in range(spec["concurrency"])))
    llm_conn = RawConnection(llm.hostname or "127.0.0.1", llm.port or 80)
    marks_resp = await llm_conn.request("GET", "/bench/marks")
    await llm_conn.close()
    marks: dict[str, float] = json.loads(marks_resp.body)["marks"]
    added = [(arrivals[n] - marks[n]) * 1000 for n in arrivals if n in marks]
    return {
        "added_ms": added,
        "unmatched": len([n for n in arrivals if n not in marks]),
        "errors": len(errors),
        "error_samples": errors[:5],
        "content_types": sorted(content_types),
        "direct_ms": direct_ms,
        "timings": timings,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    kind = spec["kind"]
    if kind == "turns":
        result = asyncio.run(run_turns(spec))
    elif kind == "stream":
        result = asyncio.run(run_stream(spec))
    else:
        raise SystemExit(f"unknown kind {kind}")
    write_result(spec, result)


if __name__ == "__main__":
    main()
