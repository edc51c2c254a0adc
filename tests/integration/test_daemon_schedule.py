"""The schedules: what they launch, replicas firing at once, failures, start and stop."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS, schedules
from app.config import Settings
from app.edges.db import fetch_all
from app.jobs import fcm_send_spec, usage_stats_spec
from app.repository import JobRepository
from app.runtime.job import Cron
from app.runtime.launcher import Launcher
from app.runtime.reconciler import Reconciler
from app.runtime.resources import open_resources
from app.runtime.scheduler import (
    RestartPolicy,
    Schedule,
    Scheduler,
    fire,
    last_due,
    scheduled_time,
)
from tests.reliability.support import until

SEOUL = ZoneInfo("Asia/Seoul")
STATS, FANOUT = schedules()
POLICY = RestartPolicy(attempts=0, backoff_seconds=0.1, misfire_grace=timedelta(minutes=10))


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


async def completed(pool: Pool) -> bool:
    return any(status == "COMPLETED" for _, status, _ in await executions(pool))


async def failed(pool: Pool, count: int) -> bool:
    return [status for _, status, _ in await executions(pool)].count("FAILED") >= count


def ended(caplog: pytest.LogCaptureFixture, count: int) -> Callable[[], Awaitable[bool]]:
    """Whether `count` launch chains of the schedulers (a fire and its restarts) have
    ended: each ends in one "not launched" (or "launch failed") record of the scheduler,
    once its next launch is refused. Needs the scheduler's INFO records in `caplog`."""

    async def check() -> bool:
        messages = [r.getMessage() for r in caplog.records if r.name == "app.runtime.scheduler"]
        ends = [m for m in messages if ": not launched" in m or ": launch failed" in m]
        return len(ends) >= count

    return check


def test_the_schedules() -> None:
    assert (STATS.when.cron, STATS.job) == ("0 1 * * *", usage_stats_spec.SPEC)
    assert (FANOUT.when.cron, FANOUT.job) == ("0 * * * *", fcm_send_spec.SPEC)


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
    assert STATS.when.parameters(scheduled) == {"runDate": stats}
    assert FANOUT.when.parameters(scheduled) == {"runDate": fanout[0], "targetHour": fanout[1]}


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

    every_second = Schedule(usage_stats_spec.SPEC, Cron("* * * * * *", parameters))
    scheduler = Scheduler(replicas[0], SEOUL, [every_second], POLICY)
    scheduler.start(catch_up=False)
    try:
        async with asyncio.timeout(5):
            await twice.wait()
    finally:
        await scheduler.stop()
    count = len(fired)
    await asyncio.sleep(1.5)  # that nothing happens: the cron would have fired meanwhile
    assert len(fired) == count  # nothing fires after stop()
    # the first trigger launched; the later ones found it running or completed
    assert [status for _, status, _ in await executions(pool)] == ["COMPLETED"]


@pytest.mark.parametrize(
    ("cron", "now", "due"),
    [
        ("0 1 * * *", "2025-10-27 09:30:00", "2025-10-27 01:00:00"),
        ("0 1 * * *", "2025-10-27 00:30:00", "2025-10-26 01:00:00"),
        ("0 1 * * *", "2025-10-27 01:00:00.300", "2025-10-27 01:00:00"),
        ("0 * * * *", "2025-10-27 09:04:59", "2025-10-27 09:00:00"),
    ],
)
def test_last_due(cron: str, now: str, due: str) -> None:
    assert last_due(cron, at(now)) == at(due)


async def test_a_missed_night_is_caught_up_on_start_once_across_replicas(
    replicas: list[Launcher], pool: Pool
) -> None:
    """A daemon down at 01:00 left the date without stats; starting launches it, and a
    second replica starting too finds it done."""
    night = last_due(STATS.when.cron, datetime.now(SEOUL))
    expected = (night.date() - timedelta(days=1)).isoformat()
    for launcher in replicas:
        scheduler = Scheduler(launcher, SEOUL, [STATS], POLICY)
        scheduler.start()
        try:
            await until(lambda: completed(pool), within=20, what="the caught-up run")
        finally:
            await scheduler.stop()
    assert [(status, day) for _, status, day in await executions(pool)] == [("COMPLETED", expected)]


@pytest.mark.parametrize(("grace_minutes", "launched"), [(0, False), (61, True)])
async def test_a_missed_fanout_hour_runs_on_start_only_within_its_grace(
    replicas: list[Launcher], grace_minutes: int, launched: bool, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[datetime] = []

    def parameters(scheduled: datetime) -> dict[str, str]:
        asked.append(scheduled)
        return {"runDate": "2025-10-26"}

    punctual = Schedule(usage_stats_spec.SPEC, Cron("0 * * * *", parameters, punctual=True))
    policy = replace(POLICY, misfire_grace=timedelta(minutes=grace_minutes))
    scheduler = Scheduler(replicas[0], SEOUL, [punctual], policy)

    async def caught_up() -> bool:  # launched (it asked the parameters) or said it is not
        return bool(asked) or "not launched: later than the misfire grace" in caplog.text

    with caplog.at_level(logging.WARNING, logger="app.runtime.scheduler"):
        scheduler.start()
        try:
            await until(caught_up, within=10, what="the catch-up's launch or its refusal")
        finally:
            await scheduler.stop()
    due = last_due("0 * * * *", datetime.now(SEOUL))
    if datetime.now(SEOUL) - due < timedelta(seconds=1):
        pytest.skip("started exactly at the top of the hour: both graces admit it")
    assert asked == ([due] if launched else [])


# A night's schedule whose runs fail (a_night_that_fails), restarted twice at most
NIGHT = Schedule(usage_stats_spec.SPEC, Cron("0 1 * * *", lambda _: {"runDate": "2025-10-26"}))
TWO_RESTARTS = RestartPolicy(attempts=2, backoff_seconds=0.1, misfire_grace=timedelta(0))


async def a_night_that_fails(pool: Pool, settings: Settings) -> Settings:
    """Five uses in NIGHT's window (a member with fewer needs no store looked up), and
    settings whose store service is down: each run of NIGHT fails (after a retry budget
    of 0.2 s)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES "
            + ",".join(f"(1, 1, 1, 1, 'USED', '2025-10-2{d} 10:00:00')" for d in range(5))
        )
    return replace(settings, STORE_SERVICE_URL="http://127.0.0.1:9", RETRY_BUDGET_SECONDS=0.2)


async def test_a_failed_scheduled_execution_is_restarted_with_backoff(
    settings: Settings, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """The store service is down: each run fails; the schedule restarts it twice more."""
    caplog.set_level(logging.INFO, logger="app.runtime.scheduler")
    down = await a_night_that_fails(pool, settings)
    async with open_resources(down, broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        scheduler = Scheduler(launcher, SEOUL, [NIGHT], TWO_RESTARTS)
        scheduler.start()  # the catch-up fires it
        try:
            await until(lambda: failed(pool, 3), within=30, what="three FAILED runs")
            await until(ended(caplog, 1), within=30, what="the restarts refused a fourth")
        finally:
            await scheduler.stop()
            await launcher.shutdown(5)
    assert [status for _, status, _ in await executions(pool)] == ["FAILED"] * 3


async def test_replicas_restart_a_failing_instance_at_most_attempts_times_in_all(
    settings: Settings, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """AUTO_RESTART_ATTEMPTS=2: the instance runs 3 executions across two replicas, started
    together, and none more when a third daemon starts later (the count is the job
    repository's, not a process's)."""
    caplog.set_level(logging.INFO, logger="app.runtime.scheduler")
    down = await a_night_that_fails(pool, settings)
    async with AsyncExitStack() as stack:
        schedulers = []
        for _ in range(3):
            resources = await stack.enter_async_context(open_resources(down, broker=False))
            launcher = Launcher(resources, JOBS)
            stack.push_async_callback(launcher.shutdown, 5)
            schedulers.append(Scheduler(launcher, SEOUL, [NIGHT], TWO_RESTARTS))
        for scheduler in schedulers[:2]:
            scheduler.start()  # the catch-up fires it on both
            stack.push_async_callback(scheduler.stop)
        await until(lambda: failed(pool, 3), within=30, what="three FAILED runs")
        await until(ended(caplog, 2), within=30, what="both replicas' restarts done")
        schedulers[2].start()
        stack.push_async_callback(schedulers[2].stop)
        await until(ended(caplog, 3), within=30, what="the third daemon's launch refused")
    assert [status for _, status, _ in await executions(pool)] == ["FAILED"] * 3


async def test_the_reconciler_takes_over_dead_executions_and_restarts_those_worth_it(
    replicas: list[Launcher], pool: Pool
) -> None:
    """A dead stats run is restarted from its checkpoint at once; a dead fan-out of an hour
    long past its grace ends FAILED saying so; a dead STOPPING run ends STOPPED."""
    launcher, other = replicas
    repository = JobRepository(pool, abandon_after_seconds=2)
    now = datetime.now(SEOUL)
    dead = []
    for spec, raw in [
        (usage_stats_spec.SPEC, {"runDate": "2025-10-26"}),
        (fcm_send_spec.SPEC, {"runDate": "2025-10-25", "targetHour": "10"}),
        (usage_stats_spec.SPEC, {"runDate": "2025-10-25"}),
    ]:
        dead.append(
            await repository.start_execution(spec.name, spec.parse(raw, now), rerun_completed=False)
        )
    stats_run, old_hour, stopping = dead
    await repository.request_stop(stopping.id)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET LAST_UPDATED = NOW(6) - INTERVAL 3 SECOND"
        )
    policy = replace(POLICY, attempts=1)
    scheduler = Scheduler(launcher, SEOUL, schedules(), policy)
    reconcilers = [
        Reconciler(
            JobRepository(r.resources.pool, abandon_after_seconds=2),
            SEOUL,
            schedules(),
            policy.misfire_grace,
            scheduler.resume,
            every=0.1,
        )
        for r in (launcher, other)
    ]
    try:
        taken = await asyncio.gather(*(r.reconcile() for r in reconcilers))
        assert sorted(taken[0] + taken[1]) == [e.id for e in dead]  # each by one replica
        await until(lambda: completed(pool), within=20, what="the restarted stats run")
    finally:
        await scheduler.stop()
    rows = await fetch_all(
        pool,
        "SELECT JOB_EXECUTION_ID, STATUS, EXIT_MESSAGE FROM BATCH_JOB_EXECUTION"
        " ORDER BY JOB_EXECUTION_ID",
    )
    assert [(r[0], r[1]) for r in rows] == [
        (stats_run.id, "FAILED"),
        (old_hour.id, "FAILED"),
        (stopping.id, "STOPPED"),
        (stopping.id + 1, "COMPLETED"),
    ]
    heartbeat = r"no heartbeat for \d+ s \(JOB_ABANDON_AFTER_SECONDS=2\)"
    assert re.fullmatch(f"abandoned: {heartbeat}", rows[0][2])
    grace = "not restarted: its scheduled time passed more than 0:10:00 ago"
    assert re.fullmatch(f"abandoned: {heartbeat}; {grace}", rows[1][2])
    assert re.fullmatch(f"stopped on request, its runner gone: {heartbeat}", rows[2][2])
    restarted = await repository.get_execution(stopping.id + 1)
    assert restarted is not None and restarted.instance_id == stats_run.instance_id
