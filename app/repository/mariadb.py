"""The job repository in MariaDB (or MySQL): the Spring Batch 5 metadata tables, shared
with the old Spring service.

Each write is a few table accesses (`app.repository.tables`) around the rules
(`app.repository.rules`). The launch rules run in one transaction that locks the
instance's row, so two processes launching the same instance at once are serialized and
exactly one of them runs. Every BATCH_* time is written and compared on one clock, the
database's (`app.repository.clock`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from asyncmy.connection import Connection
from asyncmy.cursors import Cursor

from app.edges.db import transaction
from app.model import (
    ABANDONABLE,
    RUNNING,
    AutomaticLaunch,
    ChunkCounts,
    JobExecution,
    JobParameter,
    Status,
    StepExecution,
)
from app.ports import JobRepository
from app.repository import rules, tables
from app.repository.explorer import MariaDbJobExplorer
from app.spring_format import encode_context, instance_keys


class MariaDbJobRepository(MariaDbJobExplorer, JobRepository):
    """The job repository's writes (and, as Spring Batch 6's JobRepository extends its
    JobExplorer, its reads)."""

    async def _instance_id(self, job_name: str, parameters: Sequence[JobParameter]) -> int:
        """The instance under the first of its keys found, else a new one under this
        service's own key."""
        keys = instance_keys(parameters)
        found = await tables.find_instance(self.pool, job_name, keys)
        return (
            found if found is not None else await tables.create_instance(self.pool, job_name, keys)
        )

    async def start_execution(
        self,
        job_name: str,
        parameters: Sequence[JobParameter],
        *,
        rerun_completed: bool,
        queued: bool = False,
        automatic: AutomaticLaunch | None = None,
    ) -> JobExecution:
        """Apply the launch rules and record a STARTED execution, or raise LaunchRefused.

        A live STARTED execution refuses the launch; one silent for longer than the
        abandon limit (neither its row nor a step updated) is marked FAILED first.
        FAILED and STOPPED instances restart (their steps resume from the checkpoint);
        COMPLETED ones run again only when `rerun_completed`. A `queued` execution is
        recorded STARTING (waiting for a slot of the process's MAX_RUNNING_EXECUTIONS)
        until `mark_started`. An `automatic` launch is checked against what it was decided
        from (Superseded) and its instance's counted executions (RestartLimitReached),
        under the instance's lock, so replicas deciding at once launch once and never
        exceed the bound.
        """
        instance_id = await self._instance_id(job_name, parameters)
        execution_id = await tables.next_id(self.pool, "BATCH_JOB_EXECUTION_SEQ")
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            latest = await tables.lock_latest(cur, instance_id)
            if latest is not None and latest[1] in RUNNING:
                idle = await tables.silence(cur, latest[0], self.clock.now())
                ended = rules.check_running(job_name, latest, idle, self.abandon_after_seconds)
                await self._end_abandoned(cur, latest[0], idle, ended)
            rules.check_completed(job_name, latest, rerun_completed)
            if automatic is not None:
                rules.check_automatic(job_name, latest, automatic)
                if automatic.max_executions is not None:
                    counted = await tables.counted_executions(cur, instance_id)
                    rules.check_bound(job_name, latest, automatic, counted)
            await tables.insert_execution(
                cur, execution_id, instance_id, parameters, queued=queued, now=self.clock.now()
            )
        execution = await self.get_execution(execution_id)
        assert execution is not None
        return execution

    async def _end_abandoned(
        self, cur: Cursor, execution_id: int, idle: float, status: Status, note: str = ""
    ) -> None:
        """End an execution whose runner is gone (and its steps) as `status`."""
        message = rules.abandoned_message(status, idle, self.abandon_after_seconds, note)
        await tables.end_running(cur, execution_id, status, message, self.clock.now())

    async def take_over(self, execution_id: int, note: str = "") -> Status | None:
        """End an execution whose lease expired, as its runner is gone: a STOPPING one
        STOPPED (the stop it was asked for), any other FAILED "abandoned" (restartable),
        its running steps with it; `note` is added to the message. The status set, or
        None when the execution is not (any more) expired: its runner renewed the lease
        or committed a chunk, or another replica took it over first (the row locks of the
        execution and its steps serialize them)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            status = await tables.lock_status(cur, execution_id)
            if status is None or status not in RUNNING:
                return None
            idle = await tables.silence(cur, execution_id, self.clock.now())
            if idle < self.abandon_after_seconds:
                return None
            ended = rules.taken_over_as(status)
            await self._end_abandoned(cur, execution_id, idle, ended, note)
            return ended

    async def heartbeat(self, execution_id: int) -> Status:
        """Renew the execution's lease (LAST_UPDATED) while it is alive; its status, in
        which the runner reads a stop request (STOPPING) or a lost lease (anything not
        running: another replica found the heartbeat stale and took the instance over)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                f"UPDATE BATCH_JOB_EXECUTION SET LAST_UPDATED = {self.clock.now()},"
                " VERSION = VERSION + 1"
                f" WHERE JOB_EXECUTION_ID = %s AND STATUS IN {tables.RUNNING_SQL}",
                (execution_id,),
            )
            await cur.execute(
                "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s",
                (execution_id,),
            )
            (status,) = await cur.fetchone()
            return Status(status)

    async def mark_started(self, execution_id: int) -> bool:
        """A queued (STARTING) execution got its slot: STARTED now. False if it was asked
        to stop meanwhile."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            now = self.clock.now()
            await cur.execute(
                f"UPDATE BATCH_JOB_EXECUTION SET STATUS = 'STARTED', START_TIME = {now},"
                f" LAST_UPDATED = {now}, VERSION = VERSION + 1"
                " WHERE JOB_EXECUTION_ID = %s AND STATUS = 'STARTING'",
                (execution_id,),
            )
            return bool(cur.rowcount)

    async def request_stop(self, execution_id: int) -> Status | None:
        """Ask a running execution to stop: STOPPING, which its runner, on whichever
        replica, reads at its next chunk commit or heartbeat. The status it had (None: no
        such execution); only a running one changes (a STOPPING one stays so). The lease
        is not renewed: a row whose runner is gone still expires (and ends STOPPED)."""
        return await self._transition(
            execution_id, RUNNING, "STATUS = 'STOPPING', VERSION = VERSION + 1"
        )

    async def stop_failed(self, execution_id: int) -> bool:
        """A stop of a run that ended FAILED and awaits its automatic restart (or resume):
        STOPPED, the operator's word, which no automatic launch restarts; restartable by
        an operator from its checkpoint. Only while it is its instance's latest execution
        and FAILED, checked under the instance's lock (an automatic launch takes it too);
        False otherwise."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            latest = await tables.lock_latest_of_execution(cur, execution_id)
            if not rules.stop_failed_allowed(latest, execution_id):
                return False
            await tables.stop_failed_rows(cur, execution_id, self.clock.now())
            return True

    async def abandon(self, execution_id: int) -> Status | None:
        """Spring Batch's abandon, written as its SimpleJobOperator.abandon writes it: a
        STOPPED, FAILED or STOPPING execution becomes ABANDONED with END_TIME now, its
        EXIT_CODE and EXIT_MESSAGE kept and its step rows untouched. Never restarted: the
        next launch of its instance here starts from scratch (Spring refuses it); a
        runner still alive reads it as a lost lease. The status it had (None: no such
        execution)."""
        now = self.clock.now()
        return await self._transition(
            execution_id,
            ABANDONABLE,
            f"STATUS = 'ABANDONED', END_TIME = {now}, LAST_UPDATED = {now}, VERSION = VERSION + 1",
        )

    async def _transition(
        self, execution_id: int, allowed: tuple[Status, ...], assignments: str
    ) -> Status | None:
        """Apply `assignments` to the execution's row if its status is `allowed`; the
        status it had (None: no such execution)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            status = await tables.lock_status(cur, execution_id)
            if status in allowed:
                await cur.execute(
                    f"UPDATE BATCH_JOB_EXECUTION SET {assignments} WHERE JOB_EXECUTION_ID = %s",
                    (execution_id,),
                )
            return status

    async def finish_execution(
        self, execution_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None:
        await self._finish(
            "BATCH_JOB_EXECUTION", "JOB_EXECUTION_ID", execution_id, status, message, exit_code
        )

    async def finish_step(
        self, step_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None:
        await self._finish(
            "BATCH_STEP_EXECUTION", "STEP_EXECUTION_ID", step_id, status, message, exit_code
        )

    async def _finish(
        self,
        table: str,
        id_column: str,
        row_id: int,
        status: Status,
        message: str,
        exit_code: str | None,
    ) -> None:
        """Record the end (EXIT_CODE is the status unless said otherwise), unless another
        replica has taken the execution over meanwhile."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await tables.finish(
                cur,
                table,
                id_column,
                row_id,
                status,
                exit_code or status.value,
                message,
                self.clock.now(),
            )

    async def finish_interrupted(
        self, execution_id: int, step_id: int | None, message: str, stopped: str
    ) -> Status | None:
        """Record the end of a run cut by a shutdown (its step's too): FAILED, EXIT_CODE
        INTERRUPTED, `message`; but STOPPED, `stopped`, where an operator asked it to stop
        (STOPPING) before the runner read it: a stop is never lost. The status recorded;
        None where another replica has taken the execution over meanwhile."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            found = await tables.lock_status(cur, execution_id)
            if found is None or found not in RUNNING:
                return None
            status, exit_code, text = rules.interrupted_end(found, message, stopped)
            ended = [("BATCH_JOB_EXECUTION", "JOB_EXECUTION_ID", execution_id)]
            if step_id is not None:
                ended.insert(0, ("BATCH_STEP_EXECUTION", "STEP_EXECUTION_ID", step_id))
            now = self.clock.now()
            for table, id_column, row_id in ended:
                await tables.finish(cur, table, id_column, row_id, status, exit_code, text, now)
            return status

    async def set_execution_context(self, execution_id: int, context: dict[str, Any]) -> None:
        await tables.execute(
            self.pool,
            "UPDATE BATCH_JOB_EXECUTION_CONTEXT SET SHORT_CONTEXT = %s, SERIALIZED_CONTEXT = %s"
            " WHERE JOB_EXECUTION_ID = %s",
            (*encode_context(context), execution_id),
        )

    async def start_step(self, execution: JobExecution, step_name: str) -> StepExecution:
        """Record a step execution. It resumes from the checkpoint of this instance's last
        execution of the step when that one is FAILED or STOPPED, its job execution was
        not abandoned, and the checkpoint is its own: written by this service for that
        very step execution (CHECKPOINT_OWNER), not copied into it by Spring's restart.
        Otherwise it starts from scratch (a rerun of a completed step, a resume across
        the two implementations)."""
        found = await tables.previous_step(
            self.pool, execution.instance_id, step_name, execution.id
        )
        checkpoint = rules.resume_checkpoint(*found) if found else None
        step_id = await tables.next_id(self.pool, "BATCH_STEP_EXECUTION_SEQ")
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await tables.insert_step(
                cur, step_id, step_name, execution.id, checkpoint, self.clock.now()
            )
        return StepExecution(
            id=step_id,
            job_execution_id=execution.id,
            name=step_name,
            status=Status.STARTED,
            checkpoint=checkpoint,
        )

    @asynccontextmanager
    async def chunk_transaction(self) -> AsyncIterator[MariaDbChunkTransaction]:
        """A chunk's unit of work: one database transaction, in which the writer writes
        and `commit_chunk` records the chunk; committed when the block ends, rolled back
        if it raises."""
        async with transaction(self.pool) as conn:
            yield MariaDbChunkTransaction(self, conn)

    async def commit_chunk(
        self,
        conn: Connection,
        step_id: int,
        counts: ChunkCounts,
        context: dict[str, Any],
        commits_before: int,
    ) -> Status:
        """Record a chunk's counts and the step's context (its checkpoint) inside the
        caller's (the chunk's) transaction; the job execution's status, in which the
        runner reads a stop requested through any replica (STOPPING) at once. Two
        fences: the step and its job execution still running (once another replica has
        taken the execution over, or an operator abandoned it, LeaseLost), and its
        COMMIT_COUNT still `commits_before` (an attempt whose answer was lost may have
        committed the chunk already: AlreadyCommitted). Either way the chunk's
        transaction rolls back, its writes with it, so a chunk counts and writes once."""
        async with conn.cursor() as cur:
            if not await tables.add_chunk(cur, step_id, counts, commits_before, self.clock.now()):
                rules.check_commit(step_id, *await tables.step_state(cur, step_id), commits_before)
            await tables.write_step_context(cur, step_id, context)
            return rules.check_job_running(step_id, await tables.job_status_of_step(cur, step_id))


class MariaDbChunkTransaction:
    """A chunk's unit of work in MariaDB: the chunk's transaction's connection, where a
    database writer writes, and the chunk's record in it."""

    def __init__(self, repository: MariaDbJobRepository, connection: Connection) -> None:
        self._repository = repository
        self.connection = connection

    async def commit_chunk(
        self, step_id: int, counts: ChunkCounts, context: dict[str, Any], commits_before: int
    ) -> Status:
        """`MariaDbJobRepository.commit_chunk` in this transaction."""
        return await self._repository.commit_chunk(
            self.connection, step_id, counts, context, commits_before
        )
