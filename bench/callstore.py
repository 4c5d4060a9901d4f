"""Call-store round trips per turn, with Redis (issue 17).

A gateway with `REDIS_URL` counts each request it sends to its call store in
`voice_call_store_round_trips_total` (`GET /metrics`). This scenario drives a fixed number of
complete calls through one provider's webhooks in three phases — every call's start, then every
call's turns, then every call's end — and reads the counter before and after each phase (once it
has stopped moving), so each phase's round trips are its own.

Two halves: `run_callstore` (main process: the gateway, one probe per provider, the figures) and
the probe (`python -m bench.callstore '<json spec>'`, its own process like the load generator),
which signs every request as the provider does (generic-http HMAC, Twilio `RequestValidator`).
"""

from __future__ import annotations

import asyncio
import html
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from bench.loadgen import (
    ACTION,
    CALLEE,
    QUESTION,
    REPLY_MARK,
    caller_number,
    generic_event,
    generic_signed,
)
from bench.rawhttp import RawConnection
from bench.results_io import write_result

if TYPE_CHECKING:
    from bench.__main__ import Bench
    from bench.services import ServiceProcess

COUNTER = "voice_call_store_round_trips_total"
PROVIDERS = ("generic-http", "twilio")
PHASES = ("start", "turns", "end")
TARGET_PER_TURN = 3.0


# -- the probe (its own process) ---------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    degraded: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


@dataclass
class Call:
    """One call's identity and what the provider needs to go on with it."""

    call_id: str
    caller: str
    reply: bytes = b""  # Twilio: the last TwiML, whose <Gather action> the next turn follows


Send = Callable[[RawConnection, str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


class GenericHttp:
    path = "/voice/webhook/generic-http"

    def __init__(self, spec: dict[str, Any]) -> None:
        self.secret = spec["secret"]

    def new_call(self, tag: str) -> Call:
        return Call(f"bench-rt-{tag}-{uuid.uuid4().hex[:10]}", caller_number())

    def start(self, call: Call) -> tuple[str, dict[str, str], bytes]:
        ev = generic_event(
            "call.started",
            call.call_id,
            **{"from": call.caller, "to": CALLEE, "direction": "inbound", "metadata": {}},
        )
        body, headers = generic_signed(self.secret, ev)
        return self.path, headers, body

    def turn(self, call: Call, turn: int) -> tuple[str, dict[str, str], bytes]:
        ev = generic_event(
            "call.input",
            call.call_id,
            turn_id=str(turn),
            input={"type": "speech", "text": QUESTION, "confidence": 0.93},
        )
        body, headers = generic_signed(self.secret, ev)
        return self.path, headers, body

    def end(self, call: Call) -> tuple[str, dict[str, str], bytes]:
        ev = generic_event("call.ended", call.call_id, reason="hangup", duration_s=30.0)
        body, headers = generic_signed(self.secret, ev)
        return self.path, headers, body


class Twilio:
    def __init__(self, spec: dict[str, Any]) -> None:
        from twilio.request_validator import RequestValidator

        self.validator = RequestValidator(spec["twilio_token"])
        self.public = spec["public_base_url"].rstrip("/")
        self.account_sid = spec["twilio_account_sid"]

    def new_call(self, tag: str) -> Call:
        return Call("CA" + uuid.uuid4().hex, caller_number())

    def _base(self, call: Call) -> dict[str, str]:
        return {
            "CallSid": call.call_id,
            "AccountSid": self.account_sid,
            "From": call.caller,
            "To": CALLEE,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }

    def _signed(self, path_qs: str, form: dict[str, str]) -> tuple[str, dict[str, str], bytes]:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self.validator.compute_signature(self.public + path_qs, form),
            # Twilio sends one with every webhook; the gateway dedupes status callbacks on it
            "I-Twilio-Idempotency-Token": uuid.uuid4().hex,
        }
        return path_qs, headers, urlencode(form).encode()

    def start(self, call: Call) -> tuple[str, dict[str, str], bytes]:
        return self._signed("/voice/webhook/twilio", {**self._base(call), "CallStatus": "ringing"})

    def turn(self, call: Call, turn: int) -> tuple[str, dict[str, str], bytes]:
        found = ACTION.search(call.reply)
        if found:
            parts = urlsplit(html.unescape(found.group(1).decode()))
            path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
        else:
            path_qs = f"/voice/webhook/twilio/gather?turn={turn}"
        form = {
            **self._base(call),
            "CallStatus": "in-progress",
            "SpeechResult": QUESTION,
            "Confidence": "0.93",
        }
        return self._signed(path_qs, form)

    def end(self, call: Call) -> tuple[str, dict[str, str], bytes]:
        form = {
            **self._base(call),
            "CallStatus": "completed",
            "CallDuration": "30",
            "SequenceNumber": "0",
        }
        return self._signed("/voice/webhook/twilio/status", form)


def read_counter(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(COUNTER + " ") or line.startswith(COUNTER + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def counter(conn: RawConnection) -> float:
    r = await conn.request("GET", "/metrics")
    if r.status != 200:
        raise RuntimeError(f"GET /metrics answered {r.status}: {r.body[:200]!r}")
    value = read_counter(r.body.decode())
    if value is None:
        raise LookupError(f"{COUNTER} is not in the gateway's /metrics")
    return value


async def settled(conn: RawConnection, limit_s: float = 3.0) -> float:
    """The counter once two readings 100 ms apart agree: whatever a phase's requests left
    running (nothing, today: every store request is made before the answer) is counted in it."""
    value = await counter(conn)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        again = await counter(conn)
        if again == value:
            break
        value = again
    return value


async def probe(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    provider = GenericHttp(spec) if spec["workload"] == "generic-http" else Twilio(spec)
    n_calls, turns = spec["calls"], spec["turns_per_call"]
    calls = [provider.new_call(f"{spec['tag']}-{i}") for i in range(n_calls)]
    tally = Tally()
    metrics = RawConnection(host, port)
    conns = [RawConnection(host, port) for _ in range(n_calls)]

    async def post(
        conn: RawConnection, request: tuple[str, dict[str, str], bytes], what: str
    ) -> bytes | None:
        path, headers, body = request
        tally.requests += 1
        try:
            r = await conn.request("POST", path, headers, body)
        except Exception as exc:
            tally.error(f"{what}: {type(exc).__name__}: {exc}")
            return None
        if r.status != 200:
            tally.error(f"{what}: HTTP {r.status}: {r.body[:200]!r}")
            return None
        return r.body

    async def start(i: int) -> None:
        calls[i].reply = await post(conns[i], provider.start(calls[i]), "start") or b""

    async def talk(i: int) -> None:
        for turn in range(1, turns + 1):
            body = await post(conns[i], provider.turn(calls[i], turn), f"turn {turn}")
            if body is not None and REPLY_MARK not in body:
                tally.degraded += 1  # the apology: a shorter path, fewer store requests
            calls[i].reply = body or b""

    async def end(i: int) -> None:
        await post(conns[i], provider.end(calls[i]), "end")

    steps: dict[str, Callable[[int], Awaitable[None]]] = {"start": start, "turns": talk, "end": end}
    round_trips: dict[str, float] = {}
    try:
        # Nothing else talks to this gateway: its counter must stand still while idle.
        idle_from = await counter(metrics)
        await asyncio.sleep(spec.get("idle_s", 0.3))
        before = await settled(metrics)
        round_trips["idle"] = before - idle_from
        for phase in PHASES:
            errors_before = tally.errors
            await asyncio.gather(*(steps[phase](i) for i in range(n_calls)))
            after = await settled(metrics)
            round_trips[phase] = after - before
            before = after
            if phase == "start" and tally.errors > errors_before:
                break  # calls that never started: their turns would measure nothing useful
    finally:
        for conn in (metrics, *conns):
            await conn.close()
    return {
        "calls": n_calls,
        "turns": n_calls * turns,
        "round_trips": round_trips,
        "requests": tally.requests,
        "errors": tally.errors,
        "degraded": tally.degraded,
        "error_samples": tally.error_samples,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    write_result(spec, asyncio.run(probe(spec)))


# -- the scenario (main process) ----------------------------------------------------------------


def figures(raw: dict[str, Any]) -> dict[str, Any]:
    """Round trips per call start, per turn, per call end, and all of a call's over its turns."""
    rt, calls, turns = raw["round_trips"], raw["calls"], raw["turns"]
    out: dict[str, Any] = {
        "calls": calls,
        "turns_per_call": turns // calls if calls else 0,
        "turns": turns,
        "round_trips": rt,
        "requests": raw["requests"],
        "errors": raw["errors"],
        "degraded": raw["degraded"],
        "error_samples": raw["error_samples"],
    }
    if not all(phase in rt for phase in PHASES) or not calls or not turns:
        out["status"] = "n/a (the calls did not start: see error_samples)"
        return out
    out["per_call_start"] = rt["start"] / calls
    out["per_turn"] = rt["turns"] / turns
    out["per_call_end"] = rt["end"] / calls
    out["per_call"] = sum(rt[p] for p in PHASES) / calls
    out["per_turn_all_in"] = sum(rt[p] for p in PHASES) / turns
    if rt.get("idle"):
        out["status"] = (
            f"n/a ({rt['idle']:g} round trips while idle: something else uses this gateway's "
            "call store, the phases' counts are not their own)"
        )
    elif raw["errors"] or raw["degraded"]:
        out["status"] = (
            f"n/a ({raw['errors']} errors, {raw['degraded']} degraded turns: not every request "
            "took the full path)"
        )
    else:
        out["status"] = "ok"
    return out


def run_callstore(
    bench: Bench, orch: ServiceProcess, block: dict[str, Any], signing: dict[str, str]
) -> None:
    from bench.fanout_run import redis_reachable
    from bench.services import run_loadgen

    if not redis_reachable(bench.redis_url):
        block["status"] = f"n/a (no Redis at {bench.redis_url})"
        return
    gw = bench.start_gateway(orch.url, redis=True)
    block["gateway_ready_s"] = round(gw.ready_s, 2)
    try:
        block["target_per_turn"] = TARGET_PER_TURN
        for provider in PROVIDERS:
            started = time.monotonic()
            spec = {
                "url": gw.url,
                "workload": provider,
                "calls": bench.plan.callstore_calls,
                "turns_per_call": bench.plan.callstore_turns,
                "tag": provider[:1],
                **signing,
            }
            raw = run_loadgen(spec, timeout_s=120, module="bench.callstore")
            block[provider] = figures(raw)
            block[provider]["duration_s"] = round(time.monotonic() - started, 2)
    finally:
        bench.stop(gw)


if __name__ == "__main__":
    main()
