"""`python -m bench [--smoke] [--json PATH] [--only a,b]`: run every scenario, print the table,
write the JSON (default bench/results/latest.json). See BENCHMARKS.md.

Everything runs as separate processes: the fake LLM, the floor's two apps, the two services
(uvicorn, as `make run` starts them), the load generators and the memory probe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.services import (
    ROOT,
    ServiceProcess,
    create_database,
    drop_database,
    free_port,
    run_loadgen,
    start_uvicorn,
)
from bench.stats import summary

SCENARIOS = ("startup", "floor", "turn", "stream", "fanout", "callstore", "relay", "memory")
GENERIC_SECRET = "bench-generic-http-secret-" + "g" * 16
TWILIO_TOKEN = "bench" + "0" * 27
TWILIO_SID = "AC" + "0" * 32
PUBLIC_BASE_URL = "https://gateway.bench.example"


@dataclass(frozen=True)
class Plan:
    smoke: bool
    levels: tuple[int, ...]  # concurrent calls, each pausing `think_s` between turns
    think_s: tuple[float, float]
    warmup_s: float
    window_s: float  # the single back-to-back call
    # Paced levels: ~16 turns/s at 50 calls, ~66 at 200, so 20 s gives ~330 / ~1,300 samples
    # (the 200-call p99 is then the 13th-largest turn, not the 7th: one host hiccup, which
    # delays every turn in flight at once, moves it less).
    paced_window_s: float
    saturation_levels: tuple[int, ...]  # the same callers with no pause: capacity
    saturation_window_s: float
    startup_runs: int
    stream_requests: int
    fan_subscribers: int
    fan_observers: int
    fan_rate: int
    fan_duration_s: float
    memories: int
    memory_callers: int
    memory_queries: int
    store_writes: int
    # Paced levels in steady state: calls end and new ones start all through the window (each
    # caller's first call is cut short at random), so their call-start and call-end work (the
    # greeting, the memory prefetch, the summary and its memory write) is in the figures, as it
    # is on a busy line. False: every call starts in the warm-up and ends after the window.
    churn: bool = True
    # Call-store round trips (bench/callstore.py): these many calls of these many turns per
    # provider, on a gateway with Redis. Counts, not timings: a few calls show them.
    callstore_calls: int = 10
    callstore_turns: int = 10
    # ConversationRelay (bench/relay.py): ours in relay mode, ours in <Gather> mode, the peer
    # (twilio-agent-connect); concurrent calls, each speaking every `think_s`; window per run.
    relay_levels: tuple[int, ...] = (1, 20, 50, 200)
    relay_gather_levels: tuple[int, ...] = (1, 20, 200)
    relay_peer_levels: tuple[int, ...] = (1, 20)
    relay_floor_levels: tuple[int, ...] = (20, 200)  # the bare relay (bench/relay_floor.py)
    # 30 s: ~170 turns a run at 20 calls; 15 s runs (~85 turns) put the CPU ratio anywhere
    # between 1.4x and 1.6x from one run to the next (BENCHMARKS.md, tenth session)
    relay_window_s: float = 30.0
    relay_interrupt_every: int = 4  # each call's every 4th turn is cut short by the caller
    relay_turns_per_call: int = 10

    @classmethod
    def make(cls, smoke: bool) -> Plan:
        if smoke:
            return cls(
                smoke=True,
                levels=(1, 2),
                think_s=(0.05, 0.1),
                warmup_s=0.3,
                window_s=1.0,
                paced_window_s=1.0,
                saturation_levels=(2,),
                saturation_window_s=0.5,
                startup_runs=1,
                stream_requests=5,
                fan_subscribers=4,
                fan_observers=2,
                fan_rate=50,
                fan_duration_s=1.0,
                memories=200,
                memory_callers=20,
                memory_queries=20,
                store_writes=20,
                callstore_calls=2,
                relay_levels=(1,),
                relay_gather_levels=(1,),
                relay_peer_levels=(1,),
                relay_floor_levels=(1,),
                relay_window_s=2.0,
                relay_interrupt_every=2,
            )
        return cls(
            smoke=False,
            levels=(1, 50, 200),
            think_s=(2.0, 4.0),
            warmup_s=4.0,
            window_s=10.0,
            paced_window_s=20.0,
            saturation_levels=(50, 200),
            saturation_window_s=6.0,
            startup_runs=3,
            stream_requests=200,
            fan_subscribers=200,
            fan_observers=10,
            fan_rate=1000,
            fan_duration_s=6.0,
            memories=10_000,
            memory_callers=1000,
            memory_queries=300,
            store_writes=300,
        )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    mem_gb = psutil.virtual_memory().total / 1e9
    cores = os.cpu_count() or 0
    load = os.getloadavg()[0]
    return {
        "summary": f"{cores} cores, {cpu}, {mem_gb:.0f} GB, Python {platform.python_version()}, "
        f"load avg at start {load:.2f}",
        "cores": cores,
        "cpu": cpu,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "load_avg_start": load,
    }


class RssSampler:
    """Peak RSS of some processes while a load runs (sampled every 100 ms)."""

    def __init__(self, services: dict[str, ServiceProcess]) -> None:
        self.services = services
        self.peak: dict[str, float] = {name: 0.0 for name in services}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, svc in self.services.items():
                rss = svc.rss_mb()
                if rss == rss:  # not NaN
                    self.peak[name] = max(self.peak[name], rss)
            self._stop.wait(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Bench:
    def __init__(
        self, plan: Plan, only: set[str], work: Path, logs: Path, profile: bool = False
    ) -> None:
        self.plan = plan
        self.profile = profile
        self.only = only
        self.work = work
        self.logs = logs
        self.jwt_secret = secrets.token_urlsafe(48)
        self.results: dict[str, Any] = {
            "mode": "smoke" if plan.smoke else "full",
            "started_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "levels": list(plan.levels),
            "scenarios": {},
        }
        self.started: list[ServiceProcess] = []
        self.admin_dsn = os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        )
        self.redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
        # Redis pub/sub ignores db numbers: this run's own events channel, so a test suite or
        # another bench on the same Redis neither feeds nor reads ours.
        self.events_channel = f"vao:bench:{uuid.uuid4().hex[:12]}:events"
        self.dsn: str | None = None
        self.fake_llm: ServiceProcess | None = None
        # BENCH_CHROMA=server: the orchestrator on a `chroma run` server (CHROMA_HOST), as the
        # compose and cloud deployments run it; default: embedded Chroma, as `make run` does.
        self.chroma_server = os.environ.get("BENCH_CHROMA", "embedded") == "server"
        self.chroma: subprocess.Popen[bytes] | None = None
        self.chroma_port = 0

    # -- processes --------------------------------------------------------------------------

    def spawn(
        self, name: str, factory: str, env: dict[str, str], cwd: Path | None = None
    ) -> ServiceProcess:
        svc = start_uvicorn(name, factory, env, self.logs, cwd)
        self.started.append(svc)
        return svc

    def stop(self, svc: ServiceProcess) -> None:
        svc.stop()
        if svc in self.started:
            self.started.remove(svc)

    def orchestrator_env(self) -> dict[str, str]:
        assert self.fake_llm is not None
        env = {
            "APP_ENV": "production",
            "DATA_DIR": str(self.work / "orchestrator-data"),
            "JWT_SECRET": self.jwt_secret,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"{self.fake_llm.url}/v1",
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        }
        if self.dsn:
            env["DATABASE_URL"] = self.dsn
        if self.chroma is not None:
            env["CHROMA_HOST"] = "127.0.0.1"
            env["CHROMA_PORT"] = str(self.chroma_port)
        return env

    def chroma_collections(self) -> list[str] | None:
        import urllib.request

        url = (
            f"http://127.0.0.1:{self.chroma_port}"
            "/api/v2/tenants/default_tenant/databases/default_database/collections"
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return sorted(c["name"] for c in json.loads(response.read()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start_chroma_server(self) -> None:
        """`chroma run` (the chromadb package's own server) under the work dir, until ready."""
        import urllib.request

        self.chroma_port = free_port()
        chroma = Path(sys.executable).with_name("chroma")
        log = (self.logs / "chroma.log").open("wb")
        self.chroma = subprocess.Popen(
            [str(chroma), "run", "--path", str(self.work / "chroma-server"), "--host",
             "127.0.0.1", "--port", str(self.chroma_port)],
            stdout=log,
            stderr=log,
        )  # fmt: skip
        url = f"http://127.0.0.1:{self.chroma_port}/api/v2/heartbeat"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"chroma run did not answer on port {self.chroma_port}")

    def stop_chroma_server(self) -> None:
        if self.chroma is not None:
            # What the orchestrator made there: proof it used this server, not embedded Chroma.
            self.results["chroma_server_collections"] = self.chroma_collections()
            self.chroma.terminate()
            try:
                self.chroma.wait(10)
            except subprocess.TimeoutExpired:
                self.chroma.kill()
            self.chroma = None

    def gateway_env(self, orchestrator_url: str, redis: bool = False) -> dict[str, str]:
        env = {
            "APP_ENV": "production",
            "DATA_DIR": str(self.work / "gateway-data"),
            "JWT_SECRET": self.jwt_secret,
            "ORCHESTRATOR_URL": orchestrator_url,
            "VOICE_PROVIDER": "generic-http",
            "GENERIC_HTTP_SECRET": GENERIC_SECRET,
            "TWILIO_ACCOUNT_SID": TWILIO_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_PHONE_NUMBER": "+15550002222",
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
            # The bench's 200 operators all come from 127.0.0.1; in production they would not
            # share one address, so the per-address limit is lifted here.
            "RATE_LIMIT_MANAGEMENT": "1000000/minute",
            # No load balancer to drain for: stopping a gateway between scenarios would
            # otherwise wait out the production 5 s drain each time (nothing is measured then).
            "SHUTDOWN_DRAIN_S": "0",
        }
        if redis:
            env["REDIS_URL"] = self.redis_url
            env["EVENTS_CHANNEL"] = self.events_channel
        return env

    def start_orchestrator(self) -> ServiceProcess:
        svc = self.spawn(
            "orchestrator",
            "orchestrator.main:create_app",
            self.orchestrator_env(),
            ROOT / "orchestrator",
        )
        svc.wait_ready(120)
        return svc

    def start_gateway(self, orchestrator_url: str, redis: bool = False) -> ServiceProcess:
        name = "gateway-redis" if redis else "gateway"
        svc = self.spawn(
            name,
            "realtime_gateway.app:create_app",
            self.gateway_env(orchestrator_url, redis),
            ROOT / "realtime-gateway",
        )
        svc.wait_ready(60)
        return svc

    @contextmanager
    def scenario(self, name: str) -> Iterator[dict[str, Any]]:
        block: dict[str, Any] = {}
        self.results["scenarios"][name] = block
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            yield block
        except Exception as exc:
            block["status"] = f"error: {type(exc).__name__}: {str(exc)[:500]}"
            block["traceback"] = traceback.format_exc()[-4000:]
            print(f"[bench] {name} failed: {exc}", file=sys.stderr, flush=True)
        block["duration_s"] = round(time.monotonic() - started, 2)
        block.setdefault("status", "ok")

    def wanted(self, name: str) -> bool:
        return not self.only or name in self.only

    # -- run ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.fake_llm = self.spawn("fake-llm", "bench.fake_llm:create_app", {})
        self.fake_llm.wait_ready()
        self.dsn = create_database(self.admin_dsn)
        self.results["database"] = (
            "postgres (fresh bench database)"
            if self.dsn
            else "embedded (BENCH_DATABASE_URL unreachable)"
        )
        self.results["chroma"] = "server (chroma run)" if self.chroma_server else "embedded"
        try:
            if self.chroma_server:
                self.start_chroma_server()
            if self.wanted("startup"):
                self.startup()
            orch = gw = None
            wanted = self.only or set(SCENARIOS)
            if {"turn", "stream", "fanout", "callstore"} & wanted:
                with self.scenario("services") as block:
                    orch = self.start_orchestrator()
                    if {"turn", "stream", "fanout"} & wanted:  # callstore starts its own gateway
                        gw = self.start_gateway(orch.url)
                        time.sleep(1.0)
                        block["rss_idle_mb"] = {
                            "gateway": gw.rss_mb(),
                            "orchestrator": orch.rss_mb(),
                        }
                        block["warm_up"] = self.warm_up(gw)
            if self.wanted("floor") or self.wanted("turn"):
                self.floor_and_turn(orch, gw)
            quiet = {k: v for k, v in (("gateway", gw), ("orchestrator", orch)) if v is not None}
            limit = 2.0 if self.plan.smoke else 30.0
            settled = self.results["settled_before_s"] = {}
            if self.wanted("stream"):
                settled["stream"] = settle(quiet, limit)
                self.stream(orch)
            if self.wanted("fanout"):
                settled["fanout"] = settle(quiet, limit)
                self.fanout(orch)
            if self.wanted("callstore"):
                settled["callstore"] = settle(quiet, limit)
                self.callstore(orch)
            if self.wanted("relay"):
                if self.plan.smoke and "relay" not in self.only:
                    with self.scenario("relay") as block:  # ~25 s of its own processes
                        block["status"] = "n/a (--smoke runs it only with --only relay)"
                else:
                    settled["relay"] = settle(quiet, limit)
                    self.relay()
            if self.wanted("memory"):
                settled["memory"] = settle(quiet, limit)
                self.memory()
        finally:
            for svc in list(reversed(self.started)):
                self.stop(svc)
            self.stop_chroma_server()
            if self.dsn:
                try:
                    drop_database(self.admin_dsn, self.dsn)
                except Exception as exc:
                    print(f"[bench] could not drop {self.dsn}: {exc}", file=sys.stderr)
        self.results["checks"] = [c.as_dict() for c in report.checks(self.results)]
        self.results["finished_at"] = datetime.now(UTC).isoformat()
        return self.results

    def startup(self) -> None:
        with self.scenario("startup") as block:
            for name in ("orchestrator", "gateway"):
                runs: list[float] = []
                orch_for_gw: ServiceProcess | None = None
                try:
                    if name == "gateway":
                        orch_for_gw = self.start_orchestrator()
                    for _ in range(self.plan.startup_runs):
                        if name == "orchestrator":
                            svc = self.spawn(
                                "orchestrator-cold",
                                "orchestrator.main:create_app",
                                self.orchestrator_env(),
                                ROOT / "orchestrator",
                            )
                            ready = svc.wait_ready(120)
                        else:
                            assert orch_for_gw is not None
                            svc = self.spawn(
                                "gateway-cold",
                                "realtime_gateway.app:create_app",
                                self.gateway_env(orch_for_gw.url),
                                ROOT / "realtime-gateway",
                            )
                            ready = svc.wait_ready(60)
                        runs.append(ready)
                        self.stop(svc)
                finally:
                    if orch_for_gw is not None:
                        self.stop(orch_for_gw)
                block[name] = {"runs_s": runs, "median_s": statistics.median(runs)}

    def load(self, workload: str, url: str, level: int, tag: str, saturate: bool) -> dict[str, Any]:
        """One closed-loop run. Paced (calls pause `think_s` between turns, as a caller speaks
        and listens) unless `saturate` or a single call (one call alone meets no contention:
        pacing it would only cost samples)."""
        plan = self.plan
        paced = not saturate and level > 1
        warmup = plan.warmup_s if paced else min(plan.warmup_s, 2.0)
        if saturate:
            window = plan.saturation_window_s
        else:
            window = plan.paced_window_s if paced else plan.window_s
        spec = {
            "kind": "turns",
            "workload": workload,
            "url": url,
            "concurrency": level,
            "think_s": list(plan.think_s) if paced else [0.0, 0.0],
            "warmup_s": warmup,
            "duration_s": window,
            "ramp_s": plan.think_s[1] if paced else min(1.0, warmup / 2),
            "turns_per_call": 10,
            "steady": paced and plan.churn,
            "tag": tag,
            "secret": GENERIC_SECRET,
            "twilio_token": TWILIO_TOKEN,
            "twilio_account_sid": TWILIO_SID,
            "public_base_url": PUBLIC_BASE_URL,
        }
        raw = run_loadgen(spec, timeout_s=warmup + window + 120)
        lat = raw["latencies_ms"]
        out = summary(lat)
        out["throughput"] = len(lat) / raw["window_s"] if raw["window_s"] else 0.0
        if not lat:
            out["note"] = (
                f"no turn started in the {window:g} s window was answered ({raw['errors']} errors)"
            )
        out["errors"] = raw["errors"]
        out["requests"] = raw["requests"]
        out["degraded"] = raw["degraded"]
        out["error_samples"] = raw["error_samples"]
        out["window_wall"] = raw["window_wall"]
        out["slowest"] = raw["slowest"]  # [wall-clock start, ms]: to match against the logs
        out["paced"] = paced
        return out

    def warm_up(self, gw: ServiceProcess) -> dict[str, Any]:
        """A few unmeasured calls per provider first: lazy imports, pools and caches fill here,
        not in the first measured run."""
        out = {}
        for provider in ("generic-http", "twilio"):
            spec = {
                "kind": "turns",
                "workload": provider,
                "url": gw.url,
                "concurrency": 2,
                "think_s": [0.0, 0.0],
                "warmup_s": 0.0,
                "duration_s": 1.0 if self.plan.smoke else 3.0,
                "turns_per_call": 5,
                "tag": "warm",
                "secret": GENERIC_SECRET,
                "twilio_token": TWILIO_TOKEN,
                "twilio_account_sid": TWILIO_SID,
                "public_base_url": PUBLIC_BASE_URL,
            }
            raw = run_loadgen(spec, timeout_s=120)
            out[provider] = {"turns": len(raw["latencies_ms"]), "errors": raw["errors"]}
        return out

    def floor_and_turn(self, orch: ServiceProcess | None, gw: ServiceProcess | None) -> None:
        providers = ("generic-http", "twilio")
        floor_block: dict[str, Any] = {"levels": {}, "saturated": {}}
        self.results["scenarios"]["floor"] = floor_block
        turn_block: dict[str, Any] = {p: {"levels": {}, "saturated": {}} for p in providers}
        self.results["scenarios"]["turn"] = turn_block
        rss = self.results["scenarios"].setdefault("rss", {})
        back = self.spawn("floor-back", "bench.floor:create_back", {})
        back.wait_ready()
        front = self.spawn("floor-front", "bench.floor:create_front", {"FLOOR_BACK_URL": back.url})
        front.wait_ready()
        started = time.monotonic()
        runs = [("levels", level, False) for level in self.plan.levels]
        runs += [("saturated", level, True) for level in self.plan.saturation_levels]
        top = max(self.plan.levels)
        # --profile: the level the ratio target is set at, and the heaviest saturation run
        mid = self.plan.levels[len(self.plan.levels) // 2]
        profile_at = {("levels", mid), ("saturated", max(self.plan.saturation_levels, default=0))}
        try:
            for key, level, saturate in runs:
                print(f"[bench] floor/turn {key} @{level}", file=sys.stderr, flush=True)
                tag = f"{'s' if saturate else 'p'}{level}"
                floor = self.load("floor", front.url, level, f"floor-{tag}", saturate)
                floor_block[key][str(level)] = floor
                if not self.wanted("turn") or gw is None or orch is None:
                    continue
                for provider in providers:
                    settled = settle(
                        {"gateway": gw, "orchestrator": orch}, 1.0 if self.plan.smoke else 30.0
                    )
                    sampler = RssSampler({"gateway": gw, "orchestrator": orch})
                    with (
                        sampler if level == top else _null(),
                        self.profiling(
                            {"gateway": gw, "orchestrator": orch},
                            f"{provider}-{key}-{level}",
                            (key, level) in profile_at,
                        ),
                    ):
                        cpu = {"gateway": gw, "orchestrator": orch}
                        if self.fake_llm is not None:
                            cpu["fake_llm"] = self.fake_llm
                        cpu_before = {name: svc.cpu_s() for name, svc in cpu.items()}
                        lag_before = {"gateway": loop_lag(gw), "orchestrator": loop_lag(orch)}
                        r = self.load(provider, gw.url, level, f"{provider[:1]}-{tag}", saturate)
                        r["cpu_ms_per_turn"] = {
                            name: round((svc.cpu_s() - cpu_before[name]) * 1000 / r["requests"], 2)
                            for name, svc in cpu.items()
                            if r["requests"]
                        }
                        r["loop_blocked"] = {
                            name: lag_delta(lag_before[name], loop_lag(svc))
                            for name, svc in (("gateway", gw), ("orchestrator", orch))
                        }
                    if level == top:
                        for name, peak in sampler.peak.items():
                            entry = rss.setdefault(name, {})
                            entry["load_mb"] = max(entry.get("load_mb", 0.0), peak)
                    r["settle_s"] = settled
                    r["ratio_p50"] = _ratio(r["p50"], floor["p50"])
                    r["ratio_p99"] = _ratio(r["p99"], floor["p99"])
                    turn_block[provider][key][str(level)] = r
        finally:
            self.stop(front)
            self.stop(back)
        floor_block["duration_s"] = round(time.monotonic() - started, 2)
        floor_block["status"] = "ok"
        floor_block["think_s"] = list(self.plan.think_s)
        floor_block["churn"] = self.plan.churn
        turn_block["status"] = "ok" if gw is not None else "n/a (services did not start)"
        turn_block["duration_s"] = floor_block["duration_s"]
        idle = self.results["scenarios"].get("services", {}).get("rss_idle_mb", {})
        for name, value in idle.items():
            rss.setdefault(name, {})["idle_mb"] = value
        rss.setdefault("status", "ok")
        rss.setdefault("duration_s", 0.0)

    @contextmanager
    def profiling(
        self,
        services: dict[str, ServiceProcess],
        label: str,
        when: bool = True,
        seconds: float | None = None,
    ) -> Iterator[None]:
        """py-spy on `services` for the next load (only with --profile): its warm-up and
        `seconds` (default: the paced window) measured."""
        if not (self.profile and when):
            yield
            return
        from bench.profiles import profiled

        sink = self.results.setdefault("profiles", {})
        duration = self.plan.warmup_s + (self.plan.paced_window_s if seconds is None else seconds)
        with profiled(services, self.logs, label, duration, sink):
            yield

    def stream(self, orch: ServiceProcess | None) -> None:
        with self.scenario("stream") as block:
            if orch is None or self.fake_llm is None:
                block["status"] = "n/a (orchestrator did not start)"
                return
            spec = {
                "kind": "stream",
                "url": orch.url,
                "fake_llm_url": self.fake_llm.url,
                "jwt_secret": self.jwt_secret,
                "requests": self.plan.stream_requests * 2,
                "concurrency": 1,
                "duration_s": 5.0 if self.plan.smoke else 60.0,
            }
            raw = run_loadgen(spec, timeout_s=180)
            block.update(
                {k: raw[k] for k in ("unmatched", "errors", "error_samples", "content_types")}
            )
            if "text/event-stream" not in raw["content_types"]:
                got = ", ".join(raw["content_types"]) or "no answer"
                block["status"] = f"n/a (not implemented: Accept: text/event-stream answered {got})"
                return
            direct = summary(raw["direct_ms"])
            block["direct_turn"] = {"p50": direct["p50"], "p99": direct["p99"], "n": direct["n"]}
            stages: dict[str, list[float]] = {}
            for t in raw["timings"]:
                for stage, ms in t.items():
                    if isinstance(ms, int | float):
                        stages.setdefault(stage, []).append(float(ms))
            block["stage_p50_ms"] = {k: summary(v)["p50"] for k, v in sorted(stages.items())}
            s = summary(raw["added_ms"])
            block.update(
                {"n": s["n"], "added_p50": s["p50"], "added_p99": s["p99"], "added_max": s["max"]}
            )
            if not raw["added_ms"]:
                block["status"] = "n/a (no streamed reply carried the LLM's first token)"

    def fanout(self, orch: ServiceProcess | None) -> None:
        from bench.fanout_run import run_fanout

        with self.scenario("fanout") as block:
            if orch is None:
                block["status"] = "n/a (orchestrator did not start)"
                return
            run_fanout(self, orch, block)

    def callstore(self, orch: ServiceProcess | None) -> None:
        from bench.callstore import run_callstore

        with self.scenario("callstore") as block:
            if orch is None:
                block["status"] = "n/a (orchestrator did not start)"
                return
            signing = {
                "secret": GENERIC_SECRET,
                "twilio_token": TWILIO_TOKEN,
                "twilio_account_sid": TWILIO_SID,
                "public_base_url": PUBLIC_BASE_URL,
            }
            run_callstore(self, orch, block, signing)

    def relay(self) -> None:
        from bench.relay import run_relay

        with self.scenario("relay") as block:
            signing = {
                "secret": GENERIC_SECRET,
                "twilio_token": TWILIO_TOKEN,
                "twilio_account_sid": TWILIO_SID,
                "public_base_url": PUBLIC_BASE_URL,
            }
            run_relay(self, block, signing)

    def memory(self) -> None:
        with self.scenario("memory") as block:
            assert self.fake_llm is not None
            spec = {
                "data_dir": str(self.work / "memory-data"),
                "openai_api_key": "sk-bench",
                "openai_base_url": f"{self.fake_llm.url}/v1",
                "database_url": self.dsn,
                "memories": self.plan.memories,
                "callers": self.plan.memory_callers,
                "queries": self.plan.memory_queries,
                "writes": self.plan.store_writes,
            }
            raw = run_loadgen(spec, timeout_s=300, module="bench.memory_probe")
            recall, chroma = summary(raw["recall_ms"]), summary(raw["chroma_query_ms"])
            recent, heavy = summary(raw["recent_ms"]), summary(raw["recent_heavy_ms"])
            block.update(
                {
                    "memories": raw["memories"],
                    "embedding": raw["embedding"],
                    "seed_s": raw.get("seed_s"),
                    "recall_p50": recall["p50"],
                    "recall_p99": recall["p99"],
                    "chroma_p50": chroma["p50"],
                    "chroma_p99": chroma["p99"],
                    "recall_hits_per_query": raw["recall_hits_per_query"],
                    "recent_p50": recent["p50"],
                    "recent_p99": recent["p99"],
                    "recent_heavy_p50": heavy["p50"],
                    "recent_heavy_p99": heavy["p99"],
                }
            )
            if not raw["recall_hits_per_query"]:
                block["status"] = (
                    "n/a (recall found none of the seeded memories: the memory metadata changed; "
                    "update bench/memory_probe.py memory_metadata)"
                )
            if "store_write_ms" in raw:
                w = summary(raw["store_write_ms"])
                block.update({"store_write_p50": w["p50"], "store_write_p99": w["p99"]})
            else:
                block["store_write_note"] = "n/a (no Postgres reachable)"


def settle(services: dict[str, ServiceProcess], limit_s: float = 30.0) -> float:
    """Wait until the services are idle (background work of the previous run, e.g. the memories
    written when its calls ended, done), so one run's backlog is not charged to the next.
    Returns the seconds waited."""
    import psutil

    started = time.monotonic()
    procs = []
    for svc in services.values():
        try:
            p = psutil.Process(svc.proc.pid)
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            pass
    quiet = 0
    while time.monotonic() - started < limit_s:
        time.sleep(0.5)
        try:
            busy = sum(p.cpu_percent(None) for p in procs)
        except psutil.Error:
            break
        quiet = quiet + 1 if busy < 10.0 else 0
        if quiet >= 2:
            break
    return round(time.monotonic() - started, 2)


@contextmanager
def _null() -> Iterator[None]:
    yield


LAG_BOUNDS = (0.05, 0.1)


def loop_lag(svc: ServiceProcess) -> dict[str, float] | None:
    """The service's `event_loop_lag_seconds` (shared/loop_lag.py) from its `/metrics`: the
    tick count, the lag's sum and the buckets the report uses; None if it cannot be read."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{svc.url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "event_loop_lag_seconds":
            continue
        for sample in family.samples:
            kind = sample.name.removeprefix("event_loop_lag_seconds_")
            le = sample.labels.get("le")
            if kind == "bucket" and le is not None and float(le) in LAG_BOUNDS:
                out[f"le_{float(le)}"] = sample.value
            elif kind in ("count", "sum"):
                out[kind] = sample.value
    return out if "count" in out else None


def lag_delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    """Ticks of the run that were over 50 ms / over 100 ms late, and the seconds lost in all."""
    if before is None or after is None:
        return {"status": "n/a (no /metrics)"}
    ticks = after["count"] - before["count"]
    return {
        "ticks": int(ticks),
        "over_50ms": int(ticks - (after["le_0.05"] - before["le_0.05"])),
        "over_100ms": int(ticks - (after["le_0.1"] - before["le_0.1"])),
        "lag_s": round(after["sum"] - before["sum"], 3),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return a / b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="each scenario ~1 s, tiny load (CI)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--only", default="", help=f"comma list of {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--no-saturation",
        action="store_true",
        help="skip the saturation (capacity) runs: only the paced levels the targets are set at",
    )
    parser.add_argument(
        "--no-churn",
        action="store_true",
        help="paced calls all start in the warm-up and end after the window (no call starts or "
        "ends measured): the figures of the sessions before 2026-12-04",
    )
    parser.add_argument(
        "--levels",
        default="",
        help="comma list of paced concurrency levels to run instead of the plan's (e.g. 200)",
    )
    parser.add_argument(
        "--relay-levels",
        default="",
        help="comma list of relay concurrency levels (ours) instead of the plan's (e.g. 20)",
    )
    parser.add_argument(
        "--relay-gather-levels",
        default=None,
        help="comma list of <Gather>-mode levels in the relay scenario ('' for none)",
    )
    parser.add_argument(
        "--relay-peer-levels",
        default=None,
        help="comma list of the peer's levels in the relay scenario ('' for none)",
    )
    parser.add_argument(
        "--relay-floor-levels",
        default=None,
        help="comma list of the bare relay's (floor) levels in the relay scenario ('' for none)",
    )
    parser.add_argument(
        "--relay-window",
        type=float,
        default=None,
        help="seconds measured per relay run (default 30): longer for steadier figures",
    )
    parser.add_argument(
        "--relay-turns-per-call",
        type=int,
        default=None,
        help="turns in each relay call (default 10): 1 shows what a call's start and end cost",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the services at the top load (see logs dir)"
    )
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    plan = Plan.make(args.smoke)
    if args.no_saturation:
        plan = dataclasses.replace(plan, saturation_levels=())
    if args.no_churn:
        plan = dataclasses.replace(plan, churn=False)
    # --levels and --relay-levels: '' keeps the plan's; the others: '' for none
    for flag, field, empty_keeps in (
        ("--levels", "levels", True),
        ("--relay-levels", "relay_levels", True),
        ("--relay-gather-levels", "relay_gather_levels", False),
        ("--relay-peer-levels", "relay_peer_levels", False),
        ("--relay-floor-levels", "relay_floor_levels", False),
    ):
        value = getattr(args, field)
        if value is None or (empty_keeps and not value):
            continue
        try:
            chosen = tuple(int(x) for x in value.split(",") if x.strip())
        except ValueError:
            parser.error(f"{flag}: not a comma list of integers: {value!r}")
        plan = dataclasses.replace(plan, **{field: chosen})
    if args.relay_turns_per_call is not None:
        if args.relay_turns_per_call < 1:
            parser.error("--relay-turns-per-call: an integer >= 1")
        plan = dataclasses.replace(plan, relay_turns_per_call=args.relay_turns_per_call)
    if args.relay_window is not None:
        if args.relay_window <= 0:
            parser.error("--relay-window: seconds > 0")
        plan = dataclasses.replace(plan, relay_window_s=args.relay_window)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    logs = args.json.parent / f"{args.json.stem}-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vao-bench-") as tmp:
        results = Bench(plan, only, Path(tmp), logs, args.profile).run()
    results["total_s"] = round(time.monotonic() - started, 1)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(report.table(results))
    print(f"\n{results['total_s']:.0f} s; JSON: {args.json}; service logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
