"""Spring Batch's JobOperator: start, restart, stop, abandon and list executions, under
the status rules of `app.repository.rules`. The CLI and the admin API are thin adapters
over it; its refusals carry their own HTTP status and exit code (`app.errors`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TextIO

from app.errors import EXIT_REFUSED, Refusal
from app.model import RUNNING, AutomaticLaunch, JobExecution, LaunchRefused, Status
from app.ports import JobRepository
from app.repository.rules import StopTarget, abandon_refusal, restart_refusal, stop_target
from app.runtime.job import UnknownJob
from app.runtime.launcher import ON_REQUEST, Launcher, RunningJob
from app.runtime.parameters import ParameterError, backfill_dates


class NoSuchExecution(Refusal):
    code = "EXECUTION_NOT_FOUND"
    http_status = 404


class Refused(Refusal):
    """The execution's status does not allow the command; `status` is the one it has."""

    code = "JOB_STATUS_REFUSED"
    http_status = 409
    exit_code = EXIT_REFUSED

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message)
        self.status = status


class NotRestartable(Refused):
    """Only a FAILED or STOPPED execution, its instance's last, of a job this service
    runs, restarts."""

    code = "JOB_NOT_RESTARTABLE"


class NotRunning(Refused):
    """Only a STARTING, STARTED or STOPPING execution stops."""

    code = "JOB_NOT_RUNNING"


class NotAbandonable(Refused):
    """Only a STOPPED, FAILED or STOPPING execution is abandoned."""

    code = "JOB_NOT_ABANDONABLE"


@dataclass(frozen=True)
class Stopped:
    """What a stop did: the execution it reached (the one asked for, or the one that
    carries its run on) and the status that one had."""

    execution_id: int
    was: Status


class JobOperator:
    """The operator's commands over the job repository, and over this process's launcher
    where it has one (the daemon, `run`, `restart`); `stop` and `abandon` need none:
    the runner, on whichever replica, reads them in the job repository."""

    def __init__(self, repository: JobRepository, launcher: Launcher | None = None) -> None:
        self.repository = repository
        self._launcher = launcher

    @classmethod
    def of(cls, launcher: Launcher) -> JobOperator:
        return cls(launcher.repository, launcher)

    @property
    def launcher(self) -> Launcher:
        if self._launcher is None:
            raise RuntimeError("this operator launches nothing: it has no launcher")
        return self._launcher

    async def start(
        self,
        job: str,
        raw_parameters: Mapping[str, str],
        *,
        rerun: bool,
        dry_run_output: TextIO | None = None,
    ) -> RunningJob:
        """Launch `job` (its path or Spring name) in the background. Raises UnknownJob,
        ParameterError, LaunchRefused or ShuttingDown."""
        launcher = self.launcher
        spec = launcher.find(job)
        return await launcher.launch(
            spec, raw_parameters, rerun=rerun, dry_run_output=dry_run_output
        )

    async def backfill(
        self, job: str, first: str, last: str, raw_parameters: Mapping[str, str], *, rerun: bool
    ) -> tuple[list[tuple[date, RunningJob]], list[tuple[date, LaunchRefused]]]:
        """Every date `first`..`last` (a backfill's from and to) launched as its own
        instance, beyond MAX_RUNNING_EXECUTIONS queued (STARTING): the runs and the
        refusals, by date. Raises UnknownJob, ParameterError or ShuttingDown."""
        days = backfill_dates(first, last)
        if "runDate" in raw_parameters:
            raise ParameterError("runDate", "give either runDate or from/to")
        launcher = self.launcher
        spec = launcher.find(job)
        if not spec.backfills:
            raise ParameterError("from", f"{spec.path} does not backfill: it takes no from, to")
        launched, refused = [], []
        for day in days:
            parameters = {**raw_parameters, "runDate": day.isoformat()}
            try:
                launched.append((day, await launcher.launch(spec, parameters, rerun=rerun)))
            except LaunchRefused as exc:
                refused.append((day, exc))
        return launched, refused

    async def restart(
        self, execution_id: int, *, automatic: AutomaticLaunch | None = None
    ) -> RunningJob:
        """A FAILED or STOPPED execution's instance runs again with the same parameters,
        from its checkpoint. Only the instance's last execution restarts, as in Spring
        Batch: one its instance ran on after is NotRestartable (JobRestartException), or
        refused by the launch rules if the instance is running or completed since.
        Raises NoSuchExecution, NotRestartable (also for an execution of a job this
        service does not run), LaunchRefused or ShuttingDown; an
        automatic restart (the scheduler's) passes what it was decided from."""
        launcher = self.launcher
        launcher.refuse_if_shutting_down()
        execution = await self.get(execution_id)
        latest = await self.repository.last_execution(execution.instance_id)
        refusal = restart_refusal(execution, latest)
        if refusal is not None:
            raise NotRestartable(refusal, execution.status)
        try:
            spec = launcher.find(execution.job_name)
        except UnknownJob:
            raise NotRestartable(
                f"execution {execution_id} is of {execution.job_name}, a job this service"
                f" does not run (it runs {', '.join(launcher.jobs)})",
                execution.status,
            ) from None
        parameters = await self.repository.get_parameters(execution_id)
        return await launcher.relaunch(spec, parameters, automatic=automatic)

    async def stop(self, execution_id: int) -> Stopped:
        """Stop the execution's run, wherever it is now (`stop_target`): a running one
        STOPPING in the job repository, for a runner on any replica (it reads it at its
        next chunk commit or heartbeat; a run of this process stops at once); a FAILED one
        awaiting its automatic restart STOPPED. Raises NoSuchExecution or NotRunning."""
        while True:  # again if the run moved on between the read and the change
            run = await self.repository.executions_since(execution_id)
            if not run:
                raise NoSuchExecution(f"no job execution {execution_id}")
            target = stop_target(run)
            if target.execution_id is None:
                raise NotRunning(self._not_running(execution_id, run, target), run[0][1])
            if target.status == Status.FAILED:
                if await self.repository.stop_failed(target.execution_id):
                    return Stopped(target.execution_id, Status.FAILED)
                continue
            found = await self.repository.request_stop(target.execution_id)
            if found in RUNNING:
                running = (
                    self._launcher.running.get(target.execution_id) if self._launcher else None
                )
                if running is not None:
                    running.request_stop(ON_REQUEST)
                return Stopped(target.execution_id, found)

    @staticmethod
    def _not_running(
        execution_id: int, run: Sequence[tuple[int, Status]], target: StopTarget
    ) -> str:
        (_, status), (latest, _) = run[0], run[-1]
        if latest == execution_id:
            return f"execution {execution_id} is {status}, not running"
        return (
            f"execution {execution_id} is {status}, not running; its run ended"
            f" {target.status} (execution {latest} is its instance's latest)"
        )

    async def abandon(self, execution_id: int) -> Status:
        """A STOPPED, FAILED or STOPPING execution becomes ABANDONED: never restarted, the
        next launch of its instance starts from scratch. The status it had; raises
        NoSuchExecution or NotAbandonable."""
        found = await self.repository.abandon(execution_id)
        if found is None:
            raise NoSuchExecution(f"no job execution {execution_id}")
        refusal = abandon_refusal(execution_id, found)
        if refusal is not None:
            raise NotAbandonable(refusal, found)
        return found

    async def get(self, execution_id: int) -> JobExecution:
        execution = await self.repository.get_execution(execution_id)
        if execution is None:
            raise NoSuchExecution(f"no job execution {execution_id}")
        return execution

    async def executions(
        self,
        *,
        job_name: str | None = None,
        status: str | None = None,
        run_date: date | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[JobExecution]:
        """The most recent executions, newest first, filtered as given."""
        return await self.repository.find_executions(
            job_name=job_name, status=status, run_date=run_date, before=before, limit=limit
        )
