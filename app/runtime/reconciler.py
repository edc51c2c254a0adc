"""The reconciler: each replica's periodic look for executions whose runner died.

An execution still recorded running (STARTING, STARTED, STOPPING) without a heartbeat
for JOB_ABANDON_AFTER_SECONDS (its lease expired, by the database clock) is taken over:
a STOPPING one ends STOPPED (the stop it was asked for), any other FAILED, "abandoned".
When it is a scheduled instance still worth running (any instance of a schedule that
is not punctual; one of a punctual schedule only within the misfire grace of its time)
it is restarted from its checkpoint at once, without waiting for a launch. Every
replica runs one; the execution's row lock makes one of them take each over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, tzinfo

from cronsim import CronSim

from app.model import JobExecution, Status
from app.repository import JobRepository
from app.runtime.scheduler import Schedule

log = logging.getLogger(__name__)

# Restarts a FAILED execution (by id) under its schedule, for the time it was due at
# (None: a schedule that is not punctual): Scheduler.resume.
Restart = Callable[[Schedule, datetime | None, int], None]


def due_time_of(
    schedule: Schedule, execution: JobExecution, now: datetime, grace: timedelta
) -> datetime | None:
    """The time within `grace` before `now` at which `schedule` fires the execution's
    instance (its identifying parameters), if any."""
    for at in CronSim(
        schedule.when.cron, now.replace(microsecond=0) + timedelta(seconds=1), reverse=True
    ):
        if now - at > grace:
            return None
        parsed = schedule.job.parse(schedule.when.parameters(at), now)
        if all(execution.parameters.get(p.name) == p.value for p in parsed if p.identifying):
            return at
    return None  # pragma: no cover (a cron fires forever)


class Reconciler:
    """Takes over, every `every` seconds, the executions whose lease expired; restarts
    the scheduled ones still worth running through `restart` (None: takes over only,
    as on a replica whose scheduler is disabled)."""

    def __init__(
        self,
        repository: JobRepository,
        tz: tzinfo,
        schedules: Sequence[Schedule],
        grace: timedelta,
        restart: Restart | None,
        *,
        every: float,
    ) -> None:
        self._repository = repository
        self._tz = tz
        self._schedules = tuple(schedules)
        self._grace = grace
        self._restart = restart
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as exc:  # the database away: the next pass tries again
                log.warning("reconciler: pass failed: %r", exc)
            await asyncio.sleep(self._every)

    async def reconcile(self) -> list[int]:
        """One pass; the ids of the executions this replica took over."""
        taken = []
        for execution in await self._repository.expired_executions():
            schedule, at, note = self._plan(execution, datetime.now(self._tz))
            ended = await self._repository.take_over(execution.id, note)
            if ended is None:  # renewed, or another replica was first
                continue
            taken.append(execution.id)
            restart = self._restart if ended == Status.FAILED else None
            restarting = schedule is not None and restart is not None
            log.warning(
                "reconciler: execution %d of %s (%s) had no heartbeat for"
                " JOB_ABANDON_AFTER_SECONDS: %s; %s",
                execution.id,
                execution.job_name,
                execution.status,
                ended,
                "restarting it from its checkpoint" if restarting else note or "not restarted",
            )
            if schedule is not None and restart is not None:
                restart(schedule, at, execution.id)
        return taken

    def _plan(
        self, execution: JobExecution, now: datetime
    ) -> tuple[Schedule | None, datetime | None, str]:
        """The schedule to restart the execution under and the time it was due at, or
        no schedule and why not."""
        mine = [s for s in self._schedules if s.job.name == execution.job_name]
        for schedule in mine:
            if not schedule.when.punctual:
                return schedule, None, ""
        for schedule in mine:
            at = due_time_of(schedule, execution, now, self._grace)
            if at is not None:
                return schedule, at, ""
        if mine:
            return (
                None,
                None,
                f"not restarted: its scheduled time passed more than {self._grace} ago",
            )
        return None, None, "not restarted: no schedule launches its job"
