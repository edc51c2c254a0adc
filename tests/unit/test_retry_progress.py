"""While an operation retries, the step's live progress names it, with its last fault, its
attempts and its budget left; it leaves the progress when it succeeds, gives up or is
cancelled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from app.config import StepPolicy
from app.errors import AvailabilityError, DataError
from app.pipeline.chunk import StepProgress
from app.pipeline.retry import retrying
from tests.settings import make_settings

WHAT = "step s: a chunk"


def policy(budget: float = 60) -> StepPolicy:
    return make_settings(
        RETRY_BUDGET_SECONDS=budget, RETRY_BASE_SECONDS=0.001, RETRY_MAX_WAIT_SECONDS=0.001
    ).step


async def test_a_retrying_call_is_in_the_progress_until_it_succeeds() -> None:
    progress = StepProgress()
    seen: list[tuple[str, str, int, float]] = []
    before = datetime.now(UTC)

    async def flaky() -> str:
        if progress.retries:
            (retry,) = progress.retries
            seen.append((retry.what, retry.error, retry.attempts, retry.budget_left()))
            assert before <= retry.since <= datetime.now(UTC)
        if len(seen) < 2:
            raise AvailabilityError("store service GET /stores: HTTP 503")
        return "done"

    assert await retrying(flaky, policy(), WHAT, progress)() == "done"
    assert [s[:3] for s in seen] == [
        (WHAT, "store service GET /stores: HTTP 503", 1),
        (WHAT, "store service GET /stores: HTTP 503", 2),
    ]
    assert all(0 < s[3] <= 60 for s in seen)
    assert progress.retries == []


async def test_a_call_that_gives_up_or_is_cancelled_leaves_the_progress() -> None:
    progress = StepProgress()

    async def down() -> None:
        raise AvailabilityError("broker: connection refused")

    with pytest.raises(AvailabilityError):
        await retrying(down, policy(budget=0.05), WHAT, progress)()
    assert progress.retries == []

    async def bad() -> None:
        raise DataError("malformed")

    with pytest.raises(DataError):  # never retried: never in the progress
        await retrying(bad, policy(), WHAT, progress)()
    assert progress.retries == []

    again = asyncio.Event()

    async def slow_outage() -> None:
        if again.is_set():
            await asyncio.sleep(60)
        again.set()
        raise AvailabilityError("store service: HTTP 503")

    task = asyncio.create_task(retrying(slow_outage, policy(), WHAT, progress)())
    await again.wait()  # the first attempt failed: noted before the retry's wait
    (retry,) = progress.retries
    assert (retry.what, retry.error, retry.attempts) == (WHAT, "store service: HTTP 503", 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert progress.retries == []


async def test_concurrent_calls_each_have_their_own_entry() -> None:
    progress = StepProgress()
    release, both_again = asyncio.Event(), asyncio.Event()
    attempts: dict[str, int] = {}

    async def call(name: str) -> str:
        attempts[name] = attempts.get(name, 0) + 1
        if attempts[name] == 1:
            raise AvailabilityError(f"{name}: HTTP 503")
        if sum(attempts.values()) == 4:
            both_again.set()
        await release.wait()
        return name

    tasks = [asyncio.create_task(retrying(call, policy(), f"chunk {n}", progress)(n)) for n in "ab"]
    await both_again.wait()
    assert sorted((r.what, r.error, r.attempts) for r in progress.retries) == [
        ("chunk a", "a: HTTP 503", 1),
        ("chunk b", "b: HTTP 503", 1),
    ]
    release.set()
    assert await asyncio.gather(*tasks) == ["a", "b"]
    assert progress.retries == []
