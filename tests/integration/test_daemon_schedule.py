"""The schedules: what they launch, replicas firing at once, failures, start and stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS, SCHEDULES
from app.config import Settings
from app.edges.db import fetch_all
from app.jobs import fcm_send, usage_stats
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.runtime.scheduler import Schedule, Scheduler, fire, scheduled_time

SEOUL = ZoneInfo("Asia/Seoul")
STATS, FANOUT = SCHEDULES


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SEOUL)


@pytest.fixture
async def replicas(settings: Settings, pool: Pool) -> AsyncIterator[list[Launcher]]:
    """Two launchers with a pool each, as two daemons against one database."""
    async with AsyncExitStack() as stack:
        launchers = []
        for _ in range(2):
            resources = await stack.enter_async_context(open_resources(settings, broker=False))
            launcher = Launcher(resources, JOBS)
            stack.push_async_callback(launcher.shutdown, 5)
            launchers.append(launcher)
        yield launchers


async def executions(pool: Pool) -> list[tuple]:
    return [
        tuple(row)
        for row in await fetch_all(
            pool,
            "SELECT e.JOB_EXECUTION_ID, e.STATUS, p.PARAMETER_VALUE FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_EXECUTION_PARAMS p ON p.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
            " AND p.PARAMETER_NAME = 'runDate' ORDER BY e.JOB_EXECUTION_ID",
        )
    ]


def test_the_schedules() -> None:
    assert (STATS.cron, STATS.job) == ("0 1 * * *", usage_stats.SPEC)
    assert (FANOUT.cron, FANOUT.job) == ("0 * * * *", fcm_send.SPEC)


@pytest.mark.parametrize(
    ("now", "stats", "fanout"),
    [
        ("2025-10-27 01:00:00.004", "2025-10-26", ("2025-10-27", "1")),
        # the loop's timer may fire a hair before the wall clock reaches the minute
        ("2025-10-27 00:59:59.998", "2025-10-26", ("2025-10-27", "1")),
        ("2025-10-27 09:59:59.999", "2025-10-26", ("2025-10-27", "10")),
        ("2025-10-26 23:59:59.900", "2025-10-26", ("2025-10-27", "0")),
        ("2025-01-01 00:00:00.000", "2024-12-31", ("2025-01-01", "0")),
    ],
)
def test_parameters_come_from_the_scheduled_minute(
    now: str, stats: str, fanout: tuple[str, str]
) -> None:
    scheduled = scheduled_time(at(now))
    assert STATS.parameters(scheduled) == {"runDate": stats}
    assert FANOUT.parameters(scheduled) == {"runDate": fanout[0], "targetHour": fanout[1]}


async def test_replicas_firing_together_run_one_execution(
    replicas: list[Launcher], pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    days = ["2025-10-22", "2025-10-23", "2025-10-24", "2025-10-25", "2025-10-26"]
    for day in days:
        now = at(f"{day} 01:00:00.001")
        runs = await asyncio.gather(*(fire(launcher, STATS, now) for launcher in replicas))
        launched = [run for run in runs if run is not None]
        assert len(launched) == 1, day
        assert launched[0].task is not None
        await launched[0].task

    recorded = await executions(pool)
    assert len(recorded) == len(days)
    assert {status for _, status, _ in recorded} == {"COMPLETED"}

    # firing again never reruns a completed instance
    with caplog.at_level(logging.INFO, logger="app.runtime.scheduler"):
        runs = await asyncio.gather(*(fire(launcher, STATS, now) for launcher in replicas))
    assert runs == [None, None]
    assert await executions(pool) == recorded
    refusals = [r for r in caplog.records if "already completed" in r.getMessage()]
    assert len(refusals) == 2 and all(r.levelno == logging.INFO for r in refusals)


async def test_a_failing_launch_is_logged_and_swallowed(
    replicas: list[Launcher], caplog: pytest.LogCaptureFixture
) -> None:
    launcher = replicas[0]

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database exploded")

    launcher.launch = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="app.runtime.scheduler"):
        assert await fire(launcher, STATS, at("2025-10-27 01:00")) is None
        await replicas[1].shutdown(0)
        assert await fire(replicas[1], STATS, at("2025-10-27 01:00")) is None
    failed, stopping = caplog.records
    assert failed.levelno == logging.ERROR and "database exploded" in (failed.exc_text or "")
    assert stopping.levelno == logging.INFO and "shutting down" in stopping.getMessage()


async def test_scheduler_fires_on_its_cron_and_stops(replicas: list[Launcher], pool: Pool) -> None:
    fired: list[datetime] = []
    twice = asyncio.Event()

    def parameters(scheduled: datetime) -> dict[str, str]:
        fired.append(scheduled)
        if len(fired) == 2:
            twice.set()
        return {"runDate": "2025-10-26"}

    scheduler = Scheduler(
        replicas[0], SEOUL, [Schedule("* * * * * *", usage_stats.SPEC, parameters)]
    )
    scheduler.start()
    try:
        async with asyncio.timeout(5):
            await twice.wait()
    finally:
        await scheduler.stop()
    count = len(fired)
    await asyncio.sleep(1.5)
    assert len(fired) == count  # nothing fires after stop()
    # the first trigger launched; the later ones found it running or completed
    assert [status for _, status, _ in await executions(pool)] == ["COMPLETED"]
