"""Embedded Chroma in a child process, so its writes never stop the orchestrator's event loop.

`chromadb`'s Rust bindings release the GIL for `get` and `query` but hold it through `add`,
`upsert` and `delete` (7-23 ms for one memory on the bench machines, more when the index
reorganises). In process, every ended call's summary memory froze every other call on the
instance for that long: at 200 paced calls the slowest turns (100-165 ms, the 200-call p99
target is 50 ms) all met a "call summary stored" (BENCHMARKS.md, sixth session). So embedded
Chroma (no `CHROMA_HOST`) runs, by default (`CHROMA_EMBEDDED_PROCESS=true`), in a child process
that owns the `PersistentClient`; the orchestrator holds `RemoteCollection`s that send each call
over a pipe and wait for the answer in the worker thread that made it, as before.

- Embedding stays in the orchestrator: documents and query texts are embedded with the
  orchestrator's own embedding function before they are sent (the child is given vectors), so
  embedding behaves as in process (same client, same fakes in tests). The child builds the same
  function from its config only so the collection records it, as Chroma does in process.
- The child answers several calls at once (a thread pool: reads do not queue behind a write).
- It is started from a `forkserver` that has imported `chromadb` once, so (re)starting a child
  costs a fork, not an interpreter and Chroma's import.
- If the child dies, the calls in flight fail (`ChromaProcessError`, a clear error the memory
  code already handles as a store failure) and the next call starts a new child on the same
  files, re-opening the collections.
- The child ends when the orchestrator closes it, and on its own when the pipe closes (the
  orchestrator gone, even killed).
- As with every `multiprocessing` start method but `fork`, the program's main module is imported
  again in the fork server, so it must be import-safe (`if __name__ == "__main__":`): uvicorn's,
  `python -m orchestrator`'s and pytest's are. (`fork` itself is no option: the orchestrator
  has threads and an event loop by then.)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chromadb.api.types import Documents, EmbeddingFunction

log = logging.getLogger(__name__)

# Imported once by the fork server, so each child starts as a fork of a process that has them.
PRELOAD = ["chromadb", "orchestrator.memory.chroma", "orchestrator.memory.embeddings"]
START_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
CHILD_THREADS = 4
# The child's CPU yields to the services' own: its work (a memory written at call end, a call
# start's prefetch) is never what a caller is waiting on, while the turns in flight on the same
# cores are. Without this, the writes of a few calls ending together (Chroma's index upkeep)
# took the cores from every turn in flight (the sixth session's 200-call runs).
CHILD_NICE = 10

COLLECTION_METHODS = frozenset({"add", "upsert", "get", "query", "delete", "count", "modify"})
CLIENT_METHODS = frozenset({"heartbeat"})
OPEN = "open"


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_fork_server() -> None:
    """Start the fork server now (it imports Chroma in its own process while this one goes on
    with its start-up); the first child is then a fork away. Sync, quick."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


class ChromaProcessError(RuntimeError):
    """The embedded Chroma process could not start, or exited with calls in flight."""


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (Chroma's own errors do), else the same message."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own object, not received data
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _embedding_from(spec: tuple[str, str, dict[str, Any]]) -> Any:
    module, name, config = spec
    cls = getattr(importlib.import_module(module), name)
    return cls.build_from_config(config)


def _serve(conn: Connection, path: str, env: dict[str, str]) -> None:  # pragma: no cover - child
    """The child: own the `PersistentClient`, answer calls until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICE)
    os.environ.update(env)  # what the embedding function's config names (e.g. its API key)
    from orchestrator.memory.chroma import persistent_client

    try:
        client = persistent_client(Path(path))
    except BaseException as exc:
        conn.send((0, False, _portable(exc)))
        return
    conn.send((0, True, None))
    collections: dict[str, Any] = {}
    send_lock = threading.Lock()

    def reply(req_id: int, ok: bool, value: Any) -> None:
        try:
            with send_lock:
                conn.send((req_id, ok, value))
        except (EOFError, OSError):
            pass  # the parent is gone
        except Exception as exc:  # an answer that does not pickle
            with send_lock:
                conn.send((req_id, False, RuntimeError(f"unsendable answer: {exc}")))

    def run(req_id: int, target: str, method: str, kwargs: dict[str, Any]) -> None:
        try:
            if method == OPEN:
                ef = _embedding_from(kwargs.pop("embedding_function"))
                collection = client.get_or_create_collection(embedding_function=ef, **kwargs)
                collections[collection.name] = collection
                value: Any = collection.name
            elif not target and method in CLIENT_METHODS:
                value = getattr(client, method)(**kwargs)
            elif method in COLLECTION_METHODS:
                value = getattr(collections[target], method)(**kwargs)
            else:
                raise ValueError(f"not a Chroma call this process serves: {method}")
        except BaseException as exc:
            reply(req_id, False, _portable(exc))
            return
        reply(req_id, True, value)

    pool = concurrent.futures.ThreadPoolExecutor(CHILD_THREADS, thread_name_prefix="chroma")
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            pool.submit(run, *message)
    finally:
        pool.shutdown(wait=True)  # the writes already received are finished before we exit
        conn.close()


class ChromaProcess:
    """The parent's side: start the child, send calls from any thread, close it."""

    def __init__(self, path: str, env: dict[str, str] | None = None) -> None:
        self.path = path
        self._env = dict(env or {})
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._send_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._opened: dict[str, dict[str, Any]] = {}  # re-opened in a restarted child
        self._conn: Connection | None = None
        self._proc: Any = None
        self._closed = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    def alive(self) -> bool:
        return self._conn is not None and self._proc is not None and self._proc.is_alive()

    def start(self) -> None:
        """Start the child and wait until its client is open (sync: call off the event loop)."""
        ctx = _context()
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=_serve, args=(child, self.path, self._env), name="chroma-embedded", daemon=True
        )
        proc.start()
        child.close()
        try:
            if not parent.poll(START_TIMEOUT_S):
                raise ChromaProcessError(f"embedded Chroma did not start in {START_TIMEOUT_S} s")
            _, ok, value = parent.recv()
        except (EOFError, OSError):
            parent.close()
            proc.join(1.0)
            raise ChromaProcessError(
                f"embedded Chroma process exited at start (code {proc.exitcode})"
            ) from None
        except BaseException:
            parent.close()
            proc.kill()
            raise
        if not ok:
            parent.close()
            proc.join(5.0)
            raise value
        self._conn, self._proc = parent, proc
        self.starts += 1
        threading.Thread(
            target=self._read, args=(parent,), name="chroma-process-reader", daemon=True
        ).start()
        for name, kwargs in self._opened.items():  # a restarted child: the same collections
            if self._send("", OPEN, dict(kwargs)).result() != name:
                raise ChromaProcessError(f"collection {name} did not reopen")

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                req_id, ok, value = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # an answer that does not unpickle here: fail just that call
                log.exception("unreadable answer from the embedded Chroma process")
                continue
            future = self._pending.pop(req_id, None)
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        with self._send_lock:
            if self._conn is conn:
                self._conn = None
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(ChromaProcessError("the embedded Chroma process exited"))
        if not self._closed:
            log.error("embedded Chroma process exited; the next call starts it again")

    def _send(
        self, target: str, method: str, kwargs: dict[str, Any]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._send_lock:
            conn = self._conn
            if conn is None:
                raise ChromaProcessError("the embedded Chroma process is not running")
            req_id = next(self._ids)
            self._pending[req_id] = future
            try:
                conn.send((req_id, target, method, kwargs))
            except (EOFError, OSError) as exc:  # it died; the reader has not seen it yet
                self._pending.pop(req_id, None)
                raise ChromaProcessError("the embedded Chroma process exited") from exc
            except BaseException:
                self._pending.pop(req_id, None)
                raise
        return future

    def call(self, target: str, method: str, **kwargs: Any) -> Any:
        """Run `method` on the collection `target` ("" for the client) in the child and return
        its answer or raise its error (sync, thread-safe: called from worker threads)."""
        if self._closed:
            raise ChromaProcessError("the embedded Chroma process is closed")
        if self._conn is None:
            with self._start_lock:
                if self._conn is None and not self._closed:
                    self._reap()
                    self.start()
        return self._send(target, method, kwargs).result()

    def open_collection(self, **kwargs: Any) -> str:
        name = str(self.call("", OPEN, **kwargs))
        self._opened[name] = kwargs
        return name

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.join(1.0)
            self._proc = None

    def close(self) -> None:
        """Let the child finish what it was sent, then stop it (sync)."""
        self._closed = True
        with self._send_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(EOFError, OSError):
                conn.send(None)
        proc = self._proc
        if proc is not None:
            proc.join(CLOSE_TIMEOUT_S)
            if proc.is_alive():
                log.error("embedded Chroma process did not stop; killed")
                proc.kill()
                proc.join(1.0)
        if conn is not None:
            conn.close()


class RemoteCollection:
    """The part of `chromadb`'s `Collection` the orchestrator uses, served by the child.
    Documents and query texts are embedded here, with `embedding`, before they are sent; it is
    `_embedding_function`, as on Chroma's own `Collection` (`query_embedder_for` finds it)."""

    def __init__(
        self, process: ChromaProcess, name: str, embedding: EmbeddingFunction[Documents]
    ) -> None:
        self._process = process
        self.name = name
        self._embedding_function = embedding

    def _embedded(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("embeddings") is None and kwargs.get("documents") is not None:
            kwargs["embeddings"] = self._embedding_function(list(kwargs["documents"]))
        return kwargs

    def add(self, **kwargs: Any) -> None:
        self._process.call(self.name, "add", **self._embedded(kwargs))

    def upsert(self, **kwargs: Any) -> None:
        self._process.call(self.name, "upsert", **self._embedded(kwargs))

    def get(self, **kwargs: Any) -> Any:
        return self._process.call(self.name, "get", **kwargs)

    def query(self, **kwargs: Any) -> Any:
        texts = kwargs.pop("query_texts", None)
        if texts is not None and kwargs.get("query_embeddings") is None:
            kwargs["query_embeddings"] = self._embedding_function(list(texts))
        return self._process.call(self.name, "query", **kwargs)

    def delete(self, **kwargs: Any) -> None:
        self._process.call(self.name, "delete", **kwargs)

    def count(self) -> int:
        return int(self._process.call(self.name, "count"))

    def modify(self, **kwargs: Any) -> None:
        self._process.call(self.name, "modify", **kwargs)


class RemoteClient:
    """The part of `chromadb`'s client the orchestrator uses, served by the child."""

    def __init__(self, process: ChromaProcess) -> None:
        self.process = process

    def heartbeat(self) -> int:
        return int(self.process.call("", "heartbeat"))

    def get_or_create_collection(
        self, *, name: str, embedding_function: EmbeddingFunction[Documents], **kwargs: Any
    ) -> RemoteCollection:
        spec = (
            type(embedding_function).__module__,
            type(embedding_function).__qualname__,
            embedding_function.get_config(),
        )
        opened = self.process.open_collection(name=name, embedding_function=spec, **kwargs)
        return RemoteCollection(self.process, opened, embedding_function)

    def close(self) -> None:
        self.process.close()
