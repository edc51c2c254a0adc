"""The retry budget's arithmetic (`app.pipeline.retry`) on a clock the test sets: the
backoff's doubling and cap, the edges of the deadline, the wait a dependency asks for,
and `settle`'s cancellation at its deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from app.config import StepPolicy
from app.errors import AvailabilityError
from app.outages import OUTAGES
from app.pipeline import retry
from app.pipeline.retry import Budget, retrying, settle


class Clock:
    """time.monotonic for the retry module: `now`, or the next of `ticks` while any."""

    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)
        self.now = 0.0

    def monotonic(self) -> float:
        if self.ticks:
            self.now = self.ticks.pop(0)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(retry, "time", clock)
    return clock


@pytest.fixture(autouse=True)
def longest_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter at its top: the wait is the backoff's bound."""
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)


def policy(budget: float = 100.0, base: float = 1.0, max_wait: float = 30.0) -> StepPolicy:
    return StepPolicy(
        chunk_size=1,
        workers=1,
        queue_size=1,
        fetch_rows=1,
        retry_budget_seconds=budget,
        retry_base_seconds=base,
        retry_max_wait_seconds=max_wait,
        skip_limit=0,
    )


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_the_backoff_doubles_from_its_base_up_to_its_most(clock: Clock) -> None:
    budget = Budget(policy(base=1.5, max_wait=10), "a chunk")
    waits = [budget._fault(ConnectionError("away")) for _ in range(5)]
    assert waits == [1.5, 3.0, 6.0, 10, 10]


def test_the_backoff_stops_doubling_after_32_faults(clock: Clock) -> None:
    budget = Budget(policy(budget=1e12, base=1.0, max_wait=1e11), "a chunk")
    waits = [budget._fault(ConnectionError("away")) for _ in range(35)]
    assert waits[31:] == [2.0**31, 2.0**32, 2.0**32, 2.0**32]


def test_a_wait_never_passes_the_deadline(clock: Clock) -> None:
    budget = Budget(policy(budget=5, base=4, max_wait=30), "a chunk")
    assert budget._fault(ConnectionError("away")) == 4
    clock.now = 2
    assert budget._fault(ConnectionError("away")) == 3  # 8, cut at the deadline


def test_a_fault_at_the_deadline_gives_up(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    fault = ConnectionError("away")
    budget = Budget(policy(budget=0), "step s: a chunk")

    with pytest.raises(ConnectionError) as raised:
        raise budget._fault(fault)

    assert raised.value is fault
    assert errors(caplog) == [
        "step s: a chunk still failing after 1 faults in 0.0 s (RETRY_BUDGET_SECONDS=0):"
        " ConnectionError('away')"
    ]


def test_a_fault_without_a_dependency_opens_no_outage(clock: Clock) -> None:
    Budget(policy(), "a chunk")._fault(ConnectionError("away"))
    assert OUTAGES._open == {}


def test_the_wait_asked_is_taken_when_longer_than_the_backoff(clock: Clock) -> None:
    fault = AvailabilityError("HTTP 429", dependency="store service")
    fault.retry_after = 7.0
    assert Budget(policy(base=1), "a chunk")._fault(fault) == 7.0


def test_a_wait_asked_up_to_the_deadline_exactly_gives_up(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fault = AvailabilityError("HTTP 429", dependency="store service")
    fault.retry_after = 10.0

    with pytest.raises(AvailabilityError):
        raise Budget(policy(budget=10), "a chunk")._fault(fault)

    assert errors(caplog) == [
        "a chunk still failing after 1 faults in 0.0 s (RETRY_BUDGET_SECONDS=10); it asks to"
        " wait 10 s, 10.0 s before the deadline: AvailabilityError('HTTP 429')"
    ]


async def test_no_try_begins_at_the_deadline(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    """The first fault at 0 s of a 1 s budget; the next try would begin at 1 s."""
    tries = 0

    async def away() -> None:
        nonlocal tries
        tries += 1
        raise ConnectionError("away")

    clock.ticks = [0.0, 1.0]
    with pytest.raises(ConnectionError):
        await Budget(policy(budget=1, base=0.001, max_wait=0.001), "a chunk").run(away)

    assert tries == 1
    assert errors(caplog) == [
        "a chunk still failing after 1 faults in 1.0 s (RETRY_BUDGET_SECONDS=1); the deadline"
        " came before the next try: ConnectionError('away')"
    ]


async def test_a_retried_call_gets_its_arguments() -> None:
    async def add(a: int, *, b: int) -> int:
        return a + b

    assert await retrying(add, policy(), "an addition")(1, b=2) == 3


async def test_settle_at_its_deadline_cancels_the_update_once_and_awaits_its_end(
    clock: Clock,
) -> None:
    """An update that records its outcome even when cancelled: settle cancels it once,
    then waits for it to end, however long that takes."""
    seen: list[str] = []

    async def update() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            await asyncio.sleep(0.02)  # recording what it was doing
            seen.append("recorded")

    clock.ticks = [4.99, 5.0]  # a first wait of 10 ms, then the deadline
    await settle(update(), deadline=5.0)

    assert seen == ["cancelled", "recorded"]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> list[float]:
    """asyncio.sleep's delays, each advancing the clock instead of waiting."""
    slept: list[float] = []
    original = asyncio.sleep

    async def sleep(delay: float) -> None:
        slept.append(delay)
        clock.now += delay
        await original(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


def failing(times: int) -> tuple[list[int], Callable[[], Awaitable[None]]]:
    """An update that fails its first `times` calls with RuntimeError("call <n>")."""
    calls: list[int] = []

    async def update() -> None:
        calls.append(len(calls) + 1)
        if len(calls) <= times:
            raise RuntimeError(f"call {len(calls)}")

    return calls, update


async def test_an_outcome_record_is_retried_with_doubling_delays_until_it_succeeds(
    sleeps: list[float],
) -> None:
    calls, update = failing(3)
    assert await retry.retrying_until(update, deadline=100, what="the record") is None
    assert calls == [1, 2, 3, 4]
    assert sleeps == [0.2, 0.4, 0.8]


async def test_the_delays_double_up_to_five_seconds_and_the_last_error_is_returned(
    sleeps: list[float],
) -> None:
    calls, update = failing(10**6)
    error = await retry.retrying_until(update, deadline=20, what="the record")
    assert sleeps == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert isinstance(error, RuntimeError) and str(error) == f"call {len(calls)}"
    assert len(calls) == 8


async def test_no_retry_is_waited_for_that_would_end_at_the_deadline(sleeps: list[float]) -> None:
    calls, update = failing(10**6)
    error = await retry.retrying_until(update, deadline=0.2, what="the record")
    assert (calls, sleeps, str(error)) == ([1], [], "call 1")


async def test_an_update_past_its_deadline_still_gets_one_try(clock: Clock) -> None:
    clock.now = 10.0
    calls, update = failing(0)
    assert await retry.retrying_until(update, deadline=5.0, what="the record") is None
    assert calls == [1]


async def test_a_try_past_the_deadline_is_cut_a_tenth_of_a_second_after_it_began(
    clock: Clock,
) -> None:
    """The update hangs; the clock reads 10 s as the try begins, 10.5 s after: the try,
    given until 10.1 s, is cut at once, and its timeout returned."""
    hanging = asyncio.Event()

    async def update() -> None:
        await hanging.wait()

    clock.ticks = [10.0, 10.5]
    error = await retry.retrying_until(update, deadline=5.0, what="the record")
    assert isinstance(error, TimeoutError)
