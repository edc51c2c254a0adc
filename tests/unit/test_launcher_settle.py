"""How the launcher awaits the update that records an outcome: within a deadline, never
left running unawaited, and not cut short by the shutdown's cancellation of the run."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.pipeline.retry import settle


async def test_an_update_past_the_deadline_is_cancelled_and_awaited() -> None:
    ended: list[str] = []

    async def update() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            ended.append("update")

    with pytest.raises(TimeoutError):
        await settle(update(), time.monotonic() + 0.05)
    assert ended == ["update"]  # over before settle returned: nothing left running
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_cancelled_caller_lets_the_update_finish_then_is_cancelled() -> None:
    done: list[str] = []
    started = asyncio.Event()

    async def update() -> None:
        started.set()
        await asyncio.sleep(0.1)
        done.append("recorded")

    caller = asyncio.create_task(settle(update(), time.monotonic() + 10))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["recorded"]


async def test_the_update_s_own_error_is_raised_as_itself() -> None:
    async def update() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        await settle(update(), time.monotonic() + 1)
