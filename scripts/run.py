"""`make run`: start the orchestrator and the gateway together; Ctrl-C stops both.

Each service runs from its own folder, so its `.env` (made with `cp .env.example .env`) is read;
DATA_DIR is exported by the Makefile as one absolute path, so both share the development JWT
secret made there. The orchestrator starts first (the gateway asks it for greetings).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
        print(
            f"\n  realtime-gateway  http://127.0.0.1:{gw}   (/health, /voice/webhook, /ws)\n"
            f"  orchestrator      http://127.0.0.1:{orch}   (/health, /docs)\n"
            "  management token:  make token\n  Ctrl-C stops both.\n",
            flush=True,
        )
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
