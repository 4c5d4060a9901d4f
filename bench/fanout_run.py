"""The fan-out scenario's driver (main process): a gateway on Redis, the subscriber and publisher
processes from `bench.fanout`, and the gateway's own `/ws/status` counters before and after."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.services import ROOT, ServiceProcess, base_env
from bench.stats import summary
from shared.auth import mint_token

if TYPE_CHECKING:
    from bench.__main__ import Bench


def redis_reachable(url: str) -> bool:
    import redis.asyncio as aioredis

    async def ping() -> bool:
        r = aioredis.from_url(url, socket_connect_timeout=2)
        try:
            return bool(await r.ping())
        finally:
            await r.aclose()

    try:
        return asyncio.run(ping())
    except Exception:
        return False


def spawn(role: str, spec: dict[str, Any], out: Path) -> subprocess.Popen[bytes]:
    spec = {**spec, "out": str(out)}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.fanout", role, json.dumps(spec)],
        cwd=ROOT,
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def collect(proc: subprocess.Popen[bytes], timeout_s: float, out: Path) -> Any:
    _, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"fan-out process failed: {err.decode()[-2000:]}")
    return json.loads(out.read_text())


def ws_status(gw: ServiceProcess, token: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/ws/status", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    return dict(r.json()) if r.status_code == 200 else {"http_status": r.status_code}


def run_mode(
    bench: Bench, gw: ServiceProcess, mode: str, token: str, rate: int, batch: bool = False
) -> dict[str, Any]:
    plan = bench.plan
    n = plan.fan_subscribers
    connect_s = 1.0 if plan.smoke else 4.0
    grace_s = 0.5 if plan.smoke else 2.0
    start_at = time.monotonic() + connect_s
    common = {"subscribers": n, "start_at": start_at, "duration_s": plan.fan_duration_s}
    before = ws_status(gw, token)
    subs_out = bench.work / f"fan-{mode}-{rate}-subs.json"
    pub_out = bench.work / f"fan-{mode}-{rate}-pub.json"
    subs = spawn(
        "subscribe",
        {
            **common,
            "url": gw.url,
            "token": token,
            "mode": mode,
            "batch": batch,
            "observers": plan.fan_observers,
            "grace_s": grace_s,
        },
        subs_out,
    )
    pub = spawn(
        "publish",
        {
            **common,
            "redis_url": bench.redis_url,
            "channel": bench.events_channel,
            "rate": rate,
        },
        pub_out,
    )
    timeout = connect_s + plan.fan_duration_s + grace_s + 60
    published = collect(pub, timeout, pub_out)
    received = collect(subs, timeout, subs_out)
    after = ws_status(gw, token)
    lat = summary(received["latencies_ms"])
    ids = [f"bench-fan-{i}" for i in range(n)]
    per_call = published["per_call"]
    observers = [int(i) for i in received["received"]]
    if mode == "all":
        expected = published["published"] * len(observers)
    else:
        expected = sum(per_call.get(ids[i], 0) for i in observers)
    got = sum(received["received"].values())
    dropped = None
    if "clients_dropped" in after and "clients_dropped" in before:
        dropped = after["clients_dropped"] - before["clients_dropped"]
    stalled_outcome = "dropped by the gateway" if dropped else "still connected (not dropped)"
    return {
        "mode": mode,
        "batch": batch,
        "frames": received.get("frames"),
        "subscribers": n,
        "observers": len(observers),
        "rate_target": rate,
        "rate_achieved": published["published"] / max(published["elapsed_s"], 1e-9),
        "published": published["published"],
        "p50": lat["p50"],
        "p99": lat["p99"],
        "max": lat["max"],
        "n": lat["n"],
        "delivered_ratio": got / expected if expected else None,
        "observers_closed_by_gateway": len(received["observers_closed"]),
        "connect_errors": received["connect_errors"],
        "connect_error_samples": received["errors"],
        "dropped": dropped,
        "stalled_outcome": stalled_outcome,
        "drained_mb": received["drained_bytes"] / 1e6,
        "ws_status_after": after,
        "status": (
            f"{received['connect_errors']} of {n} subscribers could not connect: "
            f"{(received['errors'] or [''])[0][:160]}"
            if received["connect_errors"]
            else "ok"
        ),
    }


def run_fanout(bench: Bench, orch: ServiceProcess, block: dict[str, Any]) -> None:
    if not redis_reachable(bench.redis_url):
        block["status"] = f"n/a (no Redis at {bench.redis_url}: events enter through it)"
        return
    gw = bench.start_gateway(orch.url, redis=True)
    try:
        token = mint_token(bench.jwt_secret, sub="bench", role="admin")
        status = ws_status(gw, token)
        if status.get("backend") != "redis":
            block["status"] = f"n/a (gateway event bus is {status.get('backend')!r}, not redis)"
            return
        rate = bench.plan.fan_rate
        # Every event to every subscriber (200 x 1,000 = 200,000 events/s) is the target shape,
        # with `/ws?batch=1` (a frame carries what is waiting when a subscriber is behind); the
        # same at a frame per event, the default contract, shows what one process can frame.
        runs = [("all", "all", rate, True), ("per_call", "per_call", rate, False)]
        if not bench.plan.smoke:  # where a frame per event still holds: a tenth of the rate
            runs.append(("all_frames", "all", rate, False))
            runs.append(("all_low", "all", rate // 10, False))
        for key, mode, r, batch in runs:
            with bench.profiling({"gateway": gw}, f"fanout-{key}"):
                block[key] = run_mode(bench, gw, mode, token, r, batch)
            time.sleep(1.0)
    finally:
        bench.stop(gw)
