"""Processes for the benchmark: uvicorn services started as in production, the load generator,
and a throw-away Postgres database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """The caller's environment minus anything that would point a service elsewhere."""
    drop = {
        "PORT",
        "DATABASE_URL",
        "REDIS_URL",
        "EVENTS_CHANNEL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "JWT_SECRET",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(ROOT)
    return env


@dataclass
class ServiceProcess:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    ready_s: float = float("nan")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _sum(self, measure: Callable[[psutil.Process], float], children: str = "") -> float:
        """`measure` of the uvicorn process plus its live children whose name starts with
        `children` (e.g. workers, the orchestrator's embedded Chroma process and its fork
        server); NaN once the process is gone."""
        try:
            p = psutil.Process(self.proc.pid)
            total = measure(p)
            for child in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.name().startswith(children):
                        total += measure(child)
        except psutil.Error:
            return float("nan")
        return float(total)

    def rss_mb(self) -> float:
        """Resident memory of the process and its Python children, MB."""
        return self._sum(lambda p: p.memory_info().rss / 1e6, children="python")

    def cpu_s(self) -> float:
        """User + system CPU seconds the process and its children have used so far."""
        return self._sum(lambda p: sum(p.cpu_times()[:2]))  # user, system

    def logs(self, tail: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds from spawn to the first `/health` 200."""
        while time.monotonic() - self.started_at < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}) before ready:\n{self.logs()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    self.ready_s = time.monotonic() - self.started_at
                    return self.ready_s
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s:\n{self.logs()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_uvicorn(
    name: str, factory: str, env: dict[str, str], log_dir: Path, cwd: Path | None = None
) -> ServiceProcess:
    """`uvicorn --factory` as `make run` starts it: no reload, no access log, uvloop/httptools
    picked automatically when installed."""
    port = free_port()
    full_env = base_env()
    full_env.update(env)
    full_env["PORT"] = str(port)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "5"]
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=full_env, stdout=log, stderr=log)
    log.close()
    return ServiceProcess(name, f"http://127.0.0.1:{port}", proc, log_path, started)


def run_loadgen(
    spec: dict[str, Any], timeout_s: float = 300.0, module: str = "bench.loadgen"
) -> Any:
    """Run one load in its own process; return its JSON result."""
    fd, out = tempfile.mkstemp(prefix="bench-result-", suffix=".json")
    os.close(fd)
    spec = {**spec, "out": out}
    try:
        return _run_worker(spec, timeout_s, module, Path(out))
    finally:
        Path(out).unlink(missing_ok=True)


def _run_worker(spec: dict[str, Any], timeout_s: float, module: str, out: Path) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", module, json.dumps(spec)],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}")
    return json.loads(out.read_text())


def _with_database(dsn: str, database: str) -> str:
    """`dsn` naming another database (TCP or Unix-socket forms, the query string kept)."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def create_database(admin_dsn: str) -> str | None:
    """A fresh `vao_bench_<rand>` database on the server, or None if it is unreachable."""
    import asyncpg

    name = f"vao_bench_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    return _with_database(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    import asyncpg

    name = urlsplit(dsn).path.strip("/")

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
