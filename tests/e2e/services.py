"""Start the two services as real uvicorn processes, as `make run` does, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


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
    name: str, factory: str, env: dict[str, str], log_dir: Path, port: int | None = None
) -> Iterator[Service]:
    port = port or free_port()
    folder = "orchestrator" if name == "orchestrator" else "realtime-gateway"
    log_path = log_dir / f"{name}.log"
    full_env = {k: v for k, v in os.environ.items() if k != "PORT"}
    full_env.update(env)
    full_env["PORT"] = str(port)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log"]
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT / folder, env=full_env, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            yield Service(name, url, proc, log_path, time.monotonic() - started)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
