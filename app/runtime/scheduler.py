"""The cron triggers of the daemon, in APP_TIMEZONE, with catch-up and restarts.

Every replica fires every schedule; the job repository's launch rules make exactly one
of them run the instance, and the others are refused (AlreadyRunning/AlreadyComplete).
On start, each schedule's last due time is fired too, so a night the daemon missed (a
deploy, a crash) is caught up; a punctual schedule (the hourly fan-out, whose pushes
would arrive at the wrong hour) only within its misfire grace. A FAILED scheduled
execution is restarted with backoff (a punctual one only within its grace) until its
instance has 1 + attempts executions, counted in the job repository across replicas.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

import aiocron
from cronsim import CronSim

from app.metrics import SCHEDULER_ENABLED
from app.model import LaunchRefused, RestartLimitReached, Status
from app.repository import JobRepository
from app.runtime.job import Cron, JobSpec
from app.runtime.launcher import Launcher, RunningJob, ShuttingDown
from app.runtime.operator import JobOperator, NotRestartable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """A job and when it runs: the schedule it declares (`JobSpec.schedule`)."""

    job: JobSpec
    when: Cron


def schedules_of(jobs: Iterable[JobSpec]) -> tuple[Schedule, ...]:
    """The schedules the jobs declare."""
    return tuple(Schedule(spec, spec.schedule) for spec in jobs if spec.schedule is not None)


@dataclass(frozen=True)
class RestartPolicy:
    attempts: int  # restarts of a FAILED scheduled execution
    backoff_seconds: float  # before the first restart; doubled for each next one
    misfire_grace: timedelta  # how late a punctual schedule may still run

    @property
    def max_executions(self) -> int:
        """Executions of one instance that the automatic launches may make, in all."""
        return 1 + self.attempts


def last_due(cron: str, now: datetime) -> datetime:
    """The latest time at or before `now` that `cron` fires at."""
    return next(CronSim(cron, now.replace(microsecond=0) + timedelta(seconds=1), reverse=True))


@dataclass(frozen=True)
class ScheduledRun:
    """A schedule's latest run that should have ended COMPLETED by now."""

    job_name: str
    at: datetime  # its scheduled time
    status: Status | None  # of its instance's latest execution; None: never launched


async def scheduled_runs(
    repository: JobRepository, schedules: Iterable[Schedule], now: datetime, *, since: datetime
) -> list[ScheduledRun]:
    """Each schedule's latest time at least its `completes_within` before `now`, with the
    status of that time's instance: what the alert on scheduled runs not COMPLETED
    reads, whichever job it is.

    Left out: a run never launched that was due before the schedules were run, by this
    process (`since`, its start) or by any before it (the job's first execution in the
    job repository, the old Spring service's included): a fresh deployment owes nothing
    for the night before it existed."""
    runs = []
    for schedule in schedules:
        job, when = schedule.job, schedule.when
        at = last_due(when.cron, now - when.completes_within)
        status = await repository.instance_status(job.name, job.parse(when.parameters(at), now))
        if status is None and at < since:
            first = await repository.first_execution_time(job.name)
            if first is None or at < first:
                continue
        runs.append(ScheduledRun(job.name, at, status))
    return runs


def scheduled_time(now: datetime) -> datetime:
    """The minute a trigger was meant for: the loop's monotonic timer may fire a few
    milliseconds before the wall clock reaches it, and 00:59:59.998 must not launch
    the instance of the hour (or the day) before."""
    return (now + timedelta(seconds=30)).replace(second=0, microsecond=0)


async def fire(
    launcher: Launcher, schedule: Schedule, now: datetime, *, max_executions: int | None = None
) -> RunningJob | None:
    """Launch the schedule's instance for `now` unless it ran or runs already (never a
    rerun of a completed one), or has `max_executions` already. Logs and swallows every
    failure: a schedule must never bring the daemon down."""
    at = scheduled_time(now)
    return await _guarded(
        f"schedule {schedule.job.name} at {at.isoformat()}",
        lambda: launcher.launch(
            schedule.job, schedule.when.parameters(at), rerun=False, max_executions=max_executions
        ),
    )


async def _guarded(what: str, launch: Callable[[], Awaitable[RunningJob]]) -> RunningJob | None:
    """The automatic launch's run, or None, logged, whatever it raised."""
    try:
        return await launch()
    except RestartLimitReached as exc:
        log.warning("%s: not launched: %s", what, exc)
    except (LaunchRefused, NotRestartable) as exc:
        log.info("%s: not launched: %s", what, exc)
    except ShuttingDown:
        log.info("%s: not launched: shutting down", what)
    except Exception:
        log.exception("%s: launch failed", what)
    return None


class Scheduler:
    """The triggers of one process; `stop` ends them and their restarts, and awaits the
    launches in progress."""

    def __init__(
        self,
        launcher: Launcher,
        tz: tzinfo,
        schedules: Sequence[Schedule],
        policy: RestartPolicy,
    ) -> None:
        self._launcher = launcher
        self._operator = JobOperator.of(launcher)
        self._tz = tz
        self._schedules = tuple(schedules)
        self._policy = policy
        self._crons: list[aiocron.Cron] = []
        self._launches: set[asyncio.Future[RunningJob | None]] = set()
        self._watches: set[asyncio.Task[None]] = set()
        self._stopped = False

    def start(self, *, catch_up: bool = True) -> None:
        loop = asyncio.get_running_loop()
        for schedule in self._schedules:
            cron = aiocron.Cron(
                schedule.when.cron, func=self._trigger, args=(schedule,), loop=loop, tz=self._tz
            )
            cron.start()  # not start=True: that defers the start past a prompt stop()
            self._crons.append(cron)
        SCHEDULER_ENABLED.set(1)
        if catch_up:
            now = datetime.now(self._tz)
            for schedule in self._schedules:
                at = last_due(schedule.when.cron, now)
                log.info("catch-up: schedule %s last due at %s", schedule.job.name, at.isoformat())
                self._watch(schedule, at)

    def _trigger(self, schedule: Schedule) -> None:
        # aiocron runs this in a task of its own that nobody awaits; the launch goes in
        # a task of ours, so that stop() can await it.
        if not self._stopped:
            self._watch(schedule, scheduled_time(datetime.now(self._tz)))

    def resume(self, schedule: Schedule, at: datetime | None, failed: int) -> None:
        """Restart the FAILED execution `failed` of the schedule's instance for `at` (None:
        a schedule that is not punctual, where it does not matter) from its checkpoint
        now, and keep restarting it as a fired one: how the reconciler recovers an
        execution whose runner died."""
        if not self._stopped:
            self._watch(schedule, at, failed)

    def _watch(self, schedule: Schedule, at: datetime | None, failed: int | None = None) -> None:
        task = asyncio.create_task(self._launch_and_restart(schedule, at, failed))
        self._watches.add(task)
        task.add_done_callback(self._watches.discard)

    def _in_time(self, schedule: Schedule, at: datetime | None, delay: float = 0.0) -> bool:
        if not schedule.when.punctual or at is None:
            return True
        late = datetime.now(self._tz) + timedelta(seconds=delay) - at
        return late <= self._policy.misfire_grace

    async def _launch_and_restart(
        self, schedule: Schedule, at: datetime | None, failed: int | None
    ) -> None:
        """Fire for `at` (or restart the execution `failed`); while the execution ends
        FAILED, restart it with backoff, within the grace of a punctual schedule, until
        the instance has run the policy's executions (the repository refuses more)."""
        name, policy = schedule.job.name, self._policy
        what = f"schedule {name} at {at.isoformat() if at else 'its last run'}"
        limit = policy.max_executions
        if not self._in_time(schedule, at):
            log.warning(
                "%s: not launched: later than the misfire grace (%s)", what, policy.misfire_grace
            )
            return
        restarts = 0
        while True:
            if failed is None:
                assert at is not None
                launching = fire(self._launcher, schedule, at, max_executions=limit)
            else:
                launching = _guarded(
                    f"{what}: restart of execution {failed}",
                    functools.partial(self._operator.restart, failed, max_executions=limit),
                )
            launch = asyncio.ensure_future(launching)
            self._launches.add(launch)
            launch.add_done_callback(self._launches.discard)
            run = await asyncio.shield(launch)  # stop() awaits a launch, never cuts it
            if run is None or run.task is None:
                return
            await asyncio.wait({run.task})  # a stop() cancels this wait, not the run
            final = await self._launcher.repository.get_execution(run.execution.id)
            if final is None or final.status != Status.FAILED:
                return
            restarts += 1
            delay = policy.backoff_seconds * 2 ** (restarts - 1)
            if not self._in_time(schedule, at, delay):
                log.warning(
                    "%s: FAILED; not restarted: later than the misfire grace (%s)",
                    what,
                    policy.misfire_grace,
                )
                return
            log.warning("%s: FAILED; restart in %g s", what, delay)
            await asyncio.sleep(delay)
            failed = final.id

    async def stop(self) -> None:
        self._stopped = True
        SCHEDULER_ENABLED.set(0)
        for cron in self._crons:
            cron.stop()
        self._crons.clear()
        for task in self._watches:
            task.cancel()
        pending = self._watches | self._launches
        if pending:
            await asyncio.wait(pending)
