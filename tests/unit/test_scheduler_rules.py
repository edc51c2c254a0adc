"""The scheduler's passes on the in-memory job repository and its manual clock: the due
instance launched once, a FAILED one restarted after its backoff and within its bound,
the scheduled runs the alert reads."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from app.model import JobParameter, Status
from app.repository.memory import ManualClock
from app.runtime.automation import RestartPolicy, Schedule
from app.runtime.job import Cron
from app.runtime.launcher import Launcher
from app.runtime.scheduler import ScheduledRun, Scheduler, scheduled_runs
from tests.fakes import FakeRegistry, ToyJob, memory_launcher

UTC = ZoneInfo("UTC")
NIGHTLY = Cron("0 3 * * *", lambda at: {"runDate": at.date().isoformat()})
POLICY = RestartPolicy(attempts=1, backoff_seconds=60, misfire_grace=timedelta(minutes=10))


async def settle(launcher: Launcher) -> None:
    """Until every run this process launched has ended."""
    await asyncio.gather(*(run.task for run in list(launcher.running.values())))


async def test_a_failed_instance_restarts_after_its_backoff_within_its_bound() -> None:
    job = ToyJob(count=5, size=5, bad={3})
    spec = replace(job.spec(), schedule=NIGHTLY)
    clock = ManualClock(datetime(2025, 1, 1, tzinfo=UTC))
    launcher = memory_launcher([spec], clock, SKIP_LIMIT=0)
    scheduler = Scheduler(
        launcher, UTC, [Schedule(spec, NIGHTLY)], POLICY, FakeRegistry(), every=60
    )
    passes = []
    for seconds in (0, 59, 1, 3600):  # launch; wait out the backoff; restart; bound reached
        clock.advance(seconds)
        await scheduler.run_pass()
        await settle(launcher)
        found = await launcher.repository.find_executions()
        passes.append([(e.parameters["runDate"], e.status) for e in reversed(found)])
    first = [("2024-12-31", Status.FAILED)]
    assert passes == [first, first, first * 2, first * 2]
    await scheduler.stop()


async def test_scheduled_runs_name_each_schedule_s_latest_due_run() -> None:
    job = ToyJob(count=5, size=5)
    spec = replace(job.spec(), schedule=NIGHTLY)
    clock = ManualClock(datetime(2025, 1, 2, 12, tzinfo=UTC))
    launcher = memory_launcher([spec], clock)
    schedules = [Schedule(spec, NIGHTLY)]
    now = clock.now
    # never launched, due before this process began and before the job's first run: owed
    # nothing
    assert await scheduled_runs(launcher.repository, schedules, now, since=now) == []
    due = datetime(2025, 1, 2, 3, tzinfo=UTC)
    assert await scheduled_runs(launcher.repository, schedules, now, since=due) == [
        ScheduledRun(spec.name, due, None)
    ]
    await launcher.run(spec, {"runDate": "2025-01-02"}, rerun=False)
    assert await scheduled_runs(launcher.repository, schedules, now, since=now) == [
        ScheduledRun(spec.name, due, Status.COMPLETED)
    ]
    assert (
        await launcher.repository.instance_status(
            spec.name, [JobParameter("runDate", "java.time.LocalDate", "2025-01-01")]
        )
        is None
    )
