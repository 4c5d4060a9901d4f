"""The two services as real uvicorn processes, as `make run` starts them: for `make eval` when
none are running, and for the end-to-end tests (which import this module).

`own_services` starts the orchestrator, then the gateway, on free ports with the embedded
defaults (a fresh `DATA_DIR`: embedded Postgres and Chroma, the demo agent, the offline responder
unless a model key is set) and a secret of their own for every provider the eval can sign for,
so every provider path works against them: the generic-http HMAC and the JWT secret made under
`DATA_DIR` as `make run` makes them, Twilio's auth token and Vonage's signature secret, with
`PUBLIC_BASE_URL` the gateway's own URL (what Twilio signatures cover).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ORCHESTRATOR_FACTORY = "orchestrator.main:create_app"
GATEWAY_FACTORY = "realtime_gateway.app:create_app"
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code in (200, 503):
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


@contextmanager
def run_service(
    name: str, factory: str, env: Mapping[str, str], log_dir: Path, port: int | None = None
) -> Iterator[Service]:
    """One service under uvicorn from its own folder (so its `.env` is read), stopped with
    SIGTERM (then killed after 15 s) when the block ends."""
    port = port or free_port()
    folder = ROOT / ("orchestrator" if name == "orchestrator" else "realtime-gateway")
    log_path = log_dir / f"{name}.log"
    full_env = {k: v for k, v in os.environ.items() if k != "PORT"}
    full_env.update(env)
    full_env["PORT"] = str(port)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log"]
    with log_path.open("wb") as log:
        started = time.monotonic()
        cwd = folder if folder.is_dir() else Path.cwd()
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=log)  # noqa: S603
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, READY_TIMEOUT_S)
            yield Service(name, url, proc, log_path, time.monotonic() - started)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass(frozen=True)
class OwnServices:
    """Services started here, and the environment they were started with."""

    gateway: Service
    orchestrator: Service
    data_dir: Path
    env: Mapping[str, str]


def own_environment(data_dir: Path, gateway_url: str) -> dict[str, str]:
    """`make run`'s defaults on a fresh clone (the JWT and generic-http secrets made under
    DATA_DIR), plus a secret for each provider `make run` leaves unconfigured."""
    return {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": "",  # the embedded Postgres: the demo agent is made on it
        "DEMO": "",
        "REDIS_URL": "",
        "APP_ENV": "development",
        "JWT_SECRET": "",
        "GENERIC_HTTP_SECRET": "",
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "VONAGE_SIGNATURE_SECRET": secrets.token_urlsafe(32),
        # the caller id of a Vonage transfer: without one the gateway cannot render a transfer
        "VONAGE_PHONE_NUMBER": "+15550100000",
        "PUBLIC_BASE_URL": gateway_url,
        "VOICE_PROVIDER": "generic-http",
        "LOG_FORMAT": "json",
        # one eval run makes a few management requests per scenario (agents, memory, /ws)
        "RATE_LIMIT_MANAGEMENT": "100000/15minutes",
    }


@contextmanager
def own_services(extra_env: Mapping[str, str] | None = None) -> Iterator[OwnServices]:
    """Both services on free ports in a fresh `DATA_DIR`, removed afterwards. Outside pytest's
    tmp root: as root the embedded Postgres runs as another account, and a pytest session start
    resets /tmp/pytest-of-<user> to 0700."""
    data_dir = Path(tempfile.mkdtemp(prefix="vao-eval-"))
    gw_port = free_port()
    env = own_environment(data_dir, f"http://127.0.0.1:{gw_port}")
    env.update(extra_env or {})
    try:
        with run_service("orchestrator", ORCHESTRATOR_FACTORY, env, data_dir) as orch:
            gw_env = {**env, "ORCHESTRATOR_URL": orch.url}
            with run_service("gateway", GATEWAY_FACTORY, gw_env, data_dir, gw_port) as gw:
                yield OwnServices(gw, orch, data_dir, env)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
