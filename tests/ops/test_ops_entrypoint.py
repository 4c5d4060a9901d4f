"""Each image's ENTRYPOINT and HEALTHCHECK, taken verbatim from its Dockerfile and run here on
the real service (no Docker engine on this machine): uvicorn listens on $PORT, takes extra
arguments, answers the health probe, and stops cleanly on SIGTERM within the grace period."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.conftest import BIN, ROOT
from ops.test_ops_dockerfiles import instructions

GRACE_S = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_commands(folder: str) -> tuple[list[str], list[str]]:
    found = dict(instructions(ROOT / folder / "Dockerfile"))
    entrypoint = json.loads(found["ENTRYPOINT"]) + json.loads(found["CMD"])
    health = found["HEALTHCHECK"]
    probe = json.loads(health[health.index("CMD") + 3 :].strip())
    probe[0] = sys.executable if probe[0] == "python" else probe[0]
    return entrypoint, probe


def run_image_command(folder: str, tmp_path: Path, extra_env: dict[str, str]) -> None:
    entrypoint, probe = image_commands(folder)
    port = free_port()
    env = {
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GRACEFUL_SHUTDOWN_S": str(GRACE_S),
        "DATA_DIR": str(tmp_path / "data"),
        "APP_ENV": "development",
        **extra_env,
    }
    # Extra arguments after the image's (compose `command:`) must reach uvicorn.
    argv = [*entrypoint, "--log-level", "info"]
    log = tmp_path / f"{folder}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{folder} exited: {log.read_text()[-3000:]}"
            check = subprocess.run(probe, env=env, capture_output=True, timeout=10)
            if check.returncode == 0:
                break
            assert time.monotonic() < deadline, f"{folder} never healthy: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        # `exec` replaced the shell: the process that gets the signal is uvicorn itself.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert any(part.endswith(b"uvicorn") for part in cmdline[:2]), cmdline
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE_S + 10)
        assert time.monotonic() - started < GRACE_S + 5
        # uvicorn drains, runs the app's shutdown, then re-raises the signal (exit 143 in a
        # container), which ECS/compose/Cloud Run count as a clean stop.
        assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        messages = [line["msg"] for line in lines if line.get("logger") == "uvicorn.error"]
        assert f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in messages
        assert messages[-2:] == [
            "Application shutdown complete.",
            f"Finished server process [{proc.pid}]",
        ]
        # Nothing answers any more.
        after = subprocess.run(probe, env=env, capture_output=True, timeout=10)
        assert after.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_gateway_image_command(tmp_path: Path) -> None:
    run_image_command(
        "realtime-gateway",
        tmp_path,
        {"ORCHESTRATOR_URL": f"http://127.0.0.1:{free_port()}"},
    )


@pytest.mark.slow
def test_orchestrator_image_command(tmp_path: Path, pg_dsn: str) -> None:
    run_image_command("orchestrator", tmp_path, {"DATABASE_URL": pg_dsn})
