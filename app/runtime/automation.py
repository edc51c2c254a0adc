"""The rules of the automatic launches, as pure functions over what the job repository
reads: which scheduled instance to launch, which FAILED one to restart and when, which
interrupted run to resume, and which replica runs the schedules.

No promise lives in a process's memory: each pass of any replica that runs the schedules
reads BATCH_* and applies these rules afresh (`app.runtime.scheduler`), so a replica's
death, a launch that failed or a restart of the daemon loses nothing; the next pass acts.
docs/jobs.md states them for operators.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim

from app.model import RUNNING, InstanceSummary, Status
from app.replicas import Replica
from app.runtime.job import Cron, JobSpec

# A pass counts a time as due from this long before it (a cron trigger may wake a pass a
# hair before the database clock reaches its minute).
EARLY = timedelta(seconds=1)
# How far back a pass looks for FAILED instances to restart (interrupted ones: whenever).
RESTART_HORIZON = timedelta(days=1)


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
    attempts: int  # automatic restarts of a FAILED instance
    backoff_seconds: float  # after its first FAILED execution's end; doubled for each next one
    misfire_grace: timedelta  # how late a punctual schedule may still run

    @property
    def max_executions(self) -> int:
        """Executions of one instance that the automatic launches may make, in all (the
        interrupted ones left out)."""
        return 1 + self.attempts

    def backoff(self, counted: int) -> timedelta:
        """The wait after the end of an instance's `counted`-th FAILED execution."""
        return timedelta(seconds=self.backoff_seconds * 2 ** max(counted - 1, 0))


def last_due(cron: str, now: datetime) -> datetime:
    """The latest time at or before `now` that `cron` fires at."""
    return next(CronSim(cron, now.replace(microsecond=0) + timedelta(seconds=1), reverse=True))


def due_slot(cron: str, now: datetime) -> datetime:
    """The time whose instance a pass at `now` fires: the latest due, counting one due
    from EARLY before it."""
    return last_due(cron, now + EARLY)


def due_time_of(
    schedule: Schedule, parameters: dict[str, str], now: datetime, grace: timedelta
) -> datetime | None:
    """The time within `grace` before `now` at which `schedule` fires the instance of
    these (recorded) parameters, if any."""
    for at in CronSim(
        schedule.when.cron, now.replace(microsecond=0) + timedelta(seconds=1), reverse=True
    ):
        if now - at > grace:
            return None
        parsed = schedule.job.parse(schedule.when.parameters(at), now)
        if all(parameters.get(p.name) == p.value for p in parsed if p.identifying):
            return at
    return None  # pragma: no cover (a cron fires forever)


@dataclass(frozen=True)
class Launch:
    """Launch the schedule's due instance: it was never launched."""


@dataclass(frozen=True)
class Restart:
    """Restart the instance's latest execution from its checkpoint; `resume`: one cut by
    a shutdown (no backoff, no attempt counted)."""

    execution_id: int
    resume: bool


@dataclass(frozen=True)
class Wait:
    """A FAILED instance whose restart is due at `until` (database clock)."""

    execution_id: int
    until: datetime


@dataclass(frozen=True)
class Leave:
    """Nothing to launch, and why; `level`: how the log says it (0: not at all)."""

    reason: str
    level: int = 0


Decision = Launch | Restart | Wait | Leave


def decide(
    instance: InstanceSummary | None,
    now: datetime,
    policy: RestartPolicy,
    *,
    punctual: bool,
    due: datetime | None,
) -> Decision:
    """What the automatic launches do with an instance of a scheduled job (None: the due
    instance of a schedule, never launched) at `now` (the database clock). `due`: the
    time its schedule fires it at (None where none does within the grace); a `punctual`
    schedule runs only within the misfire grace of it."""
    grace = policy.misfire_grace

    def in_time(decision: Decision, at: datetime) -> Decision:
        if punctual and (due is None or at - due > grace):
            late = "not launched" if isinstance(decision, Launch) else "not restarted"
            return Leave(f"{late}: later than the misfire grace ({grace})", logging.WARNING)
        return decision

    if instance is None:
        return in_time(Launch(), now)
    if instance.dry_run:
        return Leave("a dry run: never launched automatically")
    latest, status = instance.latest, instance.status
    if status in RUNNING:
        return Leave(f"running as execution {latest}")
    if status == Status.COMPLETED:
        return Leave(f"completed as execution {latest}")
    if status == Status.STOPPED:
        return Leave(
            f"not restarted: execution {latest} was STOPPED by an operator; only an operator"
            " restarts it",
            logging.INFO,
        )
    if status == Status.ABANDONED:
        return Leave(
            f"not launched: execution {latest} is ABANDONED, final for the automatic"
            " launches; only an operator's launch starts the instance over",
            logging.INFO,
        )
    if status != Status.FAILED:
        return Leave(f"not restarted: execution {latest} is {status}", logging.WARNING)
    if instance.interrupted:
        return in_time(Restart(latest, resume=True), now)
    if instance.counted >= policy.max_executions:
        return Leave(
            f"not restarted: FAILED after {instance.counted} executions (at most"
            f" {policy.max_executions} automatically)",
            logging.WARNING,
        )
    # No END_TIME recorded (a row another writer left so): its backoff cannot be timed.
    ended = instance.end_time
    at = ended + policy.backoff(instance.counted) if ended is not None else now
    if now < at:
        return in_time(Wait(latest, at), at)
    return in_time(Restart(latest, resume=False), now)


def schedules_zone(replicas: Sequence[Replica]) -> Replica | None:
    """The replica whose APP_TIMEZONE the schedules run in: the first to join among those
    running them; where none runs them (all just started, or those gone), the first to
    join. A replica of another zone runs no schedules (None: no replica is known)."""
    running = [replica for replica in replicas if replica.runs_schedules]
    return min(running or replicas, key=lambda replica: replica.id, default=None)
