"""Streamed turns over Twilio ConversationRelay (issue 18): our gateway and orchestrator beside
Twilio's own framework (twilio-agent-connect, bench/peer_tac.py), the same client, the same fake
LLM with a model's timing (first token after 300 ms, then one every 25 ms).

Two halves: `run_relay` (main process: the timed fake LLM, an orchestrator on it, a gateway in
relay mode, one in gather mode, the peer; the figures) and the client
(`python -m bench.relay '<json spec>'`, its own process like the load generator). Each virtual
caller makes calls one after another: the voice webhook (ours; signed, not timed), the socket
(`X-Twilio-Signature` over the public `wss://` URL, as Twilio signs it), `setup`, then turns:
think, a `prompt` carrying a nonce, the reply's `text` frames up to `last`; one turn in
`interrupt_every` is cut short by an `interrupt` shortly after its first frame; then the socket
closes and (ours) the status callback ends the call.

Clocks: the fake LLM (its own process) stamps `time.monotonic()` when it hands a request's first
token to its socket and when the client's close of that request reached it; the client stamps
the same clock (CLOCK_MONOTONIC is system-wide on Linux) when a frame arrives and when it sends
the interrupt. Nonces match the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from bench.fake_llm import REPLY
from bench.loadgen import CALLEE, QUESTION, call_lengths, caller_number
from bench.rawhttp import RawConnection
from bench.results_io import write_result
from bench.stats import summary

if TYPE_CHECKING:
    from bench.__main__ import Bench
    from bench.services import ServiceProcess

FIRST_TOKEN_MS, TOKEN_MS = 300, 25
TARGET_ADDED_P99_MS = 5.0
TARGET_INTERRUPT_P99_MS = 20.0
TARGET_PEER_P50_MARGIN_MS = 1.0
TARGET_CPU_RATIO = 1.5
RELAY_URL = re.compile(rb'<ConversationRelay[^>]*\surl="([^"]+)"')
FIRST_WORD = REPLY.split(" ")[0]  # the model's first token: not the holding line, no apology


# -- the client (its own process) ----------------------------------------------------------------


@dataclass
class Turn:
    nonce: str
    sent: float
    first: float | None = None
    interrupted: float | None = None
    degraded: bool = False


@dataclass
class Tally:
    window_start: float
    window_end: float
    turns: list[Turn] = field(default_factory=list)
    prompts: int = 0  # every prompt sent, warm-up included
    window_prompts: int = 0  # prompts sent in the measured window (CPU per turn, see measured)
    calls: int = 0
    dropped: int = 0  # sockets the server closed mid-call
    dropped_after_interrupt: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


async def read_frames(ws: Any, frames: asyncio.Queue[tuple[float, dict[str, Any]]]) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            await frames.put((time.monotonic(), json.loads(raw)))
    await frames.put((time.monotonic(), {"type": "closed"}))


async def caller(spec: dict[str, Any], tally: Tally, i: int) -> None:
    import websockets
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(spec["twilio_token"])
    rng = random.Random(f"{spec['tag']}-{i}")
    lo, hi = spec["think_s"]
    http = None
    if spec.get("voice_webhook"):
        url = urlsplit(spec["url"])
        http = RawConnection(url.hostname or "127.0.0.1", url.port or 80)
    public = spec["public_base_url"].rstrip("/")
    lengths = call_lengths(spec, i)
    turn_no = 0
    try:
        while time.monotonic() < tally.window_end:
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
            sign_url = spec.get("sign_url")
            if http is not None:  # our gateway: the voice webhook answers <ConversationRelay>
                form = {**base, "CallStatus": "ringing"}
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": validator.compute_signature(
                        public + "/voice/webhook/twilio", form
                    ),
                }
                # a fresh connection per webhook, as Twilio's (a kept-alive one would have
                # timed out during the last call)
                await http.close()
                try:
                    r = await http.request(
                        "POST", "/voice/webhook/twilio", headers, urlencode(form).encode()
                    )
                    found = RELAY_URL.search(r.body)
                    if r.status != 200 or not found:
                        raise RuntimeError(f"HTTP {r.status}: {r.body[:200]!r}")
                except Exception as exc:
                    tally.error(f"voice webhook: {type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)
                    continue
                sign_url = html.unescape(found.group(1).decode())
            assert sign_url
            sig = validator.compute_signature(sign_url, {})
            frames: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
            try:
                ws = await websockets.connect(
                    spec["ws_url"],
                    additional_headers={"X-Twilio-Signature": sig},
                    compression=None,
                    open_timeout=30,
                )
            except Exception as exc:
                tally.error(f"connect: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)
                continue
            tally.calls += 1
            reader = asyncio.create_task(read_frames(ws, frames))
            try:
                await ws.send(
                    json.dumps(
                        {
                            "type": "setup",
                            "sessionId": "VX" + uuid.uuid4().hex,
                            "callSid": sid,
                            "from": base["From"],
                            "to": CALLEE,
                            "direction": "inbound",
                            "customParameters": {},
                        }
                    )
                )
                cut = False
                for _ in range(turns):
                    await asyncio.sleep(rng.uniform(lo, hi))
                    if time.monotonic() >= tally.window_end:
                        break
                    turn_no += 1
                    interrupt = spec["interrupt_every"] and turn_no % spec["interrupt_every"] == 0
                    if not await one_turn(spec, tally, ws, frames, bool(interrupt), cut):
                        break
                    cut = bool(interrupt)
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
                reader.cancel()
            if http is not None:
                form = {**base, "CallStatus": "completed", "CallDuration": "30"}
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": validator.compute_signature(
                        public + "/voice/webhook/twilio/status", form
                    ),
                }
                await http.close()
                try:
                    await http.request(
                        "POST", "/voice/webhook/twilio/status", headers, urlencode(form).encode()
                    )
                except Exception as exc:
                    tally.error(f"status callback: {type(exc).__name__}: {exc}")
    finally:
        if http is not None:
            await http.close()


async def one_turn(
    spec: dict[str, Any],
    tally: Tally,
    ws: Any,
    frames: asyncio.Queue[tuple[float, dict[str, Any]]],
    interrupt: bool,
    after_interrupt: bool = False,
) -> bool:
    """One prompt and its reply (or its barge-in). False: the socket is no good any more."""
    while not frames.empty():  # what an interrupted reply still sent
        if frames.get_nowait()[1].get("type") == "closed":
            return dropped(tally, after_interrupt, "socket closed by the server")
    nonce = f"bench-{uuid.uuid4().hex[:12]}"
    text = json.dumps(
        {"type": "prompt", "voicePrompt": f"{QUESTION} ref {nonce}", "lang": "en-US", "last": True}
    )
    turn = Turn(nonce, time.monotonic())
    measured = tally.window_start <= turn.sent < tally.window_end
    try:
        await ws.send(text)
    except Exception as exc:  # the server closed the socket: the call is lost
        return dropped(tally, after_interrupt, f"socket closed: {type(exc).__name__}: {exc}")
    tally.prompts += 1
    tally.window_prompts += measured
    heard = ""
    deadline = turn.sent + spec.get("turn_timeout_s", 15.0)
    cut_at: float | None = None
    while True:
        timeout = deadline - time.monotonic()
        if cut_at is not None:
            timeout = min(timeout, cut_at - time.monotonic())
        try:
            at, frame = await asyncio.wait_for(frames.get(), max(0.0, timeout))
        except TimeoutError:
            if cut_at is not None and time.monotonic() < deadline:
                # barge in: the caller talks over the reply a few tokens in
                await ws.send(json.dumps({"type": "interrupt", "utteranceUntilInterrupt": heard}))
                turn.interrupted = time.monotonic()
                break
            if measured:
                tally.error(f"no end of reply in {spec.get('turn_timeout_s', 15.0)} s")
            return False
        kind = frame.get("type")
        if kind == "text":
            token = frame.get("token") or ""
            if token and turn.first is None:
                turn.first = at
                turn.degraded = not token.lstrip().startswith(FIRST_WORD)
                if interrupt:
                    cut_at = at + spec.get("interrupt_after_s", 0.06)
            heard += token
            if frame.get("last"):
                break
        elif kind == "closed":
            return dropped(tally, False, "socket closed by the server mid-reply")
        elif kind == "error" or kind == "end":
            if measured:
                tally.error(f"{kind} frame: {json.dumps(frame)[:200]}")
            if kind == "end":
                return False
        if kind is None:
            break
    if measured:
        tally.turns.append(turn)
    return True


def dropped(tally: Tally, after_interrupt: bool, what: str) -> bool:
    """The server closed the socket: the call is lost (counted whether measured or not)."""
    tally.dropped += 1
    tally.dropped_after_interrupt += after_interrupt
    if time.monotonic() < tally.window_end:
        tally.error(what + (" (after an interrupt)" if after_interrupt else ""))
    return False


async def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    now = time.monotonic()
    tally = Tally(now + spec["warmup_s"], now + spec["warmup_s"] + spec["duration_s"])
    llm = urlsplit(spec["fake_llm_url"])
    llm_conn = RawConnection(llm.hostname or "127.0.0.1", llm.port or 80)
    await llm_conn.request("GET", "/bench/requests")  # what came before is not ours
    await llm_conn.close()

    async def one(i: int) -> None:
        await asyncio.sleep(i * spec.get("ramp_s", 0.0) / max(1, spec["concurrency"]))
        await caller(spec, tally, i)

    await asyncio.gather(*(one(i) for i in range(spec["concurrency"])))
    await asyncio.sleep(0.3)  # the last closes reach the fake
    r = await llm_conn.request("GET", "/bench/requests")  # a new connection
    await llm_conn.close()
    records: dict[str, dict[str, Any]] = {}
    for rec in json.loads(r.body)["requests"]:
        if rec.get("nonce") and rec.get("first_token") is not None:
            records.setdefault(rec["nonce"], rec)
    added, first_word, closed = [], [], []
    unmatched = not_closed = finished_first = degraded = 0
    for t in tally.turns:
        if t.first is None:
            continue
        degraded += t.degraded
        first_word.append((t.first - t.sent) * 1000)
        rec = records.get(t.nonce)
        if rec is None:
            unmatched += 1
            continue
        added.append((t.first - rec["first_token"]) * 1000)
        if t.interrupted is not None:
            if rec.get("closed") is not None:
                closed.append((rec["closed"] - t.interrupted) * 1000)
            elif rec.get("done") is not None and rec["done"] < t.interrupted:
                finished_first += 1  # the model had finished before the barge-in
            else:
                not_closed += 1  # ran to its end after the barge-in, or never closed
    return {
        "added_ms": added,
        "first_word_ms": first_word,
        "interrupt_close_ms": closed,
        "interrupts": sum(t.interrupted is not None for t in tally.turns),
        "not_closed": not_closed,
        "finished_before_interrupt": finished_first,
        "unmatched": unmatched,
        "degraded": degraded,
        "turns": len(tally.turns),
        "prompts": tally.prompts,
        "window_prompts": tally.window_prompts,
        "window_start": tally.window_start,
        "window_end": tally.window_end,
        "calls": tally.calls,
        "dropped": tally.dropped,
        "dropped_after_interrupt": tally.dropped_after_interrupt,
        "errors": tally.errors,
        "error_samples": tally.error_samples,
        "window_s": tally.window_end - tally.window_start,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    write_result(spec, asyncio.run(run_client(spec)))


# -- the scenario (main process) ------------------------------------------------------------------


def _figures(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, name in (
        ("added_ms", "added"),
        ("first_word_ms", "first_word"),
        ("interrupt_close_ms", "interrupt_close"),
    ):
        s = summary(raw[key])
        out[name] = {"n": s["n"], "p50": s["p50"], "p99": s["p99"], "max": s["max"]}
    for key in (
        "interrupts", "not_closed", "finished_before_interrupt", "unmatched", "degraded", "turns",
        "prompts", "window_prompts", "window_start", "window_end", "calls", "dropped",
        "dropped_after_interrupt", "errors", "error_samples",
    ):  # fmt: skip
        out[key] = raw[key]
    out["throughput"] = raw["turns"] / raw["window_s"] if raw["window_s"] else 0.0
    return out


class CpuTrace:
    """Each service's CPU seconds sampled every `every_s` in a thread while a load runs;
    `between(a, b)` the CPU each used from monotonic time a to b (linear between samples)."""

    def __init__(self, services: dict[str, ServiceProcess], every_s: float = 0.2) -> None:
        self.services = services
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.samples.append(
            (time.monotonic(), {n: svc.cpu_s() for n, svc in self.services.items()})
        )

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> CpuTrace:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def whole(self) -> dict[str, float]:
        """The CPU each used from the first sample to the last."""
        return self.between(self.samples[0][0], self.samples[-1][0])

    def at(self, t: float) -> dict[str, float]:
        before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= t] or self.samples[-1:]
        (t0, a), (t1, b) = before[-1], after[0]
        f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
        return {n: a[n] + (b[n] - a[n]) * f for n in a}

    def between(self, t0: float, t1: float) -> dict[str, float]:
        a, b = self.at(t0), self.at(t1)
        return {n: b[n] - a[n] for n in a}


def run_relay(bench: Bench, block: dict[str, Any], signing: dict[str, str]) -> None:
    from bench.__main__ import ROOT, lag_delta, loop_lag, settle
    from bench.services import run_loadgen

    plan = bench.plan
    fake = bench.spawn(
        "fake-llm-timed",
        "bench.fake_llm:create_app",
        {"FAKE_LLM_FIRST_TOKEN_MS": str(FIRST_TOKEN_MS), "FAKE_LLM_TOKEN_MS": str(TOKEN_MS)},
    )
    fake.wait_ready()
    block["fake_llm"] = {"first_token_ms": FIRST_TOKEN_MS, "token_ms": TOKEN_MS}
    block["targets"] = {
        "added_p99_ms": TARGET_ADDED_P99_MS,
        "interrupt_close_p99_ms": TARGET_INTERRUPT_P99_MS,
        "added_p50_vs_peer_ms": TARGET_PEER_P50_MARGIN_MS,
        "cpu_per_turn_vs_peer": TARGET_CPU_RATIO,
    }
    env = bench.orchestrator_env()
    env["OPENAI_BASE_URL"] = f"{fake.url}/v1"
    env["DATA_DIR"] = str(bench.work / "orchestrator-relay-data")
    orch = bench.spawn(
        "orchestrator-relay", "orchestrator.main:create_app", env, ROOT / "orchestrator"
    )
    orch.wait_ready(120)
    limit = 2.0 if plan.smoke else 30.0

    def client(url: str, level: int, tag: str, **extra: Any) -> dict[str, Any]:
        paced = level > 1
        warmup = plan.warmup_s if paced else min(plan.warmup_s, 2.0)
        spec = {
            "url": url,
            "fake_llm_url": fake.url,
            "concurrency": level,
            "think_s": list(plan.think_s) if paced else [0.1, 0.2],
            "warmup_s": warmup,
            "duration_s": plan.relay_window_s,
            "ramp_s": plan.think_s[1] if paced else 0.0,
            "turns_per_call": plan.relay_turns_per_call,
            "steady": paced and plan.churn,
            "interrupt_every": plan.relay_interrupt_every,
            "tag": tag,
            **signing,
            **extra,
        }
        return run_loadgen(spec, timeout_s=warmup + plan.relay_window_s + 120, module="bench.relay")

    def measured(
        services: dict[str, ServiceProcess], run: Any, turns_key: str, profile: str = ""
    ) -> dict[str, Any]:
        """CPU per turn over the measured window: each service's CPU, sampled through the run,
        read at the window's two ends (the client's clock: CLOCK_MONOTONIC is system-wide),
        over the prompts sent in it. Not from the warm-up, whose calls all start together
        (20 call starts charged to 85 turns in a 15 s window at 20 calls, 2 ms a turn more
        than the steady state); the whole run's figure stays beside it (`cpu_ms_per_turn_run`).
        Runs without window marks (the <Gather> load) keep the whole run's."""
        settle(services, limit)
        # The loop-lag probe (a /metrics scrape) before the CPU is read: the bench's own
        # request is not charged to the turns.
        lag_before = {name: loop_lag(svc) for name, svc in services.items()}
        # --profile: py-spy from here (after the settling, which a start-up warm-up may fill)
        profiling = bench.profiling(
            services, profile, when=bool(profile), seconds=plan.relay_window_s
        )
        with CpuTrace(services) as trace, profiling:
            r = run()
        whole = trace.whole()
        if r[turns_key]:
            r["cpu_ms_per_turn_run"] = {
                n: round(v * 1000 / r[turns_key], 2) for n, v in whole.items()
            }
        sent, cpu = r[turns_key], whole
        if r.get("window_prompts") and r.get("window_start") is not None:
            sent, cpu = r["window_prompts"], trace.between(r["window_start"], r["window_end"])
        r["cpu_ms_per_turn"] = {n: round(v * 1000 / sent, 2) for n, v in cpu.items() if sent}
        r["cpu_ms_per_turn_total"] = round(sum(r["cpu_ms_per_turn"].values()), 2)
        r["loop_blocked"] = {
            name: lag_delta(lag_before[name], loop_lag(svc)) for name, svc in services.items()
        }
        return r

    peer, peer_svc = start_peer(bench, fake, signing)
    block["peer"] = peer
    try:
        # ours, relay mode; the peer at the same level right after ours (back to back: the
        # CPU ratio compares two runs, and a VM's speed drifts by 10-20 % over minutes)
        relay_env = {**bench.gateway_env(orch.url), "TWILIO_VOICE_MODE": "relay"}
        gw = bench.spawn(
            "gateway-relay", "realtime_gateway.app:create_app", relay_env, ROOT / "realtime-gateway"
        )
        gw.wait_ready(60)
        ours = {"gateway": gw, "orchestrator": orch}
        ws_url = "ws" + gw.url[4:] + "/voice/stream/twilio"
        block["relay"] = {}
        try:
            for level in plan.relay_levels:
                print(f"[bench] relay ours @{level}", file=sys.stderr, flush=True)
                top = level == plan.relay_levels[-1]
                r = measured(
                    ours,
                    lambda level=level: _figures(
                        client(gw.url, level, f"r{level}", ws_url=ws_url, voice_webhook=True)
                    ),
                    "prompts",
                    f"relay-{level}" if top else "",
                )
                block["relay"][str(level)] = r
                if peer_svc is not None and level in plan.relay_peer_levels:
                    peer["levels"].update(peer_levels(peer_svc, (level,), client, measured))
        finally:
            bench.stop(gw)
        # ours, webhook (<Gather>) mode: the caller's first word is the whole reply's TwiML
        gw = bench.spawn(
            "gateway-gather",
            "realtime_gateway.app:create_app",
            {**bench.gateway_env(orch.url), "TWILIO_VOICE_MODE": "gather"},
            ROOT / "realtime-gateway",
        )
        gw.wait_ready(60)
        ours = {"gateway": gw, "orchestrator": orch}
        block["gather"] = {}
        try:
            for level in plan.relay_gather_levels:
                print(f"[bench] relay gather @{level}", file=sys.stderr, flush=True)
                r = measured(
                    ours, lambda level=level: gather_run(bench, gw.url, level, signing), "requests"
                )
                block["gather"][str(level)] = r
        finally:
            bench.stop(gw)
        if peer_svc is not None:  # and the peer's levels ours did not run
            rest = tuple(lv for lv in plan.relay_peer_levels if lv not in plan.relay_levels)
            peer["levels"].update(peer_levels(peer_svc, rest, client, measured))
            peer["status"] = "ok"
        floor_run(bench, block, fake, client, measured)
    finally:
        if peer_svc is not None:
            bench.stop(peer_svc)
        bench.stop(orch)
        bench.stop(fake)
    summarize(block)


def gather_run(bench: Bench, url: str, level: int, signing: dict[str, str]) -> dict[str, Any]:
    """The same callers through Twilio's `<Gather>` webhooks (bench/loadgen.py): the time to the
    caller's first word is the gather action's answer, the whole reply's TwiML."""
    from bench.services import run_loadgen

    plan = bench.plan
    paced = level > 1
    warmup = plan.warmup_s if paced else min(plan.warmup_s, 2.0)
    spec = {
        "kind": "turns",
        "workload": "twilio",
        "url": url,
        "concurrency": level,
        "think_s": list(plan.think_s) if paced else [0.1, 0.2],
        "warmup_s": warmup,
        "duration_s": plan.relay_window_s,
        "ramp_s": plan.think_s[1] if paced else 0.0,
        "turns_per_call": 10,
        "steady": paced and plan.churn,
        "tag": f"g{level}",
        **signing,
    }
    raw = run_loadgen(spec, timeout_s=warmup + plan.relay_window_s + 120)
    s = summary(raw["latencies_ms"])
    return {
        "first_word": {"n": s["n"], "p50": s["p50"], "p99": s["p99"], "max": s["max"]},
        "requests": raw["requests"],
        "errors": raw["errors"],
        "degraded": raw["degraded"],
        "error_samples": raw["error_samples"],
        "throughput": len(raw["latencies_ms"]) / raw["window_s"] if raw["window_s"] else 0.0,
    }


def start_peer(
    bench: Bench, fake: ServiceProcess, signing: dict[str, str]
) -> tuple[dict[str, Any], ServiceProcess | None]:
    """twilio-agent-connect serving the same fake model (its ConversationRelay-only mode, fake
    credentials, analytics off); None with the reason in `status` when it cannot run here."""
    peer: dict[str, Any] = {"levels": {}}
    if not bench.plan.relay_peer_levels:
        return peer, None
    try:
        from importlib.metadata import version

        peer["package"] = f"twilio-agent-connect {version('twilio-agent-connect')}"
    except Exception as exc:
        peer["status"] = f"n/a (twilio-agent-connect is not installed: {exc})"
        return peer, None
    env = {
        "TWILIO_ACCOUNT_SID": signing["twilio_account_sid"],
        "TWILIO_AUTH_TOKEN": signing["twilio_token"],
        "TWILIO_PHONE_NUMBER": "+15550002222",
        "TWILIO_VOICE_PUBLIC_DOMAIN": "peer.bench.example",
        "TWILIO_LOG_LEVEL": "WARNING",
        "TAC_ANALYTICS_DISABLED": "true",
        "PEER_OPENAI_BASE_URL": f"{fake.url}/v1",
    }
    svc = None
    try:
        svc = bench.spawn("peer-tac", "bench.peer_tac:create_app", env)
        svc.wait_ready(60)
    except Exception as exc:
        if svc is not None:
            bench.stop(svc)
        peer["status"] = f"n/a (the peer did not start: {str(exc)[-800:]})"
        return peer, None
    return peer, svc


def peer_levels(
    svc: ServiceProcess, levels: tuple[int, ...], client: Any, measured: Any
) -> dict[str, Any]:
    ws_url = f"ws://{svc.url.split('//', 1)[1]}/ws"  # TAC checks the Host it was reached on
    return other_levels("peer", svc, levels, "t", ws_url, client, measured)


def other_levels(
    who: str,
    svc: ServiceProcess,
    levels: tuple[int, ...],
    tag: str,
    ws_url: str,
    client: Any,
    measured: Any,
) -> dict[str, Any]:
    """The same client against another relay server (`who`) at each level; the socket's URL
    is the one its upgrade is signed over."""
    out: dict[str, Any] = {}
    for level in levels:
        print(f"[bench] relay {who} @{level}", file=sys.stderr, flush=True)
        out[str(level)] = measured(
            {who: svc},
            lambda level=level: _figures(
                client(svc.url, level, f"{tag}{level}", ws_url=ws_url, sign_url=ws_url)
            ),
            "prompts",
        )
    return out


def floor_run(
    bench: Bench, block: dict[str, Any], fake: ServiceProcess, client: Any, measured: Any
) -> None:
    """The same client against the bare relay (bench/relay_floor.py): the machine's share."""
    floor: dict[str, Any] = {"levels": {}}
    block["floor"] = floor
    if not bench.plan.relay_floor_levels:
        return
    env = {"FLOOR_OPENAI_BASE_URL": f"{fake.url}/v1"}
    svc = bench.spawn("relay-floor", "bench.relay_floor:create_app", env)
    try:
        svc.wait_ready(60)
        ws_url = "ws" + svc.url[4:] + "/ws"
        floor["levels"] = other_levels(
            "floor", svc, bench.plan.relay_floor_levels, "f", ws_url, client, measured
        )
        floor["status"] = "ok"
    finally:
        bench.stop(svc)


def summarize(block: dict[str, Any]) -> None:
    """The comparisons the targets are set on, at the peer's level."""
    cmp: dict[str, Any] = {}
    for level, theirs in (block.get("peer", {}).get("levels") or {}).items():
        ours = (block.get("relay") or {}).get(level)
        if not ours:
            continue
        a, b = ours["added"]["p50"], theirs["added"]["p50"]
        ca, cb = ours.get("cpu_ms_per_turn_total"), theirs.get("cpu_ms_per_turn_total")
        cmp[level] = {
            "added_p50_ours": a,
            "added_p50_peer": b,
            "added_p50_diff_ms": None if a is None or b is None else a - b,
            "cpu_per_turn_ours": ca,
            "cpu_per_turn_peer": cb,
            "cpu_ratio": None if not ca or not cb else ca / cb,
        }
    block["vs_peer"] = cmp


if __name__ == "__main__":
    main()
