"""`make run`: start the orchestrator and the gateway together; Ctrl-C stops both.

Each service runs from its own folder, so its `.env` (made with `cp .env.example .env`) is read;
DATA_DIR is exported by the Makefile as one absolute path, so both share the development JWT
secret made there. The orchestrator starts first (the gateway asks it for greetings).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = (
    ("orchestrator", "orchestrator", "orchestrator.main:create_app", "ORCHESTRATOR_PORT", 8000),
    (
        "realtime-gateway",
        "realtime-gateway",
        "realtime_gateway.app:create_app",
        "GATEWAY_PORT",
        3000,
    ),
)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - local URL
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def fetch_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL
            body = json.load(resp)
            return body if isinstance(body, dict) else {}
    except (OSError, ValueError):
        return {}


def where_to_go(gw_port: int, orch_port: int) -> str:
    """The block printed once both services are ready: where things are, what to try, and what
    each part runs on (asked of the services themselves, so their `.env` files count)."""
    gw, orch = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{orch_port}"
    modes = fetch_json(f"{orch}/").get("modes") or {}
    health = fetch_json(f"{gw}/health")
    call_state = health.get("services", {}).get("database")
    demo = modes.get("demo_agent")
    lines = [
        "",
        "  Voice Agent Orchestrator is running. Ctrl-C stops both.",
        f"  gateway       {gw}   webhooks /voice/webhook/<provider>, events ws://127.0.0.1:"
        f"{gw_port}/ws?token=…",
        f"  orchestrator  {orch}   agents, conversations, knowledge",
        f"  console       {gw}/console   sign in with a token (below); make call: a test call",
        f"  OpenAPI       {orch}/docs (try it) · {gw}/openapi.json (with a token)",
        '  token         make token ROLE=admin   e.g. curl -H "Authorization: Bearer $(make -s '
        f'token)" {gw}/voice/calls',
        "  test call     the tour in README.md ('A 60-second tour'): two calls to the demo agent",
        f'                or: curl -X POST -H "Authorization: Bearer $(make -s token)" '
        f"{gw}/voice/webhook/test",
    ]
    if demo:
        lines.append(
            f"  demo agent    {demo['name']} answers +15550002222 "
            f"(DELETE {orch}/agents/{demo['id']} removes it)"
        )
    lines += [
        "  modes",
        f"    Postgres      {modes.get('database', '?')}",
        f"    Chroma        {modes.get('vector_store', '?')}",
        f"    responder     {modes.get('llm', '?')}",
        "    call state    "
        + ("in process (no REDIS_URL)" if call_state == "in-memory" else "Redis (REDIS_URL)"),
        f"    voice         {health.get('voice_provider', '?')} (VOICE_PROVIDER)",
        "",
    ]
    return "\n".join(lines)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reload", action="store_true", help="restart a service on code change")
    args = parser.parse_args()
    base_env = dict(os.environ)
    base_env.pop("PORT", None)  # each service has its own port: GATEWAY_PORT / ORCHESTRATOR_PORT
    base_env.setdefault("DATA_DIR", str(ROOT / ".data"))
    procs: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for name, folder, factory, port_var, default_port in SERVICES:
            env = dict(base_env)
            port = int(base_env.get(port_var, default_port))
            env["PORT"] = str(port)
            if name == "realtime-gateway":
                env.setdefault("ORCHESTRATOR_URL", f"http://127.0.0.1:{procs_port['orchestrator']}")
            cmd = [sys.executable, "-m", "uvicorn", "--factory", factory, "--port", str(port)]
            cmd += ["--host", env.get("HOST", "0.0.0.0"), "--no-access-log"]
            cmd += ["--timeout-graceful-shutdown", "10"]
            if args.reload:
                cmd += [
                    "--reload",
                    "--reload-dir",
                    str(ROOT / folder),
                    "--reload-dir",
                    str(ROOT / "shared"),
                ]
            proc = subprocess.Popen(cmd, cwd=ROOT / folder, env=env)  # noqa: S603
            procs.append(proc)
            procs_port[name] = port
            if not wait_healthy(f"http://127.0.0.1:{port}/health", proc, 60):
                print(f"{name} did not become ready on port {port}", file=sys.stderr)
                stop(procs)
                return 1
        gw, orch = procs_port["realtime-gateway"], procs_port["orchestrator"]
        print(where_to_go(gw, orch), flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("a service exited; stopping the other", file=sys.stderr)
        stop(procs)
        return 1
    except KeyboardInterrupt:
        stop(procs)
        return 0


procs_port: dict[str, int] = {}

if __name__ == "__main__":
    sys.exit(main())
