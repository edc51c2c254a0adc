"""Which jobs exist, and launching one: in the background (daemon) or the foreground (CLI)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from app.jobs import fcm_send, usage_stats
from app.logs import bind_log_context
from app.metrics import (
    EXECUTIONS_RUNNING,
    JOB_DURATION,
    JOB_LAST_START,
    JOB_LAST_SUCCESS,
    JOB_OUTCOMES,
    STEP_DURATION,
)
from app.pipeline.chunk import StepProgress
from app.pipeline.step import run_step
from app.runtime.job import JobContext, JobSpec
from app.runtime.parameters import now_in
from app.runtime.repository import JobExecution, JobRepository, Status
from app.runtime.resources import Resources

log = logging.getLogger(__name__)

JOBS: dict[str, JobSpec] = {spec.path: spec for spec in (usage_stats.SPEC, fcm_send.SPEC)}


class UnknownJob(LookupError):
    pass


class ShuttingDown(RuntimeError):
    pass


def find_job(name: str) -> JobSpec:
    """By CLI/API path (`coupon-usage-stats`) or Spring name (`couponUsageStatsJob`)."""
    for spec in JOBS.values():
        if name in (spec.path, spec.name):
            return spec
    raise UnknownJob(f"unknown job {name!r}; known: {', '.join(JOBS)}")


@dataclass
class RunningJob:
    spec: JobSpec
    execution: JobExecution
    progress: StepProgress = field(default_factory=StepProgress)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Launcher:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.repository = JobRepository(
            resources.pool, abandon_after_seconds=self.settings.JOB_ABANDON_AFTER_SECONDS
        )
        self.running: dict[int, RunningJob] = {}
        self._accepting = True

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
        bind_log_context(jobName=spec.name, executionId=execution.id)
        repository = self.repository
        started = time.monotonic()
        EXECUTIONS_RUNNING.labels(spec.name).inc()
        JOB_LAST_START.labels(spec.name).set_to_current_time()
        heartbeat = asyncio.create_task(self._heartbeat(execution.id))
        status, message = Status.FAILED, ""
        try:
            context = JobContext(
                resources=self.resources,
                execution_id=execution.id,
                parameters=execution.parameters,
                dry_run_output=dry_run_output,
            )
            definition = spec.build(context)
            step = await repository.start_step(execution, definition.name)
            bind_log_context(stepName=step.name)
            step_started = time.monotonic()
            if step.checkpoint is not None:
                log.info(
                    "job restarting: job=%s execution=%d step=%s checkpoint=%s",
                    spec.name,
                    execution.id,
                    step.name,
                    step.checkpoint,
                )
            try:
                finished = await run_step(
                    definition,
                    step,
                    job_name=spec.name,
                    pool=self.resources.pool,
                    repository=repository,
                    settings=self.settings,
                    progress=run.progress,
                    stop=run.stop,
                )
                status = Status.COMPLETED if finished else Status.STOPPED
                if not finished:
                    message = "stopped on shutdown; restartable from the checkpoint"
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
                log.exception("step failed: job=%s execution=%d", spec.name, execution.id)
            except asyncio.CancelledError:
                status, message = Status.STOPPED, "cancelled after the shutdown grace period"
                raise
            finally:
                await _recorded(repository.finish_step(step.id, status, message))
                STEP_DURATION.labels(spec.name, step.name, status.value).observe(
                    time.monotonic() - step_started
                )
        except Exception as exc:  # before the step ran: building it, recording it
            message = f"{type(exc).__name__}: {exc}"
            log.exception("job failed to start its step: job=%s", spec.name)
        finally:
            heartbeat.cancel()
            await _recorded(repository.finish_execution(execution.id, status, message))
            if owned_output is not None:
                await asyncio.to_thread(owned_output.close)
            EXECUTIONS_RUNNING.labels(spec.name).dec()
            JOB_OUTCOMES.labels(spec.name, status.value).inc()
            if status == Status.COMPLETED:
                JOB_LAST_SUCCESS.labels(spec.name).set_to_current_time()
            JOB_DURATION.labels(spec.name, status.value).observe(time.monotonic() - started)
            counts = run.progress
            log.info(
                "job finished: job=%s execution=%d status=%s read=%d written=%d filtered=%d"
                " skipped=%d seconds=%.1f%s",
                spec.name,
                execution.id,
                status.value,
                counts.read,
                counts.written,
                counts.filtered,
                counts.skipped,
                time.monotonic() - started,
                f" message={message!r}" if message else "",
            )

    async def _heartbeat(self, execution_id: int) -> None:
        while True:
            await asyncio.sleep(self.settings.HEARTBEAT_SECONDS)
            try:
                await self.repository.heartbeat(execution_id)
            except Exception as exc:
                log.warning("heartbeat failed: execution=%d error=%r", execution_id, exc)

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


async def _recorded(update: Awaitable[None]) -> None:
    """Record an outcome; if the database is gone, say so: the heartbeat rule will
    mark the execution abandoned later."""
    try:
        await asyncio.shield(update)
    except Exception as exc:
        log.error("could not record the outcome in the job repository: %r", exc)
