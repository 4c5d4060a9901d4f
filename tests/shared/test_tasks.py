"""`cancel_and_wait`: a background loop whose library swallowed the cancellation still stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.tasks import cancel_and_wait


async def test_a_loop_that_swallowed_the_first_cancel_is_stopped() -> None:
    """The shape of the CI hang: a retry loop around a call that turns a cancel into an error."""
    swallowed = 0

    async def call_that_loses_cancels() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if swallowed == 0:  # the first cancel comes out as a connection error
                swallowed += 1
                raise ConnectionError("lost") from None
            raise

    async def retry_loop() -> None:
        while True:
            try:
                await call_that_loses_cancels()
            except Exception:
                await asyncio.sleep(0.01)

    task = asyncio.create_task(retry_loop())
    await asyncio.sleep(0.01)
    assert await cancel_and_wait(task, retry_s=0.05, give_up_s=2.0)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_never_stops_is_left_with_an_error_not_waited_for_ever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="shared.tasks"):
        assert not await cancel_and_wait(task, retry_s=0.02, give_up_s=0.2)
    assert "did not stop" in caplog.text and not task.done()
    stop.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()


async def test_an_error_on_the_way_out_is_logged_and_a_finished_task_is_fine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(fails_when_cancelled(), name="cleanup")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="shared.tasks"):
        assert await cancel_and_wait(task)
    assert "ended with an error" in caplog.text
    assert await cancel_and_wait(None)
    assert await cancel_and_wait(task)  # already done
