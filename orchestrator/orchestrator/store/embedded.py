"""The embedded default: a PostgreSQL server the orchestrator starts and owns under DATA_DIR.

The `pgserver` package ships the server binaries. We use its binaries and its root handling
(initdb and the server run as a `pgserver` system user when we are root; the parent folders are
made traversable for it) but drive the life cycle ourselves, because its `get_server()`:
- keeps a per-data-dir list of "handle" pids that a crash never cleans, so after one crash the
  server is never stopped again;
- trusts any live process whose pid is in a stale `postmaster.pid` (pid reuse after a crash);
- starts the server in our process group, so Ctrl-C in a terminal hits Postgres before we have
  closed our pool.

Ownership is an exclusive `flock` on `DATA_DIR/postgres.lock`, held for the orchestrator's
lifetime. The kernel drops it when the process dies, even on `kill -9`, so holding it proves that
any server still running on our data directory is an orphan of a crashed run: we adopt it if it
answers, else stop it, and we delete a `postmaster.pid` whose pid is not our server's.

Supervision: a server that dies while we own it (killed, OOM) is restarted by a watchdog thread
`start()` starts and `stop()` ends: it looks at the postmaster every `check_interval_s`, and
when it is gone, kills what is left of its processes (they would hold its shared memory and stop
a new server), and starts it again on the same socket (the DSN does not change, so the pool
reconnects by itself), retrying with a capped exponential backoff, every step logged. Polling a
pid costs a few /proc reads; start-up does no more work than before.

Durability: every commit is acknowledged only once its WAL is flushed (`synchronous_commit=on`,
given on the server's command line so it also overrides the `off` that data directories made by
earlier versions carry in their postgresql.conf). With `off`, killing the server lost rows
whose commit had been answered 5-15 ms before.
Everything here is blocking: call `start()` and `stop()` through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

log = logging.getLogger(__name__)

PG_USER = "postgres"
SYSTEM_USER = "pgserver"  # the unprivileged account Postgres runs as when we are root
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
MAX_LOG_BYTES = 10 * 1024 * 1024
CHECK_INTERVAL_S = 0.5  # how often the watchdog looks at the postmaster
RESTART_BACKOFF_FIRST_S = 0.5  # wait after a failed restart, doubled each time ...
RESTART_BACKOFF_MAX_S = 30.0  # ... up to this
LEFTOVER_EXIT_TIMEOUT_S = 5.0


def pgserver_root() -> Path:
    """The installed `pgserver` package folder, found without importing it (its import has side
    effects: a runtime dir, a machine-wide lock file, a warning without XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the pgserver package is not installed; set DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations)))


def _make_traversable(folder: Path) -> None:
    """o+x on `folder` and its parents, so the Postgres account can reach what lies below."""
    for path in (folder, *folder.parents):
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            path.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started (the message says why and where the log is)."""


@dataclass(frozen=True, slots=True)
class PostmasterPid:
    """`postmaster.pid` lines: pid, data dir, start, port, socket dir, listen addr, shm, status."""

    pid: int
    port: int
    socket_dir: str
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> PostmasterPid | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        try:
            pid = int(lines[0].strip())
        except (IndexError, ValueError):
            return cls(pid=0, port=0, socket_dir="", status="")  # torn file: certainly stale
        port = int(lines[3].strip()) if len(lines) > 3 and lines[3].strip().isdigit() else 5432
        socket_dir = lines[4].strip() if len(lines) > 4 else ""
        status = lines[7].strip() if len(lines) > 7 else ""
        return cls(pid=pid, port=port, socket_dir=socket_dir, status=status)


class EmbeddedPostgres:
    """Start, adopt, recover and stop the PostgreSQL server under `pgdata`."""

    def __init__(
        self, pgdata: Path, *, supervise: bool = True, check_interval_s: float = CHECK_INTERVAL_S
    ) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.lock_path = self.pgdata.parent / "postgres.lock"
        self.log_path = self.pgdata / "postgres.log"
        self.dsn: str | None = None
        self.pid: int | None = None
        self.adopted = False
        self.recovered_stale_pid = False
        self.start_seconds: float | None = None
        self._lock_file: IO[str] | None = None
        self._system_user: str | None = None
        self.supervise = supervise
        self.check_interval_s = check_interval_s
        self.restarts = 0  # times the watchdog restarted a dead server
        # start/stop/restart one at a time (the watchdog restarts from its own thread)
        self._life = threading.RLock()
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Make sure our server runs and return its DSN (a Unix socket, no TCP port); with
        `supervise`, keep it running until `stop()`."""
        with self._life:
            started = time.perf_counter()
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
            try:
                self._prepare_user_and_permissions()
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initdb()
                dsn = self._ensure_running()
            except BaseException:
                self._release_lock()
                raise
            self.start_seconds = time.perf_counter() - started
            if self.supervise:
                self._start_watchdog()
            return dsn

    def _ensure_running(self) -> str:
        """Adopt our data dir's live server if it answers, else start one; set pid and DSN."""
        info = self._running_server()
        if info is not None and self._answers(info):
            self.adopted = True
            log.warning(
                "adopted an embedded Postgres left running by a previous run",
                extra={"pid": info.pid, "pgdata": str(self.pgdata)},
            )
        else:
            if info is not None:
                self._terminate(info.pid)
            self._remove_stale_files()
            info = self._pg_ctl_start()
        self.pid = info.pid
        host = quote(info.socket_dir, safe="/")
        self.dsn = f"postgresql://{PG_USER}@/postgres?host={host}&port={info.port}"
        return self.dsn

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and release ownership."""
        self._stop_watchdog()  # first: a server we stop on purpose is not restarted
        with self._life:
            self._stop_server()

    def _stop_server(self) -> None:
        try:
            if (self.pgdata / "postmaster.pid").exists():
                try:
                    self._run(
                        self._bin("pg_ctl"),
                        [
                            "-D",
                            str(self.pgdata),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            str(int(STOP_TIMEOUT_S)),
                            "stop",
                        ],
                        timeout=STOP_TIMEOUT_S + 5,
                    )
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                    log.warning(
                        "pg_ctl stop failed; terminating the server", extra={"err": str(exc)}
                    )
                    info = PostmasterPid.read(self.pgdata)
                    if info is not None and self._is_our_postmaster(info.pid):
                        self._terminate(info.pid)
            log.info("embedded Postgres stopped", extra={"pgdata": str(self.pgdata)})
        finally:
            self.dsn = None
            self.pid = None
            self._release_lock()

    def check_not_owned(self) -> None:
        """Raise `EmbeddedPostgresError` if another live process owns this data dir: lets the
        command line say so in one line before the server starts."""
        if self.lock_path.parent.is_dir():
            self._acquire_lock()
            self._release_lock()

    # -- supervision --------------------------------------------------------------------------

    def alive(self) -> bool:
        pid = self.pid
        return pid is not None and self._is_our_postmaster(pid)

    def restart(self) -> str:
        """Start our server again after it died, keeping ownership and the DSN."""
        with self._life:
            if self._lock_file is None:
                raise EmbeddedPostgresError("the embedded Postgres is not ours (stopped)")
            self._kill_leftovers()
            dsn = self._ensure_running()
            self.restarts += 1
            return dsn

    def _start_watchdog(self) -> None:
        self._watch_stop.clear()
        self._watchdog = threading.Thread(
            target=self._watch, name="embedded-postgres-watchdog", daemon=True
        )
        self._watchdog.start()

    def _stop_watchdog(self) -> None:
        self._watch_stop.set()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(START_TIMEOUT_S + LEFTOVER_EXIT_TIMEOUT_S + 10)

    def _watch(self) -> None:
        while not self._watch_stop.wait(self.check_interval_s):
            with self._life:
                if self._watch_stop.is_set() or self.pid is None or self.alive():
                    continue
                dead = self.pid
            log.error(
                "embedded Postgres died; restarting it",
                extra={"pid": dead, "pgdata": str(self.pgdata)},
            )
            self._restart_until_up(dead)

    def _restart_until_up(self, dead: int) -> None:
        attempt = 0
        while not self._watch_stop.is_set():
            attempt += 1
            started = time.perf_counter()
            try:
                self.restart()
            except Exception as exc:
                wait = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_FIRST_S * 2 ** (attempt - 1))
                log.error(
                    "embedded Postgres restart failed; retrying",
                    extra={"attempt": attempt, "retry_in_s": wait, "err": str(exc)},
                )
                if self._watch_stop.wait(wait):
                    return
                continue
            log.warning(
                "embedded Postgres restarted",
                extra={
                    "dead_pid": dead,
                    "pid": self.pid,
                    "attempt": attempt,
                    "restart_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return

    def _kill_leftovers(self) -> None:
        """The processes of a dead postmaster (backends, checkpointer, ...) that have not exited
        yet: they still hold its shared memory, and a new server refuses to start while they
        do. The postmaster is gone, so there is nothing they can still do right."""
        import psutil

        leftovers = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "postgres" and self._is_our_postmaster(proc.pid):
                leftovers.append(proc)
        for proc in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        _, alive = psutil.wait_procs(leftovers, timeout=LEFTOVER_EXIT_TIMEOUT_S)
        if alive:
            raise EmbeddedPostgresError(
                f"processes of the dead embedded Postgres did not exit: {[p.pid for p in alive]}"
            )
        if leftovers:
            log.warning(
                "killed what was left of the dead embedded Postgres",
                extra={"processes": len(leftovers)},
            )

    # -- steps --------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        handle = open(self.lock_path, "a+")  # noqa: SIM115 - held open for the process lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise EmbeddedPostgresError(
                f"another orchestrator (pid {owner}) already owns the embedded Postgres in "
                f"{self.pgdata}; stop it, use another DATA_DIR, or set DATABASE_URL"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _prepare_user_and_permissions(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() != 0:
            return
        # Postgres refuses to run as root: run it as an unprivileged account, as pgserver does,
        # and let that account reach the data dir and the binaries.
        import pwd

        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(  # noqa: S603
                ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],  # noqa: S607
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(SYSTEM_USER)
        for path in (self.pgdata, pgserver_root()):
            _make_traversable(path.parent)
        for path in (self.pgdata, *self.pgdata.iterdir()):
            if path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._system_user = SYSTEM_USER

    def _initdb(self) -> None:
        log.info("initialising the embedded Postgres", extra={"pgdata": str(self.pgdata)})
        args = ["-D", str(self.pgdata), "--auth=trust", "--auth-local=trust", "--encoding=utf8"]
        args += ["-U", PG_USER, "--no-sync"]
        self._run(self._bin("initdb"), args, timeout=120)

    def _socket_dir(self) -> Path:
        """The data dir itself when its socket path fits in sun_path (108 bytes), else /tmp."""
        if len(str(self.pgdata / ".s.PGSQL.5432")) < 100:
            return self.pgdata
        import hashlib

        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        path = Path("/tmp") / f"vao-pg-{digest}"  # noqa: S108 - short socket path, 0700 below
        path.mkdir(mode=0o700, exist_ok=True)
        if self._system_user is not None:
            import pwd

            entry = pwd.getpwnam(self._system_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def _rotate_log(self) -> None:
        """Keep one previous server log; pg_ctl appends to the current one."""
        try:
            if self.log_path.stat().st_size > MAX_LOG_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
        except FileNotFoundError:
            pass

    def _pg_ctl_start(self) -> PostmasterPid:
        self._rotate_log()
        socket_dir = self._socket_dir()
        args = ["-D", str(self.pgdata), "-w", "-t", str(int(START_TIMEOUT_S)), "-l"]
        # synchronous_commit on the command line: it wins over any postgresql.conf (module doc).
        options = f"-h '' -k '{socket_dir}' -c synchronous_commit=on"
        args += [str(self.log_path), "-o", options, "start"]
        try:
            # A session of its own: a terminal's Ctrl-C must reach us, not Postgres directly;
            # we stop it in order once our pool is closed.
            self._run(self._bin("pg_ctl"), args, timeout=START_TIMEOUT_S + 5, new_session=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(
                f"embedded Postgres did not start ({exc}); see {self.log_path}"
            ) from None
        info = PostmasterPid.read(self.pgdata)
        if info is None or not self._is_our_postmaster(info.pid):
            raise EmbeddedPostgresError(f"embedded Postgres exited at start; see {self.log_path}")
        return info

    # -- stale state --------------------------------------------------------------------------

    def _running_server(self) -> PostmasterPid | None:
        """Our data dir's live postmaster, if any; a `postmaster.pid` naming another is stale."""
        info = PostmasterPid.read(self.pgdata)
        if info is None:
            return None
        if info.pid > 0 and self._is_our_postmaster(info.pid):
            return info
        self.recovered_stale_pid = True
        log.warning(
            "removing a stale postmaster.pid left by a crash",
            extra={"stale_pid": info.pid, "pgdata": str(self.pgdata)},
        )
        return None

    def _is_our_postmaster(self, pid: int) -> bool:
        import psutil

        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
                return False
            return Path(proc.cwd()).resolve() == self.pgdata or str(self.pgdata) in proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
            return False

    def _answers(self, info: PostmasterPid) -> bool:
        if info.status != "ready":
            return False
        try:
            self._run(
                self._bin("pg_isready"),
                ["-h", info.socket_dir, "-p", str(info.port), "-U", PG_USER, "-t", "3"],
                timeout=5,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False
        return True

    def _terminate(self, pid: int) -> None:
        """Fast shutdown (SIGINT) of an orphan that does not answer; SIGKILL if it lingers."""
        import psutil

        log.warning("terminating an embedded Postgres that does not answer", extra={"pid": pid})
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGINT)
            proc.wait(STOP_TIMEOUT_S)
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _remove_stale_files(self) -> None:
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        # The socket lock file also names the dead pid; Postgres refuses to start if that pid
        # was reused by another process.
        socket_dir = self._socket_dir()
        for stale in socket_dir.glob(".s.PGSQL.*"):
            stale.unlink(missing_ok=True)

    # -- commands -----------------------------------------------------------------------------

    @staticmethod
    def _bin(name: str) -> Path:
        return pgserver_root() / "pginstall" / "bin" / name

    def _run(
        self, exe: Path, args: list[str], *, timeout: float, new_session: bool = False
    ) -> None:
        """Run a server binary with its output in the log file (pipes can hang with pg_ctl)."""
        with open(self.pgdata.parent / "postgres-commands.log", "a") as out:
            subprocess.run(  # noqa: S603 - our own binary, no shell
                [str(exe), *args],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                # user= alone keeps our gid 0 and groups, and group "root" bits would then deny
                # access to root-owned 0701 folders (pytest's tmp dirs): drop them too.
                user=self._system_user,
                group=self._system_user,
                extra_groups=[] if self._system_user else None,
                start_new_session=new_session,
            )
