"""The engine's ports: what the step runner, the launcher, the operator, the scheduler and
the reconciler need of the job repository, the peers and the broker, as Protocols.

The job repository has two implementations under the same rules (`app.repository.rules`):
MariaDB's (`app.repository.mariadb`, the service's) and one in memory
(`app.repository.memory`, for tests of the engine's rules in milliseconds), as Spring
Batch has its JDBC and its resourceless job repositories.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Protocol

from asyncmy.connection import Connection

from app.model import (
    AutomaticLaunch,
    ChunkCounts,
    InstanceSummary,
    JobExecution,
    JobParameter,
    JobTally,
    Status,
    StepExecution,
)

if TYPE_CHECKING:  # a type only: a job that publishes nothing loads no AMQP
    from app.edges.broker import OutgoingMessage


class ChunkTransaction(Protocol):
    """A chunk's unit of work: the writer's writes and the chunk's record commit together,
    or neither does (the block that holds it raises)."""

    @property
    def connection(self) -> Connection:
        """Where a database writer writes the chunk's rows."""
        ...

    async def commit_chunk(
        self, step_id: int, counts: ChunkCounts, context: dict[str, Any], commits_before: int
    ) -> Status:
        """Record the chunk's counts and the step's context (its checkpoint); the job
        execution's status (STOPPING: a stop was asked for). Raises AlreadyCommitted where
        the step has more than `commits_before` commits already, LeaseLost where the step
        or its job execution runs no more."""
        ...


class JobExplorer(Protocol):
    """The job repository's reads that the engine, the API and the metrics make."""

    async def clock_zone(self) -> tzinfo: ...

    async def database_now(self) -> datetime: ...

    async def get_execution(self, execution_id: int) -> JobExecution | None: ...

    async def last_execution(self, instance_id: int) -> JobExecution: ...

    async def latest_executions(self, instance_ids: Collection[int]) -> dict[int, int]: ...

    async def find_executions(
        self,
        *,
        job_name: str | None = None,
        status: str | None = None,
        run_date: date | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[JobExecution]: ...

    async def get_parameters(self, execution_id: int) -> list[JobParameter]: ...

    async def executions_since(self, execution_id: int) -> list[tuple[int, Status]]: ...

    async def instance_status(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> Status | None: ...

    async def first_execution_time(self, job_name: str) -> datetime | None: ...

    async def instance_summary(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> InstanceSummary | None: ...

    async def resumable_instances(
        self, job_names: Sequence[str], within: timedelta
    ) -> list[InstanceSummary]: ...

    async def expired_executions(self) -> list[JobExecution]: ...

    async def second_clock_warnings(self, declared: str) -> list[str]: ...

    async def job_tallies(self) -> list[JobTally]: ...


class JobRepository(JobExplorer, Protocol):
    """The job repository: the launch rules, the lease, the status transitions and the
    chunk commits (Spring Batch 6's JobRepository extends its JobExplorer too)."""

    async def start_execution(
        self,
        job_name: str,
        parameters: Sequence[JobParameter],
        *,
        rerun_completed: bool,
        queued: bool = False,
        automatic: AutomaticLaunch | None = None,
    ) -> JobExecution: ...

    async def mark_started(self, execution_id: int) -> bool: ...

    async def set_execution_context(self, execution_id: int, context: dict[str, Any]) -> None: ...

    async def start_step(self, execution: JobExecution, step_name: str) -> StepExecution: ...

    def chunk_transaction(self) -> AbstractAsyncContextManager[ChunkTransaction]: ...

    async def heartbeat(self, execution_id: int) -> Status: ...

    async def take_over(self, execution_id: int, note: str = "") -> Status | None: ...

    async def request_stop(self, execution_id: int) -> Status | None: ...

    async def stop_failed(self, execution_id: int) -> bool: ...

    async def abandon(self, execution_id: int) -> Status | None: ...

    async def finish_step(
        self, step_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None: ...

    async def finish_execution(
        self, execution_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None: ...

    async def finish_interrupted(
        self, execution_id: int, step_id: int | None, message: str, stopped: str
    ) -> Status | None: ...


class Peers(Protocol):
    """The peer services' lookups (`app.edges.peers.PeerClient`)."""

    def preload(self) -> None:
        """Get ready, without waiting, for a first lookup soon (its client's imports)."""

    async def store_dongs(self, store_ids: Collection[int]) -> dict[int, str]: ...

    async def stores_by_dong(self, dongs: Collection[str]) -> dict[str, list[int]]: ...

    async def fcm_tokens(self, member_ids: Collection[int]) -> dict[int, list[str]]: ...


class Publisher(Protocol):
    """Publishes with confirms (`app.edges.broker.Broker`)."""

    @property
    def dependency(self) -> str:
        """What an outage of it is logged as."""
        ...

    async def publish(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        """Publish `messages`; those whose confirmation was lost (to publish again)."""
        ...
