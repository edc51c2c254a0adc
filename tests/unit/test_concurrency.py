"""Shared async work: gather with the first error, lookups and values once per run, slices,
and a task group's task failing on a cancellation it was not asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping

import pytest

from app.concurrency import (
    SharedLookup,
    SharedValue,
    StrayCancellation,
    gather_first_error,
    in_slices,
    stray_cancellation_fails,
)
from app.errors import AvailabilityError
from tests.waits import waiting


class FakeLookup:
    def __init__(self, dongs: dict[int, str], failures: int = 0) -> None:
        self.dongs = dongs
        self.failures = failures
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, store_ids: list[int]) -> dict[int, str]:
        self.calls.append(sorted(store_ids))
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise AvailabilityError("store service down")
        return {s: self.dongs[s] for s in store_ids if s in self.dongs}


async def dongs(
    pending: Awaitable[Mapping[int, str | None]], store_ids: set[int]
) -> dict[int, str | None]:
    """What `SharedLookup.get` answered about `store_ids`: each of them must be known."""
    known = await pending
    return {store: known[store] for store in sorted(store_ids)}


async def test_shared_lookup_asks_each_store_once_even_concurrently() -> None:
    lookup = FakeLookup({1: "a", 2: "b", 3: "c"})
    lookup.gate.clear()
    cache = SharedLookup(lookup)
    first = asyncio.create_task(cache.get({1, 2}))
    second = asyncio.create_task(cache.get({2, 3, 4}))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lookup.gate.set()
    assert await dongs(first, {1, 2}) == {1: "a", 2: "b"}
    assert await dongs(second, {2, 3, 4}) == {2: "b", 3: "c", 4: None}
    assert await dongs(cache.get({1, 2, 3, 4}), {1, 2, 3, 4}) == {1: "a", 2: "b", 3: "c", 4: None}
    assert lookup.calls == [[1, 2], [3, 4]]  # 4 is unknown: asked once, remembered


async def test_shared_lookup_failure_does_not_poison_the_cache() -> None:
    lookup = FakeLookup({1: "a", 2: "b"}, failures=1)
    lookup.gate.clear()
    cache = SharedLookup(lookup)
    first = asyncio.create_task(cache.get({1}))
    second = asyncio.create_task(cache.get({1, 2}))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    lookup.gate.set()
    with pytest.raises(AvailabilityError):
        await first
    with pytest.raises(AvailabilityError):  # it shared the failed lookup of store 1
        await second
    assert await dongs(cache.get({1, 2}), {1, 2}) == {1: "a", 2: "b"}
    assert await dongs(cache.get({1, 2}), {1, 2}) == {1: "a", 2: "b"}
    assert lookup.calls == [[1], [2], [1]]


async def test_shared_lookup_cancelled_waiter_does_not_cancel_a_shared_lookup() -> None:
    lookup = FakeLookup({1: "a"})
    lookup.gate.clear()
    cache = SharedLookup(lookup)
    owner = asyncio.create_task(cache.get({1}))
    other = asyncio.create_task(cache.get({1}))
    await asyncio.sleep(0)
    owner.cancel()
    await asyncio.sleep(0)
    lookup.gate.set()
    assert await dongs(other, {1}) == {1: "a"}
    assert lookup.calls == [[1]]


async def test_shared_value_is_computed_once_and_forgotten_on_failure() -> None:
    calls: list[int] = []

    async def events() -> dict[int, int]:
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise AvailabilityError("database gone")
        return {7: 3}

    value = SharedValue(events)
    first = await asyncio.gather(value.get(), value.get(), return_exceptions=True)
    assert [type(r) for r in first] == [AvailabilityError, AvailabilityError]
    assert await asyncio.gather(value.get(), value.get()) == [{7: 3}, {7: 3}]
    assert await value.get() == {7: 3}
    assert len(calls) == 2


async def test_gather_first_error_cancels_the_rest_and_raises_the_error_itself() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise AvailabilityError("503")

    async def ok() -> int:
        return 1

    assert await gather_first_error(ok(), ok()) == [1, 1]
    with pytest.raises(AvailabilityError, match="503"):
        await gather_first_error(slow(), failing())
    assert cancelled.is_set()


async def test_in_slices_lets_other_tasks_run_between_slices_only() -> None:
    events: list[str] = []

    async def other() -> None:
        for turn in range(3):
            events.append(f"other {turn}")
            await asyncio.sleep(0)

    async def sliced() -> None:
        async for some in in_slices(list(range(7)), 3):
            events.append(f"slice {list(some)}")

    await asyncio.gather(sliced(), other())

    assert events == [
        "slice [0, 1, 2]",
        "other 0",
        "slice [3, 4, 5]",
        "other 1",
        "slice [6]",
        "other 2",
    ]


async def test_a_cancellation_from_a_shared_future_fails_the_task_group() -> None:
    """A worker awaits a future another task shares and cancels (as a token lookup's
    `gather_first_error` cancelled PeerClient's shared import); its sibling waits for
    the worker's result. Before: the worker ended cancelled, the group ignored it, and
    the sibling waited forever."""
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    result: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def worker() -> None:
        await shared
        result.set_result("done")

    async def sink() -> str:
        return await result

    async def cancel_shared() -> None:
        await asyncio.sleep(0)
        shared.cancel()

    with pytest.raises(ExceptionGroup) as raised:
        async with (
            waiting(5, "the task group's end (never, before)"),
            asyncio.TaskGroup() as tasks,
        ):
            tasks.create_task(stray_cancellation_fails(worker()))
            tasks.create_task(stray_cancellation_fails(sink()))
            tasks.create_task(cancel_shared())
    (error,) = raised.value.exceptions
    assert type(error) is StrayCancellation
    assert str(error) == "cancelled by another task, through a future they shared"
    assert isinstance(error.__cause__, asyncio.CancelledError)
    result.cancel()


async def test_a_task_s_own_cancellation_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(stray_cancellation_fails(waits()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
