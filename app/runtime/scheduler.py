"""The schedules of the daemon, in APP_TIMEZONE: passes over the job repository that apply
the automatic launches' rules (`app.runtime.automation`).

Every replica whose scheduler is enabled (and whose zone agrees with the replicas already
running the schedules) makes a pass every HEARTBEAT_SECONDS, and one at each cron time:
it launches each schedule's due instance if it was never launched (so a night or an hour
missed while the daemons were down is caught up, a punctual one only within its misfire
grace), restarts a FAILED instance once its backoff is over (by the database clock, from
its last execution's end, within 1 + AUTO_RESTART_ATTEMPTS executions), and resumes a run
cut by a shutdown at once. The job repository's launch rules make exactly one replica
launch each; the others are refused. Nothing is remembered between passes but what the
log has said already.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import aiocron

from app.metrics import SCHEDULER_ENABLED
from app.model import AutomaticLaunch, InstanceSummary, LaunchRefused, RestartLimitReached, Status
from app.ports import JobRepository
from app.replicas import ReplicaRegistry, this_process
from app.runtime.automation import (
    RESTART_HORIZON,
    Decision,
    Launch,
    Leave,
    Restart,
    RestartPolicy,
    Schedule,
    Wait,
    decide,
    due_slot,
    due_time_of,
    last_due,
    schedules_zone,
)
from app.runtime.launcher import Launcher, RunningJob, ShuttingDown
from app.runtime.operator import JobOperator, NotRestartable

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class _Plan:
    """A pass's decision about one instance, and what the log calls it."""

    schedule: Schedule
    decision: Decision
    what: str
    key: object  # the instance, for the log's memory of what it said
    parameters: Mapping[str, str] = field(default_factory=dict)  # a Launch's


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
    """The passes of one process; `stop` ends them, awaits the launches in progress and
    leaves the replicas' registry."""

    def __init__(
        self,
        launcher: Launcher,
        tz: ZoneInfo,
        schedules: Sequence[Schedule],
        policy: RestartPolicy,
        registry: ReplicaRegistry,
        *,
        every: float,
    ) -> None:
        self._launcher = launcher
        self._operator = JobOperator.of(launcher)
        self._tz = tz
        self._schedules = tuple(schedules)
        self._policy = policy
        self._registry = registry
        self._every = every
        self._crons: list[aiocron.Cron] = []
        self._nudge = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._launches: set[asyncio.Future[RunningJob | None]] = set()
        self._replica: int | None = None  # this process's row in the registry
        self._running = False  # whether this process runs the schedules (its zone agrees)
        self._said: dict[object, str] = {}  # what the last pass logged, by instance
        self._said_zone = False  # the ERROR about the zone was logged (and still holds)
        self._stopped = False

    @property
    def running(self) -> bool:
        """Whether this process runs the schedules: its zone agrees with the replicas'."""
        return self._running

    def active_schedules(self) -> Sequence[Schedule]:
        """The schedules this process runs now (none while its zone disagrees)."""
        return self._schedules if self._running else ()

    def start(self) -> None:
        """The passes: the first at once (the catch-up), then every `every` seconds and at
        each cron time."""
        loop = asyncio.get_running_loop()
        for schedule in self._schedules:
            cron = aiocron.Cron(schedule.when.cron, func=self._nudge.set, loop=loop, tz=self._tz)
            cron.start()  # not start=True: that defers the start past a prompt stop()
            self._crons.append(cron)
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")

    async def _loop(self) -> None:
        while not self._stopped:
            self._nudge.clear()
            try:
                await self.run_pass()
            except Exception as exc:  # the database away: the next pass tries again
                log.warning("scheduler: pass failed: %r", exc)
            try:
                async with asyncio.timeout(self._every):
                    await self._nudge.wait()
            except TimeoutError:
                pass

    async def run_pass(self) -> None:
        """One pass: agree on the zone, read the instances, act on each decision."""
        if not await self._agree_on_zone():
            return
        said: dict[object, str] = {}
        for plan in await self._plans():
            if self._stopped:
                return
            await self._act(plan, said)
        self._said = said

    async def _plans(self) -> list[_Plan]:
        repository, policy = self._launcher.repository, self._policy
        now = await repository.database_now()
        local = now.astimezone(self._tz)
        plans: list[_Plan] = []
        seen: set[int] = set()
        for schedule in self._schedules:
            job, when = schedule.job, schedule.when
            due = due_slot(when.cron, local)
            raw = when.parameters(due)
            instance = await repository.instance_summary(job.name, job.parse(raw, local))
            decision = decide(instance, now, policy, punctual=when.punctual, due=due)
            what = f"schedule {job.name} at {due.isoformat()}"
            key = instance.instance_id if instance else (job.name, due)
            plans.append(_Plan(schedule, decision, what, key, raw))
            if instance is not None:
                seen.add(instance.instance_id)
        by_job = {schedule.job.name: schedule for schedule in reversed(self._schedules)}
        for instance in await repository.resumable_instances(list(by_job), RESTART_HORIZON):
            if instance.instance_id in seen:
                continue
            schedule = by_job[instance.job_name]
            punctual = schedule.when.punctual
            fired = (
                due_time_of(schedule, instance.parameters, local, policy.misfire_grace)
                if punctual
                else None
            )
            decision = decide(instance, now, policy, punctual=punctual, due=fired)
            plans.append(_Plan(schedule, decision, _named(instance), instance.instance_id))
        return plans

    async def _act(self, plan: _Plan, said: dict[object, str]) -> None:
        decision, what = plan.decision, plan.what
        if isinstance(decision, Leave | Wait):
            if isinstance(decision, Wait):
                text, level = _waiting(decision, self._tz), logging.WARNING
            else:
                text, level = decision.reason, decision.level
            said[plan.key] = text
            if level and self._said.get(plan.key) != text:
                log.log(level, "%s: %s", what, text)
            return
        if isinstance(decision, Launch):
            launching = functools.partial(
                self._launcher.launch,
                plan.schedule.job,
                plan.parameters,
                rerun=False,
                automatic=AutomaticLaunch(None, self._policy.max_executions),
            )
        else:
            failed = decision.execution_id
            bound = None if decision.resume else self._policy.max_executions
            launching = functools.partial(
                self._operator.restart, failed, automatic=AutomaticLaunch(failed, bound)
            )
        launch = asyncio.ensure_future(_guarded(what, launching))
        self._launches.add(launch)
        launch.add_done_callback(self._launches.discard)
        run = await asyncio.shield(launch)  # stop() awaits a launch, never cuts it
        if run is not None and isinstance(decision, Restart):
            log.warning(
                "%s: execution %d %s; restarting it from its checkpoint as execution %d",
                what,
                decision.execution_id,
                "was interrupted by a shutdown" if decision.resume else "FAILED",
                run.execution.id,
            )

    async def _agree_on_zone(self) -> bool:
        """Renew this process's row in the registry; whether it runs the schedules now.
        Logs an ERROR naming both zones when it may not."""
        registry, zone = self._registry, self._tz.key
        replica, replicas = self._replica, None
        if replica is not None:
            replicas = await registry.renew(replica, runs_schedules=self._running)
        if replica is None or replicas is None:
            replica = self._replica = await registry.join(this_process(), zone)
            replicas = await registry.renew(replica, runs_schedules=self._running)
        reference = schedules_zone(replicas or [])
        running = reference is None or reference.zone == zone
        if running != self._running:  # the row says so at once, not at the next pass
            await registry.renew(replica, runs_schedules=running)
        if reference is not None and not running and not self._said_zone:
            log.error(
                "APP_TIMEZONE is %s, but the replicas already running the schedules run them"
                " in %s (replica %s): this replica runs no schedules (it serves the API and"
                " takes over the runs of dead replicas); give it APP_TIMEZONE=%s, or stop"
                " those replicas",
                zone,
                reference.zone,
                reference.name,
                reference.zone,
            )
        elif running and self._said_zone:
            log.warning("this replica runs the schedules now, in %s", zone)
        self._said_zone = not running
        self._running = running
        SCHEDULER_ENABLED.set(int(running))
        return running

    async def stop(self) -> None:
        self._stopped = True
        SCHEDULER_ENABLED.set(0)
        for cron in self._crons:
            cron.stop()
        self._crons.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._launches:
            await asyncio.wait(self._launches)
        if self._replica is not None:
            try:
                await self._registry.leave(self._replica)
            except Exception as exc:  # its row expires with the lease
                log.warning("scheduler: could not leave the replicas' registry: %r", exc)


def _named(instance: InstanceSummary) -> str:
    """An instance as the log names it: its job and identifying parameters' values."""
    values = ", ".join(f"{k}={v}" for k, v in sorted(instance.parameters.items()))
    return f"{instance.job_name} ({values})"


def _waiting(wait: Wait, zone: ZoneInfo) -> str:
    """The wait as the log says it: the due time in APP_TIMEZONE, as the schedules' times
    (`until` is the database clock's, in its zone)."""
    due = wait.until.astimezone(zone).isoformat()
    return f"execution {wait.execution_id} FAILED; restart due at {due}"
