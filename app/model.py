"""The job repository's vocabulary as plain values: statuses, parameters, executions, counts.

Spring Batch's meanings: a job instance is a job name plus its identifying parameters;
each launch of it is a job execution, with one step execution per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


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


class LaunchRefused(Exception):
    def __init__(self, message: str, execution_id: int) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class AlreadyRunning(LaunchRefused):
    """A live execution of the same instance is running."""


class AlreadyComplete(LaunchRefused):
    """The instance completed and the launch did not ask for a rerun."""


class RestartLimitReached(LaunchRefused):
    """An automatic launch of an instance that has run its share of executions already
    (1 + AUTO_RESTART_ATTEMPTS, counted across replicas)."""


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
