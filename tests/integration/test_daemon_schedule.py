"""The schedules: what their passes launch, replicas passing at once, failures, start and
stop, takeovers restarted."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS, schedules
from app.config import Settings
from app.edges.db import fetch_all
from app.jobs import fcm_send_spec, usage_stats_spec
from app.model import Status
from app.replicas import ReplicaRegistry
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.automation import RestartPolicy, Schedule, due_slot, last_due
from app.runtime.job import Cron
from app.runtime.launcher import Launcher
from app.runtime.reconciler import Reconciler
from app.runtime.resources import open_resources
from app.runtime.scheduler import Scheduler
from tests.proxy import FaultProxy, through
from tests.reliability.support import until
from tests.waits import waiting

SEOUL = ZoneInfo("Asia/Seoul")
# Each job's schedule, by its job: other jobs may be scheduled beside them.
_SCHEDULES = {schedule.job: schedule for schedule in schedules()}
STATS, FANOUT = _SCHEDULES[usage_stats_spec.SPEC], _SCHEDULES[fcm_send_spec.SPEC]
POLICY = RestartPolicy(attempts=0, backoff_seconds=0.1, misfire_grace=timedelta(minutes=10))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SEOUL)


def scheduler(
    launcher: Launcher,
    plan: list[Schedule] | tuple[Schedule, ...],
    policy: RestartPolicy = POLICY,
    *,
    every: float = 60,
) -> Scheduler:
    """A scheduler in Seoul over `launcher`, passing every `every` seconds (and at each
    cron time)."""
    registry = ReplicaRegistry(launcher.resources.pool, lease_seconds=120)
    return Scheduler(launcher, SEOUL, plan, policy, registry, every=every)


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


def given_up(caplog: pytest.LogCaptureFixture, count: int) -> Callable[[], Awaitable[bool]]:
    """Whether `count` schedulers have said that the instance has used its automatic
    executions (each says it once)."""

    async def check() -> bool:
        messages = [r.getMessage() for r in caplog.records if r.name == "app.runtime.scheduler"]
        return sum("not restarted: FAILED after" in m for m in messages) >= count

    return check


def test_the_schedules() -> None:
    assert STATS.when.cron == "0 1 * * *"
    assert FANOUT.when.cron == "0 * * * *"


@pytest.mark.parametrize(
    ("now", "stats", "fanout"),
    [
        ("2025-10-27 01:00:00.004", "2025-10-26", ("2025-10-27", "1")),
        # a cron trigger may wake a pass a hair before the clock reaches the minute
        ("2025-10-27 00:59:59.998", "2025-10-26", ("2025-10-27", "1")),
        ("2025-10-27 09:59:59.999", "2025-10-26", ("2025-10-27", "10")),
        ("2025-10-26 23:59:59.900", "2025-10-25", ("2025-10-27", "0")),
        ("2025-01-01 00:00:00.000", "2024-12-30", ("2025-01-01", "0")),
    ],
)
def test_a_pass_fires_the_instance_of_each_schedule_s_due_time(
    now: str, stats: str, fanout: tuple[str, str]
) -> None:
    assert STATS.when.parameters(due_slot(STATS.when.cron, at(now))) == {"runDate": stats}
    assert FANOUT.when.parameters(due_slot(FANOUT.when.cron, at(now))) == {
        "runDate": fanout[0],
        "targetHour": fanout[1],
    }


async def test_replicas_passing_together_run_one_execution(
    replicas: list[Launcher], pool: Pool
) -> None:
    days = ["2025-10-22", "2025-10-23", "2025-10-24", "2025-10-25", "2025-10-26"]
    for day in days:
        night = Schedule(usage_stats_spec.SPEC, Cron("0 1 * * *", lambda _, d=day: {"runDate": d}))
        passes = [scheduler(launcher, [night]) for launcher in replicas]
        await asyncio.gather(*(p.run_pass() for p in passes))
        launched = [run for launcher in replicas for run in launcher.running.values()]
        assert len(launched) == 1, day
        await launched[0].task
        recorded = await executions(pool)
        assert [(status, d) for _, status, d in recorded][-1:] == [("COMPLETED", day)]

        # passing again never reruns a completed instance
        await asyncio.gather(*(p.run_pass() for p in passes))
        assert not any(launcher.running for launcher in replicas)
        assert await executions(pool) == recorded
        await asyncio.gather(*(p.stop() for p in passes))
    assert len(await executions(pool)) == len(days)


async def test_a_failing_launch_is_logged_and_swallowed(
    replicas: list[Launcher], caplog: pytest.LogCaptureFixture
) -> None:
    launcher = replicas[0]

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database exploded")

    launcher.launch = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="app.runtime.scheduler"):
        await scheduler(launcher, [NIGHT]).run_pass()
        await replicas[1].shutdown(0)
        await scheduler(replicas[1], [NIGHT]).run_pass()
    failed, stopping = caplog.records
    assert failed.levelno == logging.ERROR and "database exploded" in (failed.exc_text or "")
    assert stopping.levelno == logging.INFO and "shutting down" in stopping.getMessage()


async def test_scheduler_passes_at_its_cron_and_stops(replicas: list[Launcher], pool: Pool) -> None:
    passes: list[datetime] = []
    twice = asyncio.Event()

    def parameters(scheduled: datetime) -> dict[str, str]:
        passes.append(scheduled)
        if len(passes) == 2:
            twice.set()
        return {"runDate": "2025-10-26"}

    every_second = Schedule(usage_stats_spec.SPEC, Cron("* * * * * *", parameters))
    per_second = scheduler(replicas[0], [every_second])  # passes only at its cron time
    per_second.start()
    try:
        async with waiting(5, "two passes at cron times"):
            await twice.wait()
    finally:
        await per_second.stop()
    count = len(passes)
    await asyncio.sleep(1.5)  # that nothing happens: the cron would have fired meanwhile
    assert len(passes) == count  # no pass after stop()
    # the first pass launched; the later ones found it running or completed
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
        started = scheduler(launcher, [STATS])
        started.start()
        try:
            await until(lambda: completed(pool), within=20, what="the caught-up run")
        finally:
            await started.stop()
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
    hourly = scheduler(replicas[0], [punctual], policy)

    async def caught_up() -> bool:  # launched or said it is not
        return bool(await executions_of_any()) or "not launched: later than" in caplog.text

    async def executions_of_any() -> list[tuple]:
        return await fetch_all(replicas[0].resources.pool, "SELECT 1 FROM BATCH_JOB_EXECUTION")

    with caplog.at_level(logging.WARNING, logger="app.runtime.scheduler"):
        hourly.start()
        try:
            await until(caught_up, within=10, what="the catch-up's launch or its refusal")
        finally:
            await hourly.stop()
    due = last_due("0 * * * *", datetime.now(SEOUL))
    if datetime.now(SEOUL) - due < timedelta(seconds=1):
        pytest.skip("started exactly at the top of the hour: both graces admit it")
    assert set(asked) == {due}  # the pass asked the due hour's instance
    assert bool(await executions_of_any()) == launched


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
    """The store service is down: each run fails; the passes restart it twice more, each
    once its backoff from the last one's END_TIME is over (0.1 s, then 0.2 s)."""
    caplog.set_level(logging.INFO, logger="app.runtime.scheduler")
    down = await a_night_that_fails(pool, settings)
    async with open_resources(down, broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        passing = scheduler(launcher, [NIGHT], TWO_RESTARTS, every=0.05)
        passing.start()  # the first pass fires it
        try:
            await until(lambda: failed(pool, 3), within=30, what="three FAILED runs")
            await until(given_up(caplog, 1), within=30, what="the restarts given up")
        finally:
            await passing.stop()
            await launcher.shutdown(5)
    rows = await fetch_all(
        pool,
        "SELECT STATUS, START_TIME, END_TIME FROM BATCH_JOB_EXECUTION ORDER BY JOB_EXECUTION_ID",
    )
    assert [status for status, _, _ in rows] == ["FAILED"] * 3
    waits = [later[1] - earlier[2] for earlier, later in pairwise(rows)]
    assert waits[0] >= timedelta(seconds=0.1) and waits[1] >= timedelta(seconds=0.2), waits


async def test_replicas_restart_a_failing_instance_at_most_attempts_times_in_all(
    settings: Settings, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """AUTO_RESTART_ATTEMPTS=2: the instance runs 3 executions across two replicas, started
    together, and none more when a third daemon starts later (the count is the job
    repository's, not a process's)."""
    caplog.set_level(logging.INFO, logger="app.runtime.scheduler")
    down = await a_night_that_fails(pool, settings)
    async with AsyncExitStack() as stack:
        passing = []
        for _ in range(3):
            resources = await stack.enter_async_context(open_resources(down, broker=False))
            launcher = Launcher(resources, JOBS)
            stack.push_async_callback(launcher.shutdown, 5)
            passing.append(scheduler(launcher, [NIGHT], TWO_RESTARTS, every=0.05))
        for started in passing[:2]:
            started.start()  # the first pass fires it on both
            stack.push_async_callback(started.stop)
        await until(lambda: failed(pool, 3), within=30, what="three FAILED runs")
        await until(given_up(caplog, 2), within=30, what="both replicas' restarts given up")
        passing[2].start()
        stack.push_async_callback(passing[2].stop)
        await until(given_up(caplog, 3), within=30, what="the third daemon's given up too")
    assert [status for _, status, _ in await executions(pool)] == ["FAILED"] * 3


async def test_the_reconciler_takes_over_dead_executions_and_the_passes_restart_those_worth_it(
    replicas: list[Launcher], pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead stats run is restarted from its checkpoint by the next pass; a dead fan-out
    of an hour long past its grace stays FAILED, the pass saying so; a dead STOPPING run
    ends STOPPED and stays so."""
    launcher, other = replicas
    repository = MariaDbJobRepository(pool, abandon_after_seconds=2)
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
    reconcilers = [
        Reconciler(MariaDbJobRepository(r.resources.pool, abandon_after_seconds=2), every=0.1)
        for r in (launcher, other)
    ]
    taken = await asyncio.gather(*(r.reconcile() for r in reconcilers))
    assert sorted(taken[0] + taken[1]) == [e.id for e in dead]  # each by one replica
    # schedules whose due instances are the dead ones: the night of 10-26, the hour
    # 2025-10-25 10h (long past its grace)
    that_hour = Cron(
        "0 10 25 10 *", lambda _: {"runDate": "2025-10-25", "targetHour": "10"}, punctual=True
    )
    plan = [NIGHT, Schedule(fcm_send_spec.SPEC, that_hour)]
    passing = scheduler(launcher, plan, replace(POLICY, attempts=1), every=0.1)
    with caplog.at_level(logging.INFO, logger="app.runtime.scheduler"):
        passing.start()
        try:
            await until(lambda: completed(pool), within=20, what="the restarted stats run")
        finally:
            await passing.stop()
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
    assert re.fullmatch(f"abandoned: {heartbeat}", rows[1][2])
    assert re.fullmatch(f"stopped on request, its runner gone: {heartbeat}", rows[2][2])
    restarted = await repository.get_execution(stopping.id + 1)
    assert restarted is not None and restarted.instance_id == stats_run.instance_id
    late = [r.getMessage() for r in caplog.records if "misfire grace" in r.getMessage()]
    assert len(late) == 1 and re.fullmatch(
        r"schedule couponUsageStatsFcmSendJob at \d{4}-10-25T10:00:00\+09:00: not restarted:"
        r" later than the misfire grace \(0:10:00\)",
        late[0],
    ), late


async def test_a_restart_the_database_refused_is_made_by_a_later_pass(
    settings: Settings, pool: Pool, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart due while the database refuses every connection: those passes fail, and
    the first one after the outage restarts it (before: a restart launch that failed once
    was never tried again)."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    parameters = usage_stats_spec.SPEC.parse({"runDate": "2025-10-26"}, datetime.now(SEOUL))
    failed = await repository.start_execution(STATS.job.name, parameters, rerun_completed=False)
    await repository.finish_execution(failed.id, Status.FAILED, "boom")
    caplog.set_level(logging.WARNING, logger="app.runtime.scheduler")
    async with open_resources(through(settings, db=db_proxy), broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        passing = scheduler(launcher, [NIGHT], replace(POLICY, attempts=1), every=0.1)
        try:
            async with db_proxy.outage():
                passing.start()

                async def refused() -> bool:
                    return "scheduler: pass failed" in caplog.text

                await until(refused, within=20, what="a pass the database refused")
            await until(lambda: completed(pool), within=30, what="the restart, after the outage")
        finally:
            await passing.stop()
            await launcher.shutdown(5)
    assert [status for _, status, _ in await executions(pool)] == ["FAILED", "COMPLETED"]
