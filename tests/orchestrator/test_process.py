"""`python -m orchestrator` as a real process: cold start to a healthy /health, clean stop
(embedded Postgres included), and one-line configuration errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

COLD_START_BUDGET_S = 20.0  # generous for a loaded CI machine; measured figures are far lower


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def orchestrator_env(embedded_data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "JWT_"))}
    env.update({"DATA_DIR": str(embedded_data_dir), "HOST": "127.0.0.1", "APP_ENV": "development"})
    env.update(extra)
    return env


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    return None


def run_until_healthy(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], float]:
    port = free_port()
    env = {**env, "PORT": str(port)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ready = wait_healthy(f"http://127.0.0.1:{port}/health", proc, COLD_START_BUDGET_S)
    if ready is None:
        proc.kill()
        out = proc.communicate()[0].decode(errors="replace")
        pytest.fail(f"orchestrator not healthy within {COLD_START_BUDGET_S}s:\n{out[-3000:]}")
    return proc, time.monotonic() - started


def stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, as docker and `make run` stop it. uvicorn shuts down gracefully, then re-raises
    the signal, so the exit status is -SIGTERM after a clean stop."""
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out, out
    return out


def postgres_under(pgdata: Path) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(pgdata) in (p.info["cmdline"] or [])
    ]


def test_embedded_default_cold_start_serves_health_and_stops_its_postgres(
    embedded_data_dir: Path, tmp_path: Path
) -> None:
    proc, cold_s = run_until_healthy(orchestrator_env(embedded_data_dir), tmp_path)
    assert postgres_under((embedded_data_dir / "postgres").resolve())
    # A second orchestrator on the same DATA_DIR is refused in one line, the first unharmed.
    second = subprocess.run(
        [sys.executable, "-m", "orchestrator"],
        env={**orchestrator_env(embedded_data_dir), "PORT": str(free_port())},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: another orchestrator (pid {proc.pid}) already owns the embedded Postgres in "
        f"{(embedded_data_dir / 'postgres').resolve()}; stop it, use another DATA_DIR, "
        "or set DATABASE_URL"
    ]
    assert proc.poll() is None
    out = stop(proc)
    assert '"database": "embedded"' in out and '"llm": "offline"' in out
    assert "embedded Postgres stopped" in out
    assert postgres_under((embedded_data_dir / "postgres").resolve()) == []
    # A second start finds an initialised data dir and is faster.
    proc, warm_s = run_until_healthy(orchestrator_env(embedded_data_dir), tmp_path)
    stop(proc)
    print(f"\ncold start (embedded, first run incl. initdb): {cold_s:.2f}s; again: {warm_s:.2f}s")


def test_database_url_cold_start_serves_health(
    pg_dsn: str, embedded_data_dir: Path, tmp_path: Path
) -> None:
    proc, cold_s = run_until_healthy(
        orchestrator_env(embedded_data_dir, DATABASE_URL=pg_dsn), tmp_path
    )
    out = stop(proc)
    assert '"database": "external"' in out
    assert not (embedded_data_dir / "postgres").exists()
    print(f"\ncold start (DATABASE_URL): {cold_s:.2f}s")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PORT": "eighty"}, "configuration error: PORT:"),
        ({"DATABASE_URL": "mysql://x"}, "configuration error: DATABASE_URL:"),
        ({"APP_ENV": "production"}, "configuration error: JWT_SECRET is required"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line(
    embedded_data_dir: Path, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator"],
        env={**orchestrator_env(embedded_data_dir), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
