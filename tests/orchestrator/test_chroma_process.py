"""Embedded Chroma in its child process (the default): the calls run there, on the same files;
a child that dies is replaced on the next call with nothing stored lost; errors come back as
errors; closing stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import OrchestratorSettings
from orchestrator.memory.caller_memory import CallerMemory
from orchestrator.memory.chroma import ChromaHandle, open_chroma, open_client
from orchestrator.memory.chroma_process import ChromaProcess, ChromaProcessError, RemoteClient
from orchestrator.memory.embeddings import query_embedder_for


def settings_for(data_dir: Path, **overrides: Any) -> OrchestratorSettings:
    return OrchestratorSettings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]


@pytest.fixture
async def handle(data_dir: Path) -> AsyncIterator[ChromaHandle]:
    h = await open_chroma(settings_for(data_dir))
    yield h
    await h.close()


def child_of(h: ChromaHandle) -> Any:
    assert isinstance(h.client, RemoteClient)
    return h.client.process


async def test_embedded_chroma_runs_in_a_child_process_on_the_data_dir(
    handle: ChromaHandle, data_dir: Path
) -> None:
    process = child_of(handle)
    assert process.pid is not None and process.pid != os.getpid() and process.alive()
    memory = CallerMemory(handle.memories)
    # the collection exposes its embedding function as Chroma's does: recall ranks a caller's
    # few memories exactly in process (a get), not with a filtered vector query in the child
    assert query_embedder_for(handle.memories) is not None
    assert query_embedder_for(handle.knowledge) is not None
    stored = await memory.remember("+15550001111", "Prefers morning calls", agent_id="a1")
    assert stored is not None
    recalled = await memory.recall("+15550001111", "when to call", agent_id="a1")
    assert [r.text for r, _ in recalled] == ["Prefers morning calls"]
    await handle.close()
    assert not process.alive()
    # the child wrote the same files an in-process client reads
    reopened = open_client(settings_for(data_dir)).get_collection(handle.memories.name)
    assert reopened.count() == 1


async def test_a_child_that_dies_is_replaced_on_the_next_call_and_nothing_is_lost(
    handle: ChromaHandle,
) -> None:
    memory = CallerMemory(handle.memories)
    await memory.remember("+15550002222", "Has a dog named Rex", agent_id="a1")
    process = child_of(handle)
    first = process.pid
    os.kill(first, signal.SIGKILL)
    for _ in range(200):  # the reader sees the pipe close
        if process._conn is None:
            break
        await asyncio.sleep(0.01)
    # the next call starts a new child on the same files, with the collections reopened
    assert await asyncio.to_thread(handle.memories.count) == 1
    assert process.pid != first and process.alive() and process.starts == 2
    await memory.remember("+15550002222", "Moved to Lyon", agent_id="a1")
    texts = {r.text for r in await memory.recent("+15550002222", agent_id="a1")}
    assert texts == {"Has a dog named Rex", "Moved to Lyon"}


async def test_a_call_in_flight_when_the_child_dies_fails_with_a_clear_error(
    handle: ChromaHandle,
) -> None:
    process = child_of(handle)
    os.kill(process.pid, signal.SIGSTOP)  # the child cannot answer until killed
    try:
        call = asyncio.create_task(asyncio.to_thread(handle.memories.count))
        while not process._pending:  # sent, waiting for the answer
            await asyncio.sleep(0.005)
    finally:
        os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(ChromaProcessError, match="exited"):
        await call


async def test_chroma_errors_come_back_as_errors_not_hangs(handle: ChromaHandle) -> None:
    with pytest.raises(ValueError, match=r"where operator.*\$bogus"):  # Chroma's own error
        await asyncio.to_thread(handle.memories.get, where={"caller": {"$bogus": 1}})
    assert child_of(handle).alive()  # one bad call does not end the child
    assert await asyncio.to_thread(handle.memories.count) == 0


async def test_a_closed_handle_refuses_calls(handle: ChromaHandle) -> None:
    await handle.close()
    with pytest.raises(ChromaProcessError, match="closed"):
        await asyncio.to_thread(handle.memories.count)


async def test_chroma_embedded_process_false_keeps_chroma_in_this_process(
    data_dir: Path,
) -> None:
    h = await open_chroma(settings_for(data_dir, chroma_embedded_process=False))
    try:
        assert not isinstance(h.client, RemoteClient)
        assert h.mode == "embedded"
    finally:
        await h.close()


OWNER = """
import asyncio, sys
from pathlib import Path
from orchestrator.config import OrchestratorSettings
from orchestrator.memory.chroma import open_chroma

async def main() -> None:
    h = await open_chroma(OrchestratorSettings(_env_file=None, data_dir=Path(sys.argv[1])))
    print(h.client.process.pid, flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_child_does_not_outlive_an_orchestrator_that_is_killed(data_dir: Path) -> None:
    script = data_dir / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen(
        [sys.executable, str(script), str(data_dir)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        os.kill(child, 0)  # running
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return  # the pipe closed: the child ended on its own
        time.sleep(0.05)
    raise AssertionError(f"embedded Chroma process {child} outlived its orchestrator")


async def test_a_child_that_cannot_open_its_store_fails_start_up_with_chromas_error(
    data_dir: Path,
) -> None:
    blocker = data_dir / "a-file"
    blocker.write_text("not a directory")
    process = ChromaProcess(str(blocker / "chroma"))  # cannot be made: open fails in the child
    with pytest.raises(Exception, match="directory"):
        await asyncio.to_thread(process.start)
    assert not process.alive()
