"""The job repository's vocabulary as plain values: statuses, parameters, executions, counts.

Spring Batch's meanings: a job instance is a job name plus its identifying parameters;
each launch of it is a job execution, with one step execution per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.errors import EXIT_REFUSED, Refusal


class Status(StrEnum):
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    ABANDONED = "ABANDONED"
    # Spring's: an execution whose end could not be recorded (a failed rollback). Neither
    # running nor restartable here: the next launch of its instance runs a new execution.
    UNKNOWN = "UNKNOWN"


# An execution in one of these is alive (or was, until its heartbeat stopped).
RUNNING = (Status.STARTING, Status.STARTED, Status.STOPPING)
# An execution in one of these may restart from its checkpoint, or be abandoned.
RESTARTABLE = (Status.FAILED, Status.STOPPED)
# An execution in one of these may be abandoned: Spring's JobOperator also abandons a
# STOPPING one (its runner may be gone).
ABANDONABLE = (*RESTARTABLE, Status.STOPPING)
# A COMPLETED execution whose step skipped items: Spring Batch's own example of an exit code
# of its own beside the status.
COMPLETED_WITH_SKIPS = "COMPLETED WITH SKIPS"
# A FAILED execution cut by a shutdown (SIGTERM/SIGINT of `serve` or of a CLI run), not by a
# fault of its own nor by an operator (whose word is STOPPED): resumed by the automatic
# launches, and not counted against AUTO_RESTART_ATTEMPTS. STATUS stays a BatchStatus
# (FAILED), so Spring Batch restarts it as any FAILED one.
INTERRUPTED = "INTERRUPTED"


@dataclass(frozen=True)
class JobParameter:
    name: str
    type: str  # the Java type Spring records, e.g. java.time.LocalDate
    value: str
    identifying: bool = True


@dataclass
class StepExecution:
    id: int
    job_execution_id: int
    name: str
    status: Status
    checkpoint: Any = None
    read_count: int = 0
    write_count: int = 0
    filter_count: int = 0
    skip_count: int = 0
    commit_count: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_message: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # checkpoint, skipped ids, messages


@dataclass
class JobExecution:
    id: int
    instance_id: int
    job_name: str
    status: Status
    parameters: dict[str, str]
    create_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: str = ""
    exit_message: str = ""
    last_updated: datetime | None = None
    steps: list[StepExecution] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)  # where a dry run writes

    @property
    def dry_run(self) -> bool:
        return self.parameters.get("dryRun") == "true"


@dataclass(frozen=True)
class ChunkCounts:
    read: int
    written: int
    filtered: int
    skipped: int


@dataclass(frozen=True)
class InstanceSummary:
    """One job instance as the automatic launches read it: its latest execution, and how
    many of its executions count against the automatic attempts."""

    instance_id: int
    job_name: str
    latest: int  # the latest execution's id
    status: Status  # and its status, exit code, end (None: never recorded) and parameters
    exit_code: str
    end_time: datetime | None
    parameters: dict[str, str]
    counted: int  # executions, the interrupted ones (INTERRUPTED) left out

    @property
    def interrupted(self) -> bool:
        return self.status == Status.FAILED and self.exit_code == INTERRUPTED

    @property
    def dry_run(self) -> bool:
        return self.parameters.get("dryRun") == "true"


@dataclass(frozen=True)
class AutomaticLaunch:
    """What an automatic launch decided from, checked again under the instance's lock:
    the instance's latest execution is still `after` (None: it had none) and FAILED, and
    the instance has fewer than `max_executions` counted executions (None: no bound, as
    for the resume of an interrupted run). A launch decided from an older read is refused
    (Superseded), so two replicas deciding at once launch once, and never early."""

    after: int | None
    max_executions: int | None


class LaunchRefused(Refusal):
    """The launch rules refuse a launch; `execution_id` is the execution that stands in
    its way (the API's Location)."""

    code = "LAUNCH_REFUSED"
    http_status = 409
    exit_code = EXIT_REFUSED

    def __init__(self, message: str, execution_id: int) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class AlreadyRunning(LaunchRefused):
    """A live execution of the same instance is running."""

    code = "JOB_ALREADY_RUNNING"


class AlreadyComplete(LaunchRefused):
    """The instance completed and the launch did not ask for a rerun."""

    code = "JOB_ALREADY_COMPLETE"


class Superseded(LaunchRefused):
    """An automatic launch whose decision is out of date: the instance was launched,
    stopped or abandoned since it was read."""

    code = "LAUNCH_SUPERSEDED"


class RestartLimitReached(LaunchRefused):
    """An automatic launch of an instance that has run its share of executions already
    (1 + AUTO_RESTART_ATTEMPTS, counted across replicas)."""

    code = "RESTART_LIMIT_REACHED"


@dataclass(frozen=True)
class JobTally:
    """One job's executions as the job repository holds them: every process's, the CLI's
    and every replica's."""

    job_name: str
    executions: dict[Status, int]  # by status
    # Instances whose latest execution is FAILED or STOPPED (restartable, not yet
    # restarted or abandoned), by that status.
    unrecovered: dict[Status, int]
    last_start: datetime | None
    last_success: datetime | None  # the end of the latest COMPLETED execution
