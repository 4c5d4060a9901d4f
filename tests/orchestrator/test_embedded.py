"""The embedded default: with no DATABASE_URL the orchestrator runs on a PostgreSQL it starts under
DATA_DIR, stops it on exit, and recovers what a crash leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.store.embedded import EmbeddedPostgres, EmbeddedPostgresError, PostmasterPid
from tests.orchestrator.conftest import make_settings, new_id, run_app

CRASHING_OWNER = """
import sys, time
from pathlib import Path
from orchestrator.store.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
time.sleep(120)
"""


def postgres_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def server_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_until(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def crash_an_owner(pgdata: Path) -> int:
    """Start the server from another process, then kill -9 that process; return the server pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_OWNER, str(pgdata)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return pid


async def test_with_no_database_url_the_app_owns_a_postgres_under_data_dir(
    embedded_data_dir: Path, service_headers: dict[str, str]
) -> None:
    settings = make_settings(embedded_data_dir, None)
    cid = new_id()
    async with run_app(settings) as orch:
        server: EmbeddedPostgres = orch.app.state.embedded_postgres
        assert server.pgdata == (embedded_data_dir / "postgres").resolve()
        pid = server.pid
        assert pid is not None and postgres_alive(pid)
        r = await orch.client.get("/health/database")
        assert r.json()["checks"]["postgres"]["mode"] == "embedded"
        assert (await orch.client.get("/health")).json()["services"]["database"] == "connected"
        r = await orch.client.post(
            f"/conversations/{cid}/start",
            json={"call_id": cid, "provider": "generic-http"},
            headers=service_headers,
        )
        assert r.status_code == 200
    # Stopped on exit: no process, no postmaster.pid.
    assert wait_until(lambda: not postgres_alive(pid))
    assert not (embedded_data_dir / "postgres" / "postmaster.pid").exists()
    assert server_processes(embedded_data_dir / "postgres") == []
    # The data survives a restart.
    async with run_app(settings) as orch:
        conversation = await orch.state["database"].conversations.get(cid)
        assert conversation is not None and conversation.provider == "generic-http"


async def test_a_server_orphaned_by_a_crash_is_adopted_then_stopped(
    embedded_data_dir: Path,
) -> None:
    pgdata = embedded_data_dir / "postgres"
    orphan = crash_an_owner(pgdata)
    assert postgres_alive(orphan), "kill -9 of the owner leaves its server running"
    async with run_app(make_settings(embedded_data_dir, None)) as orch:
        server: EmbeddedPostgres = orch.app.state.embedded_postgres
        assert server.adopted and server.pid == orphan
        assert (await orch.client.get("/health")).status_code == 200
    assert wait_until(lambda: not postgres_alive(orphan))
    assert server_processes(pgdata) == []


async def test_a_stale_postmaster_pid_naming_a_live_stranger_is_recovered(
    embedded_data_dir: Path,
) -> None:
    pgdata = embedded_data_dir / "postgres"
    server_pid = crash_an_owner(pgdata)
    os.kill(server_pid, signal.SIGKILL)  # the server dies too, leaving its postmaster.pid
    assert wait_until(lambda: server_processes(pgdata) == [])
    # After a reboot the dead server's pid may belong to anything: Postgres itself would refuse
    # to start ("lock file already exists") if we left the file as it is.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        lines[0] = str(stranger.pid)
        (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
        for lock in pgdata.glob(".s.PGSQL.*.lock"):
            lock.write_text(lock.read_text().replace(str(server_pid), str(stranger.pid), 1))
        async with run_app(make_settings(embedded_data_dir, None)) as orch:
            server: EmbeddedPostgres = orch.app.state.embedded_postgres
            assert server.recovered_stale_pid and not server.adopted
            assert server.pid not in (server_pid, stranger.pid)
            assert (await orch.client.get("/health")).status_code == 200
        assert stranger.poll() is None, "the stranger process is left alone"
    finally:
        stranger.kill()
        stranger.wait()
    assert server_processes(pgdata) == []


def test_a_torn_postmaster_pid_is_treated_as_stale(embedded_data_dir: Path) -> None:
    pgdata = embedded_data_dir / "postgres"
    server = EmbeddedPostgres(pgdata)
    server.start()
    server.stop()
    (pgdata / "postmaster.pid").write_text("garbage\n")
    again = EmbeddedPostgres(pgdata)
    try:
        again.start()
        assert again.recovered_stale_pid
        info = PostmasterPid.read(pgdata)
        assert info is not None and info.pid == again.pid and info.status == "ready"
    finally:
        again.stop()


def test_a_second_owner_of_the_same_data_dir_is_refused(embedded_data_dir: Path) -> None:
    first = EmbeddedPostgres(embedded_data_dir / "postgres")
    first.start()
    try:
        with pytest.raises(EmbeddedPostgresError, match="already owns the embedded Postgres"):
            EmbeddedPostgres(embedded_data_dir / "postgres").start()
        assert first.pid is not None and postgres_alive(first.pid)
    finally:
        first.stop()
    # Ownership is released on stop: a new owner may start it.
    second = EmbeddedPostgres(embedded_data_dir / "postgres")
    second.start()
    second.stop()


def test_a_data_dir_too_long_for_a_unix_socket_gets_a_short_socket_dir(
    embedded_data_dir: Path,
) -> None:
    deep = embedded_data_dir / ("d" * 60) / ("e" * 40)
    server = EmbeddedPostgres(deep / "postgres")
    dsn = server.start()
    try:
        assert len(str(deep / "postgres" / ".s.PGSQL.5432")) > 108
        info = PostmasterPid.read(deep / "postgres")
        assert info is not None and info.socket_dir.startswith("/tmp/vao-pg-")
        assert f"host={info.socket_dir}" in dsn
        result = subprocess.run(
            [str(server._bin("psql")), dsn, "-tAc", "SELECT 1"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.stdout.strip() == "1", result.stderr
    finally:
        server.stop()
