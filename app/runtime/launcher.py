"""Launching jobs: in the background (daemon) or the foreground (CLI), each execution
recorded in the job repository from its start to its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from app.logs import bind_log_context
from app.metrics import (
    EXECUTIONS_RUNNING,
    JOB_DURATION,
    JOB_LAST_START,
    JOB_LAST_SUCCESS,
    JOB_OUTCOMES,
    STEP_DURATION,
)
from app.model import COMPLETED_WITH_SKIPS, JobExecution, Status
from app.pipeline.chunk import StepProgress
from app.pipeline.step import StepRunner
from app.repository import JobRepository
from app.runtime.job import JobContext, JobSpec, find_job
from app.runtime.parameters import now_in
from app.runtime.resources import Resources

log = logging.getLogger(__name__)


class ShuttingDown(RuntimeError):
    pass


@dataclass
class RunningJob:
    spec: JobSpec
    execution: JobExecution
    progress: StepProgress = field(default_factory=StepProgress)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass
class _Outcome:
    status: Status = Status.FAILED
    message: str = ""
    skipped: int = 0

    @property
    def exit_code(self) -> str:
        """The status, but COMPLETED WITH SKIPS for a completed run that skipped items."""
        if self.status == Status.COMPLETED and self.skipped:
            return COMPLETED_WITH_SKIPS
        return self.status.value


class Launcher:
    """Launches the given jobs on the given resources; `running` holds this process's
    executions while they run."""

    def __init__(self, resources: Resources, jobs: Sequence[JobSpec]) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.jobs: dict[str, JobSpec] = {spec.path: spec for spec in jobs}
        self.repository = JobRepository(
            resources.pool, abandon_after_seconds=self.settings.JOB_ABANDON_AFTER_SECONDS
        )
        self.running: dict[int, RunningJob] = {}
        self._accepting = True

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
    ) -> RunningJob:
        """Check the parameters, apply the launch rules, start the execution in the
        background. Raises ParameterError, LaunchRefused or ShuttingDown."""
        if not self._accepting:
            raise ShuttingDown("the service is shutting down and launches no more jobs")
        parameters = spec.parse(raw_parameters, now_in(self.settings.timezone))
        execution = await self.repository.start_execution(
            spec.name, parameters, rerun_completed=rerun
        )
        owned_output = None
        try:
            if execution.parameters.get("dryRun") == "true" and dry_run_output is None:
                owned_output = await asyncio.to_thread(self._dry_run_file, spec, execution.id)
        except BaseException as exc:
            # Recorded STARTED but never run: say so, or it would block its instance
            # until the abandon limit.
            message = f"not started: {type(exc).__name__}: {exc}"
            await _recorded(self.repository.finish_execution(execution.id, Status.FAILED, message))
            raise
        run = RunningJob(spec=spec, execution=execution)
        run.task = asyncio.create_task(
            self._execute(run, dry_run_output or owned_output, owned_output),
            name=f"{spec.name}#{execution.id}",
        )
        self.running[execution.id] = run
        run.task.add_done_callback(lambda _: self.running.pop(execution.id, None))
        log.info(
            "job launched: job=%s execution=%d parameters=%s",
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
        self, run: RunningJob, dry_run_output: TextIO | None, owned_output: TextIO | None
    ) -> None:
        spec, execution = run.spec, run.execution
        bind_log_context(jobName=spec.name, executionId=execution.id)  # this task's lines
        outcome = _Outcome()
        started = time.monotonic()
        try:
            with _job_metrics(spec.name, outcome):
                async with _heartbeat(
                    self.repository, execution.id, self.settings.HEARTBEAT_SECONDS
                ):
                    await self._run_step(run, dry_run_output, outcome)
        finally:
            await _recorded(
                self.repository.finish_execution(
                    execution.id, outcome.status, outcome.message, outcome.exit_code
                )
            )
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

    async def _run_step(
        self, run: RunningJob, dry_run_output: TextIO | None, outcome: _Outcome
    ) -> None:
        """Build the job's step, run it, record the step's outcome into `outcome`."""
        spec, execution = run.spec, run.execution
        context = JobContext(
            resources=self.resources,
            execution_id=execution.id,
            parameters=execution.parameters,
            dry_run_output=dry_run_output,
        )
        try:
            definition = spec.build(context)
            step = await self.repository.start_step(execution, definition.name)
        except Exception as exc:
            outcome.message = f"{type(exc).__name__}: {exc}"
            log.exception("job failed to start its step: job=%s", spec.name)
            return
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
            pool=self.resources.pool,
            policy=self.settings.step,
            progress=run.progress,
            stop=run.stop,
        )
        step_started = time.monotonic()
        try:
            finished = await runner.run(step)
            outcome.status = Status.COMPLETED if finished else Status.STOPPED
            if not finished:
                outcome.message = "stopped on shutdown; restartable from the checkpoint"
        except Exception as exc:
            outcome.message = f"{type(exc).__name__}: {exc}"
            log.exception("step failed: job=%s execution=%d", spec.name, execution.id)
        except asyncio.CancelledError:
            outcome.status = Status.STOPPED
            outcome.message = "cancelled after the shutdown grace period"
            raise
        finally:
            outcome.skipped = run.progress.skipped
            await _recorded(
                self.repository.finish_step(
                    step.id, outcome.status, outcome.message, outcome.exit_code
                )
            )
            STEP_DURATION.labels(spec.name, step.name, outcome.status.value).observe(
                time.monotonic() - step_started
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
        assert run.task is not None
        await run.task
        final = await self.repository.get_execution(run.execution.id)
        assert final is not None
        return final

    async def shutdown(self, grace_seconds: float) -> None:
        """Launch nothing more; ask running steps to stop after their chunks in flight;
        cancel what has not stopped within the grace period."""
        self._accepting = False
        runs = list(self.running.values())
        for run in runs:
            run.stop.set()
        tasks = [run.task for run in runs if run.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


@contextmanager
def _job_metrics(job_name: str, outcome: _Outcome) -> Iterator[None]:
    """The running gauge while the body runs; the outcome and the duration after."""
    started = time.monotonic()
    EXECUTIONS_RUNNING.labels(job_name).inc()
    JOB_LAST_START.labels(job_name).set_to_current_time()
    try:
        yield
    finally:
        EXECUTIONS_RUNNING.labels(job_name).dec()
        JOB_OUTCOMES.labels(job_name, outcome.exit_code).inc()
        if outcome.status == Status.COMPLETED:
            JOB_LAST_SUCCESS.labels(job_name).set_to_current_time()
        JOB_DURATION.labels(job_name, outcome.status.value).observe(time.monotonic() - started)


@asynccontextmanager
async def _heartbeat(
    repository: JobRepository, execution_id: int, every: float
) -> AsyncIterator[None]:
    """Keep the execution's LAST_UPDATED fresh while the body runs, so that no other
    launch takes it for abandoned."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await repository.heartbeat(execution_id)
            except Exception as exc:
                log.warning("heartbeat failed: execution=%d error=%r", execution_id, exc)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _recorded(update: Awaitable[None]) -> None:
    """Record an outcome; if the database is gone, say so: the heartbeat rule will
    mark the execution abandoned later."""
    try:
        await asyncio.shield(update)
    except Exception as exc:
        log.error("could not record the outcome in the job repository: %r", exc)
