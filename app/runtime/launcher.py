"""Launching jobs: in the background (daemon) or the foreground (CLI), each execution
recorded in the job repository from its start to its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from app.errors import EXIT_REFUSED, DataError, Refusal, is_availability_fault
from app.logs import bind_log_context
from app.metrics import (
    JOB_DURATION,
    JOB_OUTCOMES,
    SPRING_BATCH_JOB,
    SPRING_BATCH_JOB_ACTIVE,
    SPRING_BATCH_JOB_LAUNCH_COUNT,
    SPRING_BATCH_STEP,
    SPRING_BATCH_STEP_ACTIVE,
    STEP_DURATION,
)
from app.model import (
    COMPLETED_WITH_SKIPS,
    INTERRUPTED,
    RUNNING,
    AutomaticLaunch,
    JobExecution,
    JobParameter,
    Status,
)
from app.pipeline.chunk import StepProgress
from app.pipeline.retry import retrying_until
from app.pipeline.step import SkipLimitExceeded, StepRunner
from app.ports import JobRepository
from app.repository.mariadb import MariaDbJobRepository
from app.repository.rules import LeaseLost
from app.runtime.job import JobSpec, find_job
from app.runtime.memory import release_memory
from app.runtime.parameters import now_in
from app.runtime.resources import Resources

log = logging.getLogger(__name__)

# Once the shutdown's grace is over, recording what the runs came to may take this long.
_RECORD_AFTER_GRACE_SECONDS = 3.0
ON_REQUEST = "stopped on request; restartable from the checkpoint"
ON_SHUTDOWN = "interrupted by a shutdown; the schedules' next pass resumes it from its checkpoint"


class ShuttingDown(Refusal):
    """A launch while the service shuts down."""

    code = "SHUTTING_DOWN"
    http_status = 503
    exit_code = EXIT_REFUSED


@dataclass
class RunningJob:
    spec: JobSpec
    execution: JobExecution
    progress: StepProgress = field(default_factory=StepProgress)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] = field(init=False)  # set by launch, as the run is made
    # Why `stop` was set: by request, on shutdown, or the lease lost; and what the
    # execution ends as: STOPPED (the operator's word), FAILED INTERRUPTED (a shutdown),
    # FAILED (a fault).
    stop_reason: str = ON_REQUEST
    stop_status: Status = Status.STOPPED
    stop_exit_code: str = Status.STOPPED.value

    def request_stop(
        self, reason: str, status: Status = Status.STOPPED, exit_code: str | None = None
    ) -> None:
        if not self.stop.is_set():
            self.stop_reason, self.stop_status = reason, status
            self.stop_exit_code = exit_code or status.value
            self.stop.set()

    def interrupt(self) -> None:
        """Stop it for a shutdown: FAILED, INTERRUPTED, resumed by the automatic launches
        (unless an operator's stop came first)."""
        self.request_stop(ON_SHUTDOWN, Status.FAILED, INTERRUPTED)


@dataclass
class _Outcome:
    status: Status = Status.FAILED
    message: str = ""
    skipped: int = 0
    step_started: bool = False  # False: the job failed before its step (building, recording it)
    code: str = ""  # an exit code of its own (INTERRUPTED); "": the status's
    step_id: int | None = None  # its step execution, once recorded

    @property
    def exit_code(self) -> str:
        """The status, but COMPLETED WITH SKIPS for a completed run that skipped items."""
        if self.code:
            return self.code
        if self.status == Status.COMPLETED and self.skipped:
            return COMPLETED_WITH_SKIPS
        return self.status.value

    @property
    def interrupted(self) -> bool:
        return self.code == INTERRUPTED

    def stopped_as(self, run: RunningJob) -> None:
        """The outcome of a run whose `stop` was set: what its stop said."""
        self.status, self.message, self.code = run.stop_status, run.stop_reason, run.stop_exit_code


class Launcher:
    """Launches the given jobs on the given resources; `running` holds this process's
    executions while they run."""

    def __init__(
        self,
        resources: Resources,
        jobs: Sequence[JobSpec],
        repository: JobRepository | None = None,
    ) -> None:
        """`repository`: the job repository (by default MariaDB's, on the resources' pool)."""
        self.resources = resources
        self.settings = resources.settings
        self.jobs: dict[str, JobSpec] = {spec.path: spec for spec in jobs}
        self.repository: JobRepository = (
            repository
            if repository is not None
            else MariaDbJobRepository.of(resources.pool, self.settings)
        )
        self.running: dict[int, RunningJob] = {}
        self._accepting = True
        self._record_deadline: float | None = None  # monotonic; set by shutdown
        # Executions this process runs at once; later launches wait in order (STARTING).
        self._slots = asyncio.Semaphore(self.settings.MAX_RUNNING_EXECUTIONS)
        # Outcomes this process could not record (the database away past the deadline).
        self.unrecorded = 0

    @property
    def accepting(self) -> bool:
        """Whether launches are taken: False from the start of the shutdown on."""
        return self._accepting

    def stop_accepting(self) -> None:
        self._accepting = False

    def find(self, name: str) -> JobSpec:
        """By CLI/API path or Spring name; raises UnknownJob."""
        return find_job(self.jobs.values(), name)

    async def launch(
        self,
        spec: JobSpec,
        raw_parameters: Mapping[str, str],
        *,
        rerun: bool,
        dry_run_output: TextIO | None = None,
        automatic: AutomaticLaunch | None = None,
    ) -> RunningJob:
        """Check the parameters, apply the launch rules, start the execution in the
        background. Raises ParameterError, LaunchRefused or ShuttingDown; an automatic
        launch passes what it was decided from (`automatic`)."""
        self.refuse_if_shutting_down()
        parameters = spec.read(raw_parameters, now_in(self.settings.timezone))
        return await self._start(
            spec,
            parameters,
            rerun=rerun,
            dry_run_output=dry_run_output,
            automatic=automatic,
        )

    async def relaunch(
        self,
        spec: JobSpec,
        parameters: Sequence[JobParameter],
        *,
        automatic: AutomaticLaunch | None = None,
    ) -> RunningJob:
        """The instance of these recorded parameters runs again, from its checkpoint: the
        JobOperator's restart, once its rules allow it. Raises LaunchRefused or
        ShuttingDown; an automatic restart passes what it was decided from."""
        self.refuse_if_shutting_down()
        return await self._start(
            spec, parameters, rerun=False, dry_run_output=None, automatic=automatic
        )

    def refuse_if_shutting_down(self) -> None:
        if not self._accepting:
            raise ShuttingDown("the service is shutting down and launches no more jobs")

    async def _start(
        self,
        spec: JobSpec,
        parameters: Sequence[JobParameter],
        *,
        rerun: bool,
        dry_run_output: TextIO | None,
        automatic: AutomaticLaunch | None = None,
    ) -> RunningJob:
        SPRING_BATCH_JOB_LAUNCH_COUNT.inc()  # as Spring's launcher counts, before its rules
        # Recorded as what it is: STARTED, or STARTING while it waits for a slot. Only a
        # recorded execution takes a slot (launches refused by the launch rules never do).
        queued = self._slots.locked()
        execution = await self.repository.start_execution(
            spec.name,
            parameters,
            rerun_completed=rerun,
            queued=queued,
            automatic=automatic,
        )
        has_slot = not self._slots.locked()
        if has_slot:
            await self._slots.acquire()  # at once: it is free
        owned_output = None
        try:
            if execution.dry_run and dry_run_output is None:
                owned_output = await asyncio.to_thread(self._dry_run_file, spec, execution.id)
                await self.repository.set_execution_context(
                    execution.id, {"dryRunOutput": owned_output.name}
                )
                execution.context["dryRunOutput"] = owned_output.name
        except BaseException as exc:
            # Recorded but never run: say so, or it would block its instance until the
            # abandon limit.
            if has_slot:
                self._slots.release()
            message = f"not started: {type(exc).__name__}: {exc}"
            await self._record(
                lambda: self.repository.finish_execution(execution.id, Status.FAILED, message)
            )
            raise
        run = RunningJob(spec=spec, execution=execution)
        run.task = asyncio.create_task(
            self._execute(
                run, dry_run_output or owned_output, owned_output, queued=queued, has_slot=has_slot
            ),
            name=f"{spec.name}#{execution.id}",
        )
        self.running[execution.id] = run
        run.task.add_done_callback(lambda _: self.running.pop(execution.id, None))
        log.info(
            "job %s: job=%s execution=%d parameters=%s",
            "queued" if queued else "launched",
            spec.name,
            execution.id,
            execution.parameters,
        )
        return run

    def _dry_run_file(self, spec: JobSpec, execution_id: int) -> TextIO:
        folder = Path(self.settings.DRY_RUN_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        return (folder / f"{spec.path}-{execution_id}.jsonl").open("w", encoding="utf-8")

    async def _execute(
        self,
        run: RunningJob,
        dry_run_output: TextIO | None,
        owned_output: TextIO | None,
        *,
        queued: bool,
        has_slot: bool,
    ) -> None:
        spec, execution = run.spec, run.execution
        bind_log_context(jobName=spec.name, executionId=execution.id)  # this task's lines
        outcome = _Outcome()
        started = time.monotonic()
        holding = has_slot  # the slot is held until the outcome is recorded
        try:
            async with self._lease(run):
                holding = holding or await self._take_slot(run)
                if not holding:
                    outcome.stopped_as(run)
                elif not queued or await self.repository.mark_started(execution.id):
                    with _job_metrics(spec.name, outcome):
                        await self._run_step(run, dry_run_output, outcome)
                else:
                    outcome.status = Status.STOPPED
                    outcome.message = "stopped on request before it started"
        finally:
            await self._record(lambda: self._finish(execution.id, outcome))
            if holding:
                self._slots.release()
            if owned_output is not None:
                await asyncio.to_thread(owned_output.close)
            counts = run.progress
            log.info(
                "job finished: job=%s execution=%d status=%s exit_code=%s read=%d written=%d"
                " filtered=%d skipped=%d seconds=%.1f%s",
                spec.name,
                execution.id,
                outcome.status.value,
                outcome.exit_code,
                counts.read,
                counts.written,
                counts.filtered,
                counts.skipped,
                time.monotonic() - started,
                f" message={outcome.message!r}" if outcome.message else "",
            )
            release_memory()  # what the run left, before a daemon's next run

    async def _take_slot(self, run: RunningJob) -> bool:
        """Wait in order for a slot, unless the run is stopped first; True with the slot."""
        acquiring = asyncio.ensure_future(self._slots.acquire())
        stopping = asyncio.ensure_future(run.stop.wait())
        try:
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            acquiring.cancel()  # nothing if it has the slot already
        if not acquiring.done() or acquiring.cancelled():
            return False
        if run.stop.is_set():
            self._slots.release()
            return False
        return True

    async def _run_step(
        self, run: RunningJob, dry_run_output: TextIO | None, outcome: _Outcome
    ) -> None:
        """Build the job's step, run it, record the step's outcome into `outcome`."""
        spec, execution = run.spec, run.execution
        context = spec.context(self.resources, execution.id, execution.parameters, dry_run_output)
        try:
            definition = spec.build(context)
            step = await self.repository.start_step(execution, definition.name)
        except Exception as exc:
            outcome.message = f"{type(exc).__name__}: {exc}"
            log.exception("job failed to start its step: job=%s", spec.name)
            return
        outcome.step_started = True
        bind_log_context(stepName=step.name)
        if step.checkpoint is not None:
            log.info(
                "job restarting: job=%s execution=%d step=%s checkpoint=%s",
                spec.name,
                execution.id,
                step.name,
                step.checkpoint,
            )
        runner = StepRunner(
            definition,
            job_name=spec.name,
            repository=self.repository,
            policy=context.policy,
            database=self.settings.database,
            progress=run.progress,
            stop=run.stop,
            stop_requested=lambda: run.request_stop(ON_REQUEST),
        )
        step_started = time.monotonic()
        active = SPRING_BATCH_STEP_ACTIVE.labels(step.name, spec.name, "EXECUTING")
        try:
            with active.running():
                finished = await runner.run(step)
            if finished:
                outcome.status = Status.COMPLETED
                outcome.message = runner.skip_summary()
            else:
                outcome.stopped_as(run)
        except Exception as exc:
            outcome.message = f"{type(exc).__name__}: {exc}"
            if _expected(exc):  # its message says it all: no traceback in the log
                log.error(
                    "step failed: job=%s execution=%d error=%s",
                    spec.name,
                    execution.id,
                    outcome.message,
                )
            else:
                log.exception("step failed: job=%s execution=%d", spec.name, execution.id)
        except asyncio.CancelledError:
            outcome.status, outcome.code = Status.FAILED, INTERRUPTED
            outcome.message = f"{ON_SHUTDOWN} (cancelled after the shutdown grace period)"
            raise
        finally:
            outcome.skipped = run.progress.skipped
            outcome.step_id = step.id
            if not outcome.interrupted:  # else recorded with the job's end (`_finish`)
                await self._record(
                    lambda: self.repository.finish_step(
                        step.id, outcome.status, outcome.message, outcome.exit_code
                    )
                )
            elapsed = time.monotonic() - step_started
            STEP_DURATION.labels(spec.name, step.name, outcome.status.value).observe(elapsed)
            SPRING_BATCH_STEP.labels(
                step.name,
                spec.name,
                outcome.exit_code,
                _spring_error(outcome.status in (Status.FAILED, Status.STOPPED)),
            ).record(elapsed)

    @asynccontextmanager
    async def _lease(self, run: RunningJob) -> AsyncIterator[None]:
        """The heartbeat as a lease, while the body runs. Each beat renews it and reads the
        execution's status: STOPPING stops the step after its chunks in flight (a stop
        requested through any replica, while no chunk commits); a status no longer
        running, or no renewal for half of JOB_ABANDON_AFTER_SECONDS, means another
        replica may take (or took) the instance over: the step stops, the repository's
        fence lets it commit nothing more, and the execution ends FAILED (a fault, which
        the automatic restarts and the alerts see, not an operator's stop)."""
        every = self.settings.HEARTBEAT_SECONDS
        lease = self.settings.JOB_ABANDON_AFTER_SECONDS / 2
        execution_id = run.execution.id

        async def beat() -> None:
            renewed = time.monotonic()
            while True:
                await asyncio.sleep(every)
                try:
                    async with asyncio.timeout(max(lease - (time.monotonic() - renewed), 0.1)):
                        status = await self.repository.heartbeat(execution_id)
                except Exception as exc:
                    log.warning("heartbeat failed: execution=%d error=%r", execution_id, exc)
                    if time.monotonic() - renewed >= lease:
                        log.error(
                            "lease lost: execution=%d not renewed for %.0f s; stopping its step",
                            execution_id,
                            time.monotonic() - renewed,
                        )
                        run.request_stop(
                            "lease lost: the heartbeat could not be renewed", Status.FAILED
                        )
                        return
                    continue
                renewed = time.monotonic()
                if status == Status.STOPPING:
                    run.request_stop(ON_REQUEST)
                elif status not in RUNNING:
                    log.error(
                        "lease lost: execution=%d is %s in the job repository (taken over);"
                        " stopping its step",
                        execution_id,
                        status,
                    )
                    run.request_stop(
                        f"lease lost: the execution was marked {status}", Status.FAILED
                    )
                    return

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _finish(self, execution_id: int, outcome: _Outcome) -> None:
        """Record the execution's end; an interrupted run's with its step's, where an
        operator's stop, not yet read by the runner, turns it STOPPED."""
        if outcome.interrupted:
            await self.repository.finish_interrupted(
                execution_id, outcome.step_id, outcome.message, ON_REQUEST
            )
        else:
            await self.repository.finish_execution(
                execution_id, outcome.status, outcome.message, outcome.exit_code
            )

    async def _record(self, update: Callable[[], Awaitable[None]]) -> None:
        """Record an outcome, retried with backoff while the database does not answer:
        for up to half of JOB_ABANDON_AFTER_SECONDS (the lease), or once shutting down,
        until the shutdown's deadline. Past it, say so: the next launch of the instance
        recovers by the lease (the abandon rule)."""
        deadline = self._record_deadline or (
            time.monotonic() + self.settings.JOB_ABANDON_AFTER_SECONDS / 2
        )
        failure = await retrying_until(update, deadline, "recording the outcome")
        if failure is not None:
            self.unrecorded += 1
            log.error(
                "could not record the outcome in the job repository: %r; the next"
                " launch of the instance recovers it after JOB_ABANDON_AFTER_SECONDS",
                failure,
            )

    async def run(
        self,
        spec: JobSpec,
        raw_parameters: Mapping[str, str],
        *,
        rerun: bool,
        dry_run_output: TextIO | None = None,
    ) -> JobExecution:
        """Launch and wait for the end; the execution as recorded."""
        run = await self.launch(spec, raw_parameters, rerun=rerun, dry_run_output=dry_run_output)
        await run.task
        final = await self.repository.get_execution(run.execution.id)
        assert final is not None
        return final

    async def shutdown(self, grace_seconds: float) -> None:
        """Launch nothing more; ask running steps to stop after their chunks in flight
        (FAILED, INTERRUPTED: resumed by the automatic launches, not an operator's stop);
        cancel what has not stopped within the grace period."""
        self._accepting = False
        self._record_deadline = time.monotonic() + grace_seconds + _RECORD_AFTER_GRACE_SECONDS
        runs = list(self.running.values())
        for run in runs:
            run.interrupt()
        tasks = [run.task for run in runs]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


def _expected(exc: BaseException) -> bool:
    """A failure the policy foresees (an outage past its budget, the skip limit, a lost
    lease), as opposed to a bug."""
    return is_availability_fault(exc) or isinstance(exc, DataError | SkipLimitExceeded | LeaseLost)


def _spring_error(failed: bool) -> str:
    """The `error` tag of Spring Batch's job and step timers: Spring merges an execution's
    failure exceptions into one IllegalStateException for its observation."""
    return "IllegalStateException" if failed else "none"


@contextmanager
def _job_metrics(job_name: str, outcome: _Outcome) -> Iterator[None]:
    """The job as active while the body runs; its outcome and duration once it has.
    Spring's job has failure exceptions when it was stopped or failed outside its step."""
    started = time.monotonic()
    try:
        with SPRING_BATCH_JOB_ACTIVE.labels(job_name).running():
            yield
    finally:
        elapsed = time.monotonic() - started
        JOB_OUTCOMES.labels(job_name, outcome.exit_code).inc()
        JOB_DURATION.labels(job_name, outcome.status.value).observe(elapsed)
        failed_outside_step = outcome.status == Status.FAILED and not outcome.step_started
        SPRING_BATCH_JOB.labels(
            job_name,
            outcome.exit_code,
            _spring_error(outcome.status == Status.STOPPED or failed_outside_step),
        ).record(elapsed)
