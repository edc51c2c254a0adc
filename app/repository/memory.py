"""The job repository in memory, under the same rules as MariaDB's (`app.repository.rules`),
on a manual clock: what the engine's rules are tested on in milliseconds (Spring Batch's
ResourcelessJobRepository keeps no tables either). One event loop, no awaits inside a
change: each method is one transaction. A context is stored as the tables store it
(encoded and decoded again), so it reads back alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from app.model import (
    ABANDONABLE,
    RESTARTABLE,
    RUNNING,
    AutomaticLaunch,
    ChunkCounts,
    InstanceSummary,
    JobExecution,
    JobParameter,
    JobTally,
    Status,
    StepExecution,
)
from app.ports import JobRepository
from app.repository import rules
from app.spring_format import decode_context, encode_context, instance_keys


def _stored(context: dict[str, Any]) -> dict[str, Any]:
    return decode_context(*encode_context(context))


@dataclass
class ManualClock:
    """The repository's clock: still until a test moves it."""

    now: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class _Row:
    """What a job and a step execution's rows both hold."""

    status: Status
    exit_code: str
    exit_message: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    last_updated: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def end(self, status: Status, exit_code: str, message: str, now: datetime) -> None:
        self.status, self.exit_code, self.exit_message = status, exit_code, rules.clip(message)
        self.end_time = self.last_updated = now


@dataclass
class _Job(_Row):
    id: int = 0
    instance_id: int = 0
    create_time: datetime | None = None
    parameters: list[JobParameter] = field(default_factory=list)


@dataclass
class _Step(_Row):
    id: int = 0
    job_execution_id: int = 0
    name: str = ""
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # read, write, filter, skip
    commits: int = 0


class MemoryJobRepository(JobRepository):
    def __init__(self, *, abandon_after_seconds: int, clock: ManualClock | None = None) -> None:
        self.abandon_after_seconds = abandon_after_seconds
        self.clock = clock if clock is not None else ManualClock()
        self._instances: dict[tuple[str, str], int] = {}  # (job name, key) -> id
        self._job_names: dict[int, str] = {}  # instance id -> job name
        self._jobs: dict[int, _Job] = {}
        self._steps: dict[int, _Step] = {}
        self._sequences = {"job": 0, "execution": 0, "step": 0}

    def _next_id(self, sequence: str) -> int:
        self._sequences[sequence] += 1
        return self._sequences[sequence]

    # Reads

    async def clock_zone(self) -> tzinfo:
        return self.clock.now.tzinfo or UTC

    async def database_now(self) -> datetime:
        return self.clock.now

    def _execution(self, job: _Job) -> JobExecution:
        return JobExecution(
            id=job.id,
            instance_id=job.instance_id,
            job_name=self._job_names[job.instance_id],
            status=job.status,
            parameters={p.name: p.value for p in job.parameters},
            create_time=job.create_time,
            start_time=job.start_time,
            end_time=job.end_time,
            exit_code=job.exit_code,
            exit_message=job.exit_message,
            last_updated=job.last_updated,
            steps=[self._step(s) for s in self._steps.values() if s.job_execution_id == job.id],
            context=_stored(job.context),
        )

    @staticmethod
    def _step(step: _Step) -> StepExecution:
        context = _stored(step.context)
        read, written, filtered, skipped = step.counts
        return StepExecution(
            id=step.id,
            job_execution_id=step.job_execution_id,
            name=step.name,
            status=step.status,
            checkpoint=(
                context.get("checkpoint")
                if context.get(rules.CHECKPOINT_OWNER) == step.id
                else None
            ),
            read_count=read,
            write_count=written,
            filter_count=filtered,
            skip_count=skipped,
            commit_count=step.commits,
            start_time=step.start_time,
            end_time=step.end_time,
            exit_message=step.exit_message,
            context=context,
        )

    def _of_instance(self, instance_id: int) -> list[_Job]:
        """The instance's executions, newest first."""
        return sorted(
            (job for job in self._jobs.values() if job.instance_id == instance_id),
            key=lambda job: -job.id,
        )

    def _latest(self, instance_id: int) -> _Job | None:
        return next(iter(self._of_instance(instance_id)), None)

    def _find_instance(self, job_name: str, parameters: Sequence[JobParameter]) -> int | None:
        keys = instance_keys(parameters)
        return next(
            (self._instances[(job_name, k)] for k in keys if (job_name, k) in self._instances), None
        )

    def _silence(self, execution_id: int) -> float:
        """Seconds since the execution's last sign of life: its row's or a step's."""
        times = [self._jobs[execution_id].last_updated] + [
            s.last_updated for s in self._steps.values() if s.job_execution_id == execution_id
        ]
        last = max(t for t in times if t is not None)
        return (self.clock.now - last).total_seconds()

    async def get_execution(self, execution_id: int) -> JobExecution | None:
        job = self._jobs.get(execution_id)
        return self._execution(job) if job is not None else None

    async def last_execution(self, instance_id: int) -> JobExecution:
        latest = self._latest(instance_id)
        assert latest is not None
        return self._execution(latest)

    async def latest_executions(self, instance_ids: Collection[int]) -> dict[int, int]:
        return {i: job.id for i in instance_ids if (job := self._latest(i)) is not None}

    async def find_executions(
        self,
        *,
        job_name: str | None = None,
        status: str | None = None,
        run_date: date | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[JobExecution]:
        found = [
            job
            for job in sorted(self._jobs.values(), key=lambda job: -job.id)
            if (job_name is None or self._job_names[job.instance_id] == job_name)
            and (status is None or job.status == status)
            and (
                run_date is None
                or any(
                    p.name == "runDate" and p.value == run_date.isoformat() for p in job.parameters
                )
            )
            and (before is None or job.id < before)
        ]
        return [self._execution(job) for job in found[:limit]]

    async def get_parameters(self, execution_id: int) -> list[JobParameter]:
        return list(self._jobs[execution_id].parameters)

    async def executions_since(self, execution_id: int) -> list[tuple[int, Status]]:
        job = self._jobs.get(execution_id)
        if job is None:
            return []
        run = reversed(self._of_instance(job.instance_id))
        return [(later.id, later.status) for later in run if later.id >= execution_id]

    async def instance_status(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> Status | None:
        instance_id = self._find_instance(job_name, parameters)
        latest = self._latest(instance_id) if instance_id is not None else None
        return latest.status if latest is not None else None

    async def first_execution_time(self, job_name: str) -> datetime | None:
        times = [
            job.create_time
            for job in self._jobs.values()
            if self._job_names[job.instance_id] == job_name and job.create_time is not None
        ]
        return min(times, default=None)

    def _summary(self, latest: _Job) -> InstanceSummary:
        return InstanceSummary(
            instance_id=latest.instance_id,
            job_name=self._job_names[latest.instance_id],
            latest=latest.id,
            status=latest.status,
            exit_code=latest.exit_code,
            end_time=latest.end_time,
            parameters={p.name: p.value for p in latest.parameters},
            counted=sum(
                rules.counts_against_bound(job.exit_code)
                for job in self._of_instance(latest.instance_id)
            ),
        )

    async def instance_summary(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> InstanceSummary | None:
        instance_id = self._find_instance(job_name, parameters)
        latest = self._latest(instance_id) if instance_id is not None else None
        return self._summary(latest) if latest is not None else None

    async def resumable_instances(
        self, job_names: Sequence[str], within: timedelta
    ) -> list[InstanceSummary]:
        since = self.clock.now - within
        latest = [self._latest(i) for i, name in self._job_names.items() if name in job_names]
        return [
            self._summary(job)
            for job in sorted((j for j in latest if j is not None), key=lambda j: j.id)
            if job.status == Status.FAILED
            and (
                not rules.counts_against_bound(job.exit_code)
                or (job.end_time is not None and job.end_time > since)
            )
        ]

    async def expired_executions(self) -> list[JobExecution]:
        return [
            self._execution(job)
            for job in sorted(self._jobs.values(), key=lambda job: -job.id)
            if job.status in RUNNING and self._silence(job.id) > self.abandon_after_seconds
        ][:100]

    async def second_clock_warnings(self, declared: str) -> list[str]:
        """None: one clock writes every time here."""
        return []

    async def job_tallies(self) -> list[JobTally]:
        tallies = []
        for name in sorted(set(self._job_names.values())):
            jobs = [j for j in self._jobs.values() if self._job_names[j.instance_id] == name]
            if not jobs:  # an instance whose only launch was refused
                continue
            newest: dict[int, int] = {}
            for job in jobs:
                newest[job.instance_id] = max(newest.get(job.instance_id, 0), job.id)
            latest = set(newest.values())
            executions: dict[Status, int] = {}
            unrecovered: dict[Status, int] = {}
            for job in jobs:
                executions[job.status] = executions.get(job.status, 0) + 1
                if job.status in RESTARTABLE:
                    unrecovered[job.status] = unrecovered.get(job.status, 0) + (job.id in latest)
            starts = [j.start_time for j in jobs if j.start_time is not None]
            ends = [j.end_time for j in jobs if j.status == Status.COMPLETED and j.end_time]
            tallies.append(
                JobTally(
                    name,
                    executions,
                    unrecovered,
                    max(starts, default=None),
                    max(ends, default=None),
                )
            )
        return tallies

    # Writes

    async def start_execution(
        self,
        job_name: str,
        parameters: Sequence[JobParameter],
        *,
        rerun_completed: bool,
        queued: bool = False,
        automatic: AutomaticLaunch | None = None,
    ) -> JobExecution:
        """MariaDB's launch (`MariaDbJobRepository.start_execution`): every check before
        any change, as its transaction rolls a refused launch's takeover back."""
        instance_id = self._find_instance(job_name, parameters)
        if instance_id is None:
            instance_id = self._next_id("job")
            self._instances[(job_name, instance_keys(parameters)[0])] = instance_id
            self._job_names[instance_id] = job_name
        execution_id = self._next_id("execution")
        job = self._latest(instance_id)
        latest = (job.id, job.status) if job is not None else None
        taken_over = None  # (id, idle seconds, what it ends as)
        if latest is not None and latest[1] in RUNNING:
            idle = self._silence(latest[0])
            ended = rules.check_running(job_name, latest, idle, self.abandon_after_seconds)
            taken_over = (latest[0], idle, ended)
        rules.check_completed(job_name, latest, rerun_completed)
        if automatic is not None:
            rules.check_automatic(job_name, latest, automatic)
            counted = sum(
                rules.counts_against_bound(j.exit_code) for j in self._of_instance(instance_id)
            )
            rules.check_bound(job_name, latest, automatic, counted)
        if taken_over is not None:
            self._end_abandoned(*taken_over)
        now = self.clock.now
        self._jobs[execution_id] = _Job(
            id=execution_id,
            instance_id=instance_id,
            status=Status.STARTING if queued else Status.STARTED,
            exit_code=Status.UNKNOWN.value,
            create_time=now,
            start_time=None if queued else now,
            last_updated=now,
            parameters=list(parameters),
        )
        return self._execution(self._jobs[execution_id])

    def _end_abandoned(
        self, execution_id: int, idle: float, status: Status, note: str = ""
    ) -> None:
        message = rules.abandoned_message(status, idle, self.abandon_after_seconds, note)
        job = self._jobs[execution_id]
        for row in [job, *(s for s in self._steps.values() if s.job_execution_id == execution_id)]:
            if row.status in RUNNING:
                row.end(status, status.value, message, self.clock.now)

    async def mark_started(self, execution_id: int) -> bool:
        job = self._jobs[execution_id]
        if job.status != Status.STARTING:
            return False
        job.status = Status.STARTED
        job.start_time = job.last_updated = self.clock.now
        return True

    async def set_execution_context(self, execution_id: int, context: dict[str, Any]) -> None:
        self._jobs[execution_id].context = _stored(context)

    async def start_step(self, execution: JobExecution, step_name: str) -> StepExecution:
        earlier = [
            s
            for s in self._steps.values()
            if s.name == step_name
            and s.job_execution_id < execution.id
            and self._jobs[s.job_execution_id].instance_id == execution.instance_id
        ]
        previous = max(earlier, key=lambda s: s.id, default=None)
        checkpoint = (
            rules.resume_checkpoint(
                self._step(previous), self._jobs[previous.job_execution_id].status
            )
            if previous is not None
            else None
        )
        step_id = self._next_id("step")
        now = self.clock.now
        self._steps[step_id] = _Step(
            id=step_id,
            job_execution_id=execution.id,
            name=step_name,
            status=Status.STARTED,
            exit_code="EXECUTING",
            start_time=now,
            last_updated=now,
            context=_stored(rules.owned_context({"checkpoint": checkpoint}, step_id)),
        )
        return StepExecution(
            id=step_id,
            job_execution_id=execution.id,
            name=step_name,
            status=Status.STARTED,
            checkpoint=checkpoint,
        )

    @asynccontextmanager
    async def chunk_transaction(self) -> AsyncIterator[MemoryChunkTransaction]:
        """A chunk's unit of work: its record applies at `commit_chunk` (nothing in it
        can fail after)."""
        yield MemoryChunkTransaction(self)

    def commit_chunk(
        self, step_id: int, counts: ChunkCounts, context: dict[str, Any], commits_before: int
    ) -> Status:
        """MariaDB's chunk commit, its fences checked before any change."""
        step = self._steps[step_id]
        if step.status != Status.STARTED or step.commits != commits_before:
            rules.check_commit(step_id, step.status, step.commits, commits_before)
        status = rules.check_job_running(step_id, self._jobs[step.job_execution_id].status)
        for i, n in enumerate((counts.read, counts.written, counts.filtered, counts.skipped)):
            step.counts[i] += n
        step.commits += 1
        step.last_updated = self.clock.now
        step.context = _stored(rules.owned_context(context, step_id))
        return status

    async def heartbeat(self, execution_id: int) -> Status:
        job = self._jobs[execution_id]
        if job.status in RUNNING:
            job.last_updated = self.clock.now
        return job.status

    async def take_over(self, execution_id: int, note: str = "") -> Status | None:
        job = self._jobs.get(execution_id)
        if job is None or job.status not in RUNNING:
            return None
        idle = self._silence(execution_id)
        if idle < self.abandon_after_seconds:
            return None
        ended = rules.taken_over_as(job.status)
        self._end_abandoned(execution_id, idle, ended, note)
        return ended

    async def request_stop(self, execution_id: int) -> Status | None:
        job = self._jobs.get(execution_id)
        if job is None:
            return None
        had = job.status
        if had in RUNNING:
            job.status = Status.STOPPING
        return had

    async def stop_failed(self, execution_id: int) -> bool:
        job = self._jobs.get(execution_id)
        latest = self._latest(job.instance_id) if job is not None else None
        if job is None or not rules.stop_failed_allowed(
            (latest.id, latest.status) if latest is not None else None, execution_id
        ):
            return False
        steps = [s for s in self._steps.values() if s.job_execution_id == execution_id]
        for row in [*steps, job]:
            if row.status == Status.FAILED:
                row.exit_message = rules.stopped_after_failure(row.exit_code, row.exit_message)
                row.exit_code, row.status = Status.STOPPED.value, Status.STOPPED
                row.last_updated = self.clock.now
        return True

    async def abandon(self, execution_id: int) -> Status | None:
        job = self._jobs.get(execution_id)
        if job is None:
            return None
        had = job.status
        if had in ABANDONABLE:
            job.status = Status.ABANDONED
            job.end_time = job.last_updated = self.clock.now
        return had

    async def finish_step(
        self, step_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None:
        step = self._steps[step_id]
        if step.status in RUNNING:
            step.end(status, exit_code or status.value, message, self.clock.now)

    async def finish_execution(
        self, execution_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None:
        job = self._jobs[execution_id]
        if job.status in RUNNING:
            job.end(status, exit_code or status.value, message, self.clock.now)

    async def finish_interrupted(
        self, execution_id: int, step_id: int | None, message: str, stopped: str
    ) -> Status | None:
        job = self._jobs.get(execution_id)
        if job is None or job.status not in RUNNING:
            return None
        status, exit_code, text = rules.interrupted_end(job.status, message, stopped)
        rows: list[_Row] = [job] if step_id is None else [self._steps[step_id], job]
        for row in rows:
            if row.status in RUNNING:
                row.end(status, exit_code, text, self.clock.now)
        return status


class MemoryChunkTransaction:
    """A chunk's unit of work in memory: no database to write in. A writer under test
    keeps what it writes itself, so a chunk the fences refuse leaves its writes there,
    where MariaDB's transaction rolls them back."""

    def __init__(self, repository: MemoryJobRepository) -> None:
        self._repository = repository

    @property
    def connection(self) -> Any:
        """None: a writer under test keeps what it writes itself."""
        return None

    async def commit_chunk(
        self, step_id: int, counts: ChunkCounts, context: dict[str, Any], commits_before: int
    ) -> Status:
        return self._repository.commit_chunk(step_id, counts, context, commits_before)
