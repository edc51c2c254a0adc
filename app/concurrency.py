"""Async work shared by concurrent callers: gathering with the first error, lookups made
once per run however many chunks need them at the same moment, CPU-bound work cut into
slices that let the other tasks run, and a task that fails, rather than ends cancelled,
on a cancellation it was not asked for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

from app.errors import BatchError

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


async def gather_first_error(*calls: Awaitable[Any]) -> list[Any]:
    """All `calls` at once; on a failure the others are cancelled and that failure is
    raised as itself, not as a group: the retry rule (`errors.is_availability_fault`)
    looks at it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class StrayCancellation(BatchError):
    """A CancelledError in a task that nobody cancelled: a future it awaited, shared with
    another task, was cancelled by that one."""


async def stray_cancellation_fails(work: Awaitable[T]) -> T:
    """`work`, a task group's task, raising StrayCancellation where a CancelledError
    reaches it that its task was not asked for. A task group ignores a task that ends
    cancelled, so a stray one would end silently, and whoever waits for its work (the
    sink for a worker's chunks) would wait forever."""
    try:
        return await work
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # its own: the group is ending
        raise StrayCancellation("cancelled by another task, through a future they shared") from exc


async def in_slices(items: Sequence[T], size: int) -> AsyncIterator[Sequence[T]]:
    """`items` in slices of `size`, the event loop running between two slices.

    A chunk's CPU-bound work holds the loop for milliseconds. Meanwhile every reply
    the sink is waiting for (a chunk's transaction is several round trips) waits too,
    the sink falls behind, the bounded queues fill and the whole pipeline idles on it.
    """
    for start in range(0, len(items), size):
        if start:
            await asyncio.sleep(0)
        yield items[start : start + size]


class SharedLookup(Generic[K, V]):
    """Values by key, fetched once per run: a fetch in flight is shared by every caller
    that needs one of its keys; a failed fetch is forgotten, so a retry asks again.

    A caller that is cancelled does not cancel a fetch others wait for.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]]) -> None:
        self._fetch = fetch
        self._known: dict[K, V | None] = {}  # None: the source has no value for the key
        self._pending: dict[K, asyncio.Future[None]] = {}

    @property
    def known(self) -> Mapping[K, V | None]:
        """The values fetched so far (None where the source has none): the cache itself,
        to be read, not kept; hot loops read it once per item."""
        return self._known

    async def get(self, keys: Collection[K]) -> Mapping[K, V | None]:
        """`known`, once it holds every one of `keys`: the unknown ones are fetched in
        one call."""
        known, pending = self._known, self._pending
        missing = set(keys) - known.keys()
        if missing:
            waits = {pending[key] for key in missing if key in pending}
            new = [key for key in missing if key not in pending]
            if new:
                task = asyncio.ensure_future(self._load(new))
                task.add_done_callback(_retrieve)  # nobody may be left to await it
                for key in new:
                    pending[key] = task
                waits.add(task)
            await asyncio.wait(waits)  # not gather: a cancelled caller cancels no fetch
            for future in waits:
                error = future.exception()
                if error is not None:
                    raise error
        return known

    async def _load(self, keys: list[K]) -> None:
        try:
            found = await self._fetch(keys)
            for key in keys:
                self._known[key] = found.get(key)
        finally:
            for key in keys:
                del self._pending[key]


class SharedValue(Generic[V]):
    """One value computed at the first need and shared likewise; forgotten on failure."""

    def __init__(self, fetch: Callable[[], Awaitable[V]]) -> None:
        self._fetch = fetch
        self._task: asyncio.Task[V] | None = None

    async def get(self) -> V:
        if self._task is None:
            self._task = asyncio.ensure_future(self._fetch())
            self._task.add_done_callback(self._forget_failure)
        return await asyncio.shield(self._task)

    def _forget_failure(self, task: asyncio.Task[V]) -> None:
        if (task.cancelled() or task.exception() is not None) and self._task is task:
            self._task = None


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
