"""The retry budget is a deadline (issue 26): RETRY_BUDGET_SECONDS of wall-clock time from
the first fault, each try cut at it, the wait a dependency asks for honoured within it,
and the log's figures true; an outage is one WARNING and one line at its end."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from app.config import StepPolicy
from app.errors import AvailabilityError
from app.pipeline.retry import Budget, retrying
from tests.settings import make_settings

WHAT = "step s: a chunk"


def policy(budget: float, base: float = 0.001) -> StepPolicy:
    return make_settings(
        RETRY_BUDGET_SECONDS=budget, RETRY_BASE_SECONDS=base, RETRY_MAX_WAIT_SECONDS=base
    ).step


def fault(message: str, retry_after: float | None = None) -> AvailabilityError:
    exc = AvailabilityError(message, dependency="store service")
    exc.retry_after = retry_after
    return exc


def gave_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


async def test_a_try_begun_within_the_budget_is_cut_at_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: a try that began at 59 s of a 60 s budget ran for as long as it took."""
    tries = 0

    async def slow_second_try() -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise fault("broker: connection refused")
        await asyncio.sleep(30)  # waits for a channel, as a publish may

    started = time.monotonic()
    with pytest.raises(AvailabilityError, match="connection refused"):
        await retrying(slow_second_try, policy(0.5), WHAT)()
    assert time.monotonic() - started < 1.5
    [line] = gave_up(caplog)
    assert re.fullmatch(
        r"step s: a chunk still failing after 1 faults in 0\.[5-9] s"
        r" \(RETRY_BUDGET_SECONDS=0\.5\); the try in flight was cut at the deadline:"
        r" AvailabilityError\('broker: connection refused'\)",
        line,
    ), line


async def test_the_wait_a_dependency_asks_for_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    times: list[float] = []

    async def throttled() -> str:
        times.append(time.monotonic())
        if len(times) == 1:
            raise fault("store service: HTTP 429, Retry-After 0.3 s", retry_after=0.3)
        return "done"

    assert await retrying(throttled, policy(5), WHAT)() == "done"
    assert times[1] - times[0] >= 0.3  # its own backoff alone: 1 ms


async def test_a_wait_asked_past_the_deadline_gives_up_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def throttled() -> None:
        raise fault("store service: HTTP 429, Retry-After 120 s", retry_after=120)

    started = time.monotonic()
    with pytest.raises(AvailabilityError, match="Retry-After 120 s"):
        await retrying(throttled, policy(60), WHAT)()
    assert time.monotonic() - started < 1
    [line] = gave_up(caplog)
    assert (
        "after 1 faults in 0.0 s (RETRY_BUDGET_SECONDS=60); it asks to wait 120 s, 60.0 s" in line
    )


async def test_the_tries_of_one_budget_share_its_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """The parts of a chunk tried after a data fault: one budget from the first fault."""
    budget = Budget(policy(0.4), WHAT)

    async def down() -> None:
        raise fault("store service: HTTP 503")

    started = time.monotonic()
    for _ in range(3):  # three parts, one after the other
        with pytest.raises(AvailabilityError):
            await budget.run(down)
    assert time.monotonic() - started < 1  # not 3 x 0.4 s
    assert len(gave_up(caplog)) == 1  # said once


async def test_an_outage_is_one_warning_and_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Four chunks meeting the same outage, each retrying many times (before: a WARNING
    for every failed try of every chunk)."""
    caplog.set_level(logging.INFO)
    down_until = time.monotonic() + 0.3

    async def lookup(chunk: int) -> int:
        if time.monotonic() < down_until:
            raise fault("store service /internal/v1/stores/regions: HTTP 503")
        return chunk

    calls = [retrying(lookup, policy(5, base=0.01), WHAT)(chunk) for chunk in range(4)]
    assert await asyncio.gather(*calls) == [0, 1, 2, 3]
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines[0] == (
        "WARNING",
        "store service unavailable: AvailabilityError: store service"
        " /internal/v1/stores/regions: HTTP 503",
    )
    assert len(lines) == 2, lines
    level, back = lines[1]
    assert level == "INFO"
    assert re.fullmatch(r"store service back after 0\.\d s \(\d+ faults\)", back), back
