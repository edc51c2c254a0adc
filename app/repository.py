"""The job repository: the one place that knows the Spring Batch 5 metadata tables.

A job instance is a job name plus its identifying parameters; each launch of it is
a job execution with one step execution per step. Launch rules run in a single
transaction that locks the instance row, so two processes launching the same
instance at once are serialized and exactly one of them runs. All times come from
the database clock, so replicas with skewed clocks agree on heartbeats.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime, timedelta, timezone
from itertools import groupby
from typing import Any

from asyncmy.connection import Connection
from asyncmy.errors import IntegrityError

from app.edges.db import DbPool, fetch_all, transaction
from app.model import (
    ABANDONABLE,
    RESTARTABLE,
    RUNNING,
    AlreadyComplete,
    AlreadyRunning,
    ChunkCounts,
    JobExecution,
    JobParameter,
    JobTally,
    RestartLimitReached,
    Status,
    StepExecution,
)
from app.spring_format import decode_context, encode_context, instance_keys

_MESSAGE_LIMIT = 2500  # EXIT_MESSAGE is VARCHAR(2500)
_RUNNING_SQL = "(" + ", ".join(f"'{status.value}'" for status in RUNNING) + ")"


class AlreadyCommitted(Exception):
    """This chunk's commit took effect already: an earlier attempt's COMMIT applied though
    its answer was lost (a stall). The retry's transaction rolls back, its writes with it."""


class LeaseLost(Exception):
    """This runner's execution is no longer running: another replica found its heartbeat
    stale and took the instance over. Nothing more may be committed for it."""


# Set before STATUS: MariaDB and MySQL assign left to right, so it reads the old status.
_ABANDONED_MESSAGE = (
    "EXIT_MESSAGE = LEFT(CONCAT('abandoned on request (was ', STATUS, '); never restarted',"
    " IF(STATUS = 'FAILED' AND EXIT_MESSAGE <> '', CONCAT('; it had failed: ', EXIT_MESSAGE),"
    f" '')), {_MESSAGE_LIMIT}), "
)


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


async def _next_id(pool: DbPool, sequence: str) -> int:
    """Spring's MySQLMaxValueIncrementer: its own transaction, committed at once, so the
    sequence row is locked for a moment, not for the caller's transaction (both services
    draw from the same sequences). Taken before the caller's transaction opens, so a
    caller never holds two pool connections; an id a refused launch drew is left unused."""
    async with transaction(pool) as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE {sequence} SET ID = LAST_INSERT_ID(ID + 1) LIMIT 1")
        await cur.execute("SELECT LAST_INSERT_ID()")
        (value,) = await cur.fetchone()
        return int(value)


_EXECUTION_COLUMNS = (
    "e.JOB_EXECUTION_ID, e.JOB_INSTANCE_ID, i.JOB_NAME, e.STATUS, e.CREATE_TIME, e.START_TIME,"
    " e.END_TIME, e.EXIT_CODE, e.EXIT_MESSAGE, e.LAST_UPDATED, x.SHORT_CONTEXT,"
    " x.SERIALIZED_CONTEXT"
)
_STEP_COLUMNS = (
    "s.STEP_EXECUTION_ID, s.JOB_EXECUTION_ID, s.STEP_NAME, s.STATUS, c.SHORT_CONTEXT,"
    " s.READ_COUNT, s.WRITE_COUNT, s.FILTER_COUNT,"
    " s.READ_SKIP_COUNT + s.PROCESS_SKIP_COUNT + s.WRITE_SKIP_COUNT, s.COMMIT_COUNT,"
    " s.START_TIME, s.END_TIME, s.EXIT_MESSAGE, c.SERIALIZED_CONTEXT"
)


def _on(clock: timezone, value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=clock) if value is not None else None


def _tally(job_name: str, rows: list[tuple], clock: timezone) -> JobTally:
    """A job's tally from its rows of `job_tallies`' read, one per status."""
    starts = [row[4] for row in rows if row[4] is not None]
    successes = [row[5] for row in rows if row[1] == Status.COMPLETED]
    return JobTally(
        job_name=job_name,
        executions={Status(row[1]): int(row[2]) for row in rows},
        unrecovered={Status(row[1]): int(row[3]) for row in rows if row[1] in RESTARTABLE},
        last_start=_on(clock, max(starts, default=None)),
        last_success=_on(clock, successes[0] if successes else None),
    )


def _step_from_row(row: tuple) -> StepExecution:
    context = decode_context(row[4], row[13])
    return StepExecution(
        id=row[0],
        job_execution_id=row[1],
        name=row[2],
        status=Status(row[3]),
        checkpoint=context.get("checkpoint"),
        read_count=row[5],
        write_count=row[6],
        filter_count=row[7],
        skip_count=int(row[8]),
        commit_count=row[9],
        start_time=row[10],
        end_time=row[11],
        exit_message=row[12] or "",
        context=context,
    )


class JobRepository:
    def __init__(self, pool: DbPool, *, abandon_after_seconds: int) -> None:
        self.pool = pool
        self.abandon_after_seconds = abandon_after_seconds
        self._clock: timezone | None = None

    async def _database_clock(self) -> timezone:
        """The offset of the database's NOW(6), which wrote every BATCH_* time: the times
        read back carry it, so that every time the service shows has its offset."""
        if self._clock is None:
            [(seconds,)] = await fetch_all(
                self.pool, "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6), NOW(6))"
            )
            self._clock = timezone(timedelta(minutes=round(int(seconds) / 60)))
        return self._clock

    async def start_execution(
        self,
        job_name: str,
        parameters: Sequence[JobParameter],
        *,
        rerun_completed: bool,
        queued: bool = False,
        max_executions: int | None = None,
    ) -> JobExecution:
        """Apply the launch rules and record a STARTED execution, or raise LaunchRefused.

        A live STARTED execution refuses the launch; one whose heartbeat is older than
        the abandon limit is marked FAILED first. FAILED and STOPPED instances restart
        (their steps resume from the checkpoint); COMPLETED ones run again only when
        `rerun_completed`. A `queued` execution is recorded STARTING (waiting for a slot of
        the process's MAX_RUNNING_EXECUTIONS) until `mark_started`. With `max_executions`
        (an automatic launch), an instance that has that many executions already is
        refused (RestartLimitReached): counted under the instance's lock, so replicas
        restarting it at once never exceed it.
        """
        status = Status.STARTING if queued else Status.STARTED
        instance_id = await self._instance_id(job_name, parameters)
        execution_id = await _next_id(self.pool, "BATCH_JOB_EXECUTION_SEQ")
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE"
                " WHERE JOB_INSTANCE_ID = %s FOR UPDATE",
                (instance_id,),
            )
            await cur.execute(
                "SELECT JOB_EXECUTION_ID, STATUS, TIMESTAMPDIFF(MICROSECOND, LAST_UPDATED, NOW(6))"
                " FROM BATCH_JOB_EXECUTION WHERE JOB_INSTANCE_ID = %s"
                " ORDER BY JOB_EXECUTION_ID DESC LIMIT 1 FOR UPDATE",
                (instance_id,),
            )
            last = await cur.fetchone()
            if last is not None:
                last_id, last_status, idle_us = last
                if last_status in RUNNING:
                    idle = (idle_us or 0) / 1e6
                    if idle < self.abandon_after_seconds:
                        raise AlreadyRunning(
                            f"{job_name} is already running as execution {last_id}", last_id
                        )
                    ended = Status.STOPPED if last_status == Status.STOPPING else Status.FAILED
                    await self._mark_abandoned(conn, last_id, idle, ended)
                elif last_status == Status.COMPLETED and not rerun_completed:
                    raise AlreadyComplete(
                        f"{job_name} already completed as execution {last_id}", last_id
                    )
                if max_executions is not None:
                    await cur.execute(
                        "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION WHERE JOB_INSTANCE_ID = %s",
                        (instance_id,),
                    )
                    (count,) = await cur.fetchone()
                    if count >= max_executions:
                        raise RestartLimitReached(
                            f"{job_name} has run {count} executions of this instance already"
                            f" (at most {max_executions} automatically); not restarted",
                            last_id,
                        )
            await cur.execute(
                "INSERT INTO BATCH_JOB_EXECUTION (JOB_EXECUTION_ID, VERSION, JOB_INSTANCE_ID,"
                " CREATE_TIME, START_TIME, STATUS, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
                " VALUES (%s, 0, %s, NOW(6), IF(%s, NULL, NOW(6)), %s, 'UNKNOWN', '', NOW(6))",
                (execution_id, instance_id, queued, status.value),
            )
            await cur.executemany(
                "INSERT INTO BATCH_JOB_EXECUTION_PARAMS (JOB_EXECUTION_ID, PARAMETER_NAME,"
                " PARAMETER_TYPE, PARAMETER_VALUE, IDENTIFYING) VALUES (%s, %s, %s, %s, %s)",
                [
                    (execution_id, p.name, p.type, p.value, "Y" if p.identifying else "N")
                    for p in parameters
                ],
            )
            await cur.execute(
                "INSERT INTO BATCH_JOB_EXECUTION_CONTEXT"
                " (JOB_EXECUTION_ID, SHORT_CONTEXT, SERIALIZED_CONTEXT) VALUES (%s, %s, %s)",
                (execution_id, *encode_context({})),
            )
        execution = await self.get_execution(execution_id)
        assert execution is not None
        return execution

    async def _find_instance(self, job_name: str, keys: Sequence[str]) -> int | None:
        """The instance under the first of `keys` found (the old Spring service's, with
        the parameter types it may have used, or this service's legacy key)."""
        found = dict(
            await fetch_all(
                self.pool,
                "SELECT JOB_KEY, JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE WHERE JOB_NAME = %s"
                f" AND JOB_KEY IN ({', '.join(['%s'] * len(keys))})",
                (job_name, *keys),
            )
        )
        return next((int(found[key]) for key in keys if key in found), None)

    async def _instance_id(self, job_name: str, parameters: Sequence[JobParameter]) -> int:
        """The instance under the first of its keys found, else a new one under this
        service's own key."""
        keys = instance_keys(parameters)
        instance_id = await self._find_instance(job_name, keys)
        if instance_id is not None:
            return instance_id
        instance_id = await _next_id(self.pool, "BATCH_JOB_SEQ")
        try:
            async with transaction(self.pool) as conn, conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO BATCH_JOB_INSTANCE (JOB_INSTANCE_ID, VERSION, JOB_NAME, JOB_KEY)"
                    " VALUES (%s, 0, %s, %s)",
                    (instance_id, job_name, keys[0]),
                )
                return instance_id
        except IntegrityError:  # another process created it a moment ago
            raced = await self._find_instance(job_name, keys)
            assert raced is not None
            return raced

    async def instance_status(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> Status | None:
        """The status of the instance's latest execution; None: no such instance."""
        instance_id = await self._find_instance(job_name, instance_keys(parameters))
        if instance_id is None:
            return None
        rows = await fetch_all(
            self.pool,
            "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_INSTANCE_ID = %s"
            " ORDER BY JOB_EXECUTION_ID DESC LIMIT 1",
            (instance_id,),
        )
        return Status(rows[0][0]) if rows else None

    async def _mark_abandoned(
        self,
        conn: Connection,
        execution_id: int,
        idle: float,
        status: Status = Status.FAILED,
        note: str = "",
    ) -> None:
        """End an execution whose runner is gone (and its steps): FAILED, "abandoned",
        unless `status` says otherwise; `note` is added to the message."""
        what = "abandoned" if status == Status.FAILED else "stopped on request, its runner gone"
        message = (
            f"{what}: no heartbeat for {idle:.0f} s"
            f" (JOB_ABANDON_AFTER_SECONDS={self.abandon_after_seconds})"
            + (f"; {note}" if note else "")
        )
        async with conn.cursor() as cur:
            for table in ("BATCH_JOB_EXECUTION", "BATCH_STEP_EXECUTION"):
                await cur.execute(
                    f"UPDATE {table} SET STATUS = %s, EXIT_CODE = %s,"
                    " EXIT_MESSAGE = %s, END_TIME = NOW(6), LAST_UPDATED = NOW(6),"
                    " VERSION = VERSION + 1"
                    f" WHERE JOB_EXECUTION_ID = %s AND STATUS IN {_RUNNING_SQL}",
                    (status.value, status.value, _clip(message), execution_id),
                )

    async def expired_executions(self) -> list[JobExecution]:
        """Executions still recorded running (STARTING, STARTED, STOPPING) whose lease
        expired: no heartbeat for JOB_ABANDON_AFTER_SECONDS, by the database clock."""
        return await self._executions(
            f"e.STATUS IN {_RUNNING_SQL} AND e.LAST_UPDATED < NOW(6) - INTERVAL %s MICROSECOND",
            (int(self.abandon_after_seconds * 1e6),),
            limit=100,
        )

    async def take_over(self, execution_id: int, note: str = "") -> Status | None:
        """End an execution whose lease expired, as its runner is gone: a STOPPING one
        STOPPED (the stop it was asked for), any other FAILED "abandoned" (restartable);
        `note` is added to the message. The status set, or None when the execution is
        not (any more) expired: its runner renewed the lease, or another replica took it
        over first (the row lock serializes them)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT STATUS, TIMESTAMPDIFF(MICROSECOND, LAST_UPDATED, NOW(6))"
                " FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None or row[0] not in RUNNING:
                return None
            idle = (row[1] or 0) / 1e6
            if idle < self.abandon_after_seconds:
                return None
            ended = Status.STOPPED if row[0] == Status.STOPPING else Status.FAILED
            await self._mark_abandoned(conn, execution_id, idle, ended, note)
            return ended

    async def heartbeat(self, execution_id: int) -> Status:
        """Renew the execution's lease (LAST_UPDATED) while it is alive; its status, in
        which the runner reads a stop request (STOPPING) or a lost lease (anything not
        running: another replica found the heartbeat stale and took the instance over)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE BATCH_JOB_EXECUTION SET LAST_UPDATED = NOW(6), VERSION = VERSION + 1"
                f" WHERE JOB_EXECUTION_ID = %s AND STATUS IN {_RUNNING_SQL}",
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
            await cur.execute(
                "UPDATE BATCH_JOB_EXECUTION SET STATUS = 'STARTED', START_TIME = NOW(6),"
                " LAST_UPDATED = NOW(6), VERSION = VERSION + 1"
                " WHERE JOB_EXECUTION_ID = %s AND STATUS = 'STARTING'",
                (execution_id,),
            )
            return bool(cur.rowcount)

    async def request_stop(self, execution_id: int) -> Status | None:
        """Ask a running execution to stop: STOPPING, which its runner, on whichever
        replica, reads at its next chunk commit or heartbeat. The status it had (None: no
        such execution); only a running one changes (a STOPPING one stays so). The lease
        is not renewed: a row whose runner is gone still expires (and ends STOPPED)."""
        return await self._transition(execution_id, RUNNING, Status.STOPPING, steps=False)

    async def abandon(self, execution_id: int) -> Status | None:
        """Spring Batch's abandon: a STOPPED, FAILED or STOPPING execution becomes
        ABANDONED, never restarted; the next launch of its instance starts from scratch
        (a runner still alive reads it as a lost lease). The status it had (None: no
        such execution)."""
        return await self._transition(execution_id, ABANDONABLE, Status.ABANDONED, steps=True)

    async def _transition(
        self, execution_id: int, allowed: tuple[Status, ...], to: Status, *, steps: bool
    ) -> Status | None:
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            status = Status(row[0])
            if status in allowed:
                tables = ["BATCH_JOB_EXECUTION"] + (["BATCH_STEP_EXECUTION"] if steps else [])
                # An abandoned execution's exit code and message say so (the message keeps
                # a failure's cause), and it has ended; a stopping one's stay EXECUTING
                # until its runner records the end, and its lease is the runner's to renew.
                ended = to == Status.ABANDONED
                for table in tables:
                    await cur.execute(
                        f"UPDATE {table} SET "
                        + (_ABANDONED_MESSAGE if ended else "")
                        + "STATUS = %s, VERSION = VERSION + 1"
                        + (
                            ", EXIT_CODE = STATUS, END_TIME = COALESCE(END_TIME, NOW(6)),"
                            " LAST_UPDATED = NOW(6)"
                            if ended
                            else ""
                        )
                        + " WHERE JOB_EXECUTION_ID = %s",
                        (to.value, execution_id),
                    )
            return status

    async def finish_execution(
        self, execution_id: int, status: Status, message: str = "", exit_code: str | None = None
    ) -> None:
        await self._finish(
            "BATCH_JOB_EXECUTION", "JOB_EXECUTION_ID", execution_id, status, message, exit_code
        )

    async def set_execution_context(self, execution_id: int, context: dict[str, Any]) -> None:
        await self._execute(
            "UPDATE BATCH_JOB_EXECUTION_CONTEXT SET SHORT_CONTEXT = %s, SERIALIZED_CONTEXT = %s"
            " WHERE JOB_EXECUTION_ID = %s",
            (*encode_context(context), execution_id),
        )

    async def get_parameters(self, execution_id: int) -> list[JobParameter]:
        """The execution's parameters as recorded, with their types: what a restart uses."""
        rows = await fetch_all(
            self.pool,
            "SELECT PARAMETER_NAME, PARAMETER_TYPE, PARAMETER_VALUE, IDENTIFYING"
            " FROM BATCH_JOB_EXECUTION_PARAMS WHERE JOB_EXECUTION_ID = %s",
            (execution_id,),
        )
        return [JobParameter(name, kind, value, flag == "Y") for name, kind, value, flag in rows]

    async def start_step(self, execution: JobExecution, step_name: str) -> StepExecution:
        """Record a step execution; it resumes from the checkpoint of this instance's last
        execution of the step unless that one completed (then this is a fresh rerun)."""
        rows = await fetch_all(
            self.pool,
            f"SELECT {_STEP_COLUMNS} FROM BATCH_STEP_EXECUTION s"
            " JOIN BATCH_JOB_EXECUTION e ON e.JOB_EXECUTION_ID = s.JOB_EXECUTION_ID"
            " LEFT JOIN BATCH_STEP_EXECUTION_CONTEXT c ON c.STEP_EXECUTION_ID = s.STEP_EXECUTION_ID"
            " WHERE e.JOB_INSTANCE_ID = %s AND s.STEP_NAME = %s AND s.JOB_EXECUTION_ID < %s"
            " ORDER BY s.STEP_EXECUTION_ID DESC LIMIT 1",
            (execution.instance_id, step_name, execution.id),
        )
        previous = _step_from_row(rows[0]) if rows else None
        checkpoint = None
        if previous is not None and previous.status in RESTARTABLE:
            checkpoint = previous.checkpoint
        step_id = await _next_id(self.pool, "BATCH_STEP_EXECUTION_SEQ")
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO BATCH_STEP_EXECUTION (STEP_EXECUTION_ID, VERSION, STEP_NAME,"
                " JOB_EXECUTION_ID, CREATE_TIME, START_TIME, STATUS, COMMIT_COUNT, READ_COUNT,"
                " FILTER_COUNT, WRITE_COUNT, READ_SKIP_COUNT, WRITE_SKIP_COUNT,"
                " PROCESS_SKIP_COUNT, ROLLBACK_COUNT, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
                " VALUES (%s, 0, %s, %s, NOW(6), NOW(6), 'STARTED', 0, 0, 0, 0, 0, 0, 0, 0,"
                " 'EXECUTING', '', NOW(6))",
                (step_id, step_name, execution.id),
            )
            await cur.execute(
                "INSERT INTO BATCH_STEP_EXECUTION_CONTEXT"
                " (STEP_EXECUTION_ID, SHORT_CONTEXT, SERIALIZED_CONTEXT) VALUES (%s, %s, %s)",
                (step_id, *encode_context({"checkpoint": checkpoint})),
            )
        return StepExecution(
            id=step_id,
            job_execution_id=execution.id,
            name=step_name,
            status=Status.STARTED,
            checkpoint=checkpoint,
        )

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
        fences: the step still STARTED (once another replica has taken the execution
        over, LeaseLost), and its COMMIT_COUNT still `commits_before` (an attempt whose
        answer was lost may have committed the chunk already: AlreadyCommitted). Either
        way the chunk's transaction rolls back, its writes with it, so a chunk counts
        and writes once."""
        async with conn.cursor() as cur:
            await cur.execute(
                "UPDATE BATCH_STEP_EXECUTION SET READ_COUNT = READ_COUNT + %s,"
                " WRITE_COUNT = WRITE_COUNT + %s, FILTER_COUNT = FILTER_COUNT + %s,"
                " PROCESS_SKIP_COUNT = PROCESS_SKIP_COUNT + %s, COMMIT_COUNT = COMMIT_COUNT + 1,"
                " VERSION = VERSION + 1, LAST_UPDATED = NOW(6)"
                " WHERE STEP_EXECUTION_ID = %s AND STATUS = 'STARTED' AND COMMIT_COUNT = %s",
                (
                    counts.read,
                    counts.written,
                    counts.filtered,
                    counts.skipped,
                    step_id,
                    commits_before,
                ),
            )
            if not cur.rowcount:
                await cur.execute(
                    "SELECT STATUS, COMMIT_COUNT FROM BATCH_STEP_EXECUTION"
                    " WHERE STEP_EXECUTION_ID = %s",
                    (step_id,),
                )
                status, commits = await cur.fetchone()
                if status == Status.STARTED and commits > commits_before:
                    raise AlreadyCommitted(f"step execution {step_id}: commit {commits} exists")
                raise LeaseLost(
                    f"step execution {step_id} is no longer STARTED here: another replica took"
                    " its execution over (no heartbeat for JOB_ABANDON_AFTER_SECONDS)"
                )
            await cur.execute(
                "UPDATE BATCH_STEP_EXECUTION_CONTEXT SET SHORT_CONTEXT = %s,"
                " SERIALIZED_CONTEXT = %s WHERE STEP_EXECUTION_ID = %s",
                (*encode_context(context), step_id),
            )
            await cur.execute(
                "SELECT e.STATUS FROM BATCH_JOB_EXECUTION e JOIN BATCH_STEP_EXECUTION s"
                " ON s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID WHERE s.STEP_EXECUTION_ID = %s",
                (step_id,),
            )
            (status,) = await cur.fetchone()
            return Status(status)

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
        await self._execute(
            f"UPDATE {table} SET STATUS = %s, EXIT_CODE = %s, EXIT_MESSAGE = %s,"
            " END_TIME = NOW(6), LAST_UPDATED = NOW(6), VERSION = VERSION + 1"
            f" WHERE {id_column} = %s AND STATUS IN {_RUNNING_SQL}",
            (status.value, exit_code or status.value, _clip(message), row_id),
        )

    async def get_execution(self, execution_id: int) -> JobExecution | None:
        found = await self._executions("e.JOB_EXECUTION_ID = %s", (execution_id,), limit=1)
        return found[0] if found else None

    async def last_execution(self, instance_id: int) -> JobExecution:
        """The instance's newest execution (an instance is recorded with its first)."""
        [last] = await self._executions("e.JOB_INSTANCE_ID = %s", (instance_id,), limit=1)
        return last

    async def latest_executions(self, instance_ids: Collection[int]) -> dict[int, int]:
        """Each instance's newest execution id, by instance id (the one that restarts or is
        abandoned; `last_execution`'s order)."""
        if not instance_ids:
            return {}
        marks = ", ".join(["%s"] * len(instance_ids))
        rows = await fetch_all(
            self.pool,
            "SELECT JOB_INSTANCE_ID, MAX(JOB_EXECUTION_ID) FROM BATCH_JOB_EXECUTION"
            f" WHERE JOB_INSTANCE_ID IN ({marks}) GROUP BY JOB_INSTANCE_ID",
            tuple(instance_ids),
        )
        return {instance: latest for instance, latest in rows}

    async def list_executions(self, job_name: str, limit: int = 20) -> list[JobExecution]:
        return await self._executions("i.JOB_NAME = %s", (job_name,), limit=limit)

    async def find_executions(
        self,
        *,
        job_name: str | None = None,
        status: str | None = None,
        run_date: date | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[JobExecution]:
        """Every job's executions, newest first, that match each filter given: the job,
        the status, the `runDate` parameter, an id below `before` (the next page)."""
        where: list[str] = ["TRUE"]
        args: list[object] = []
        if job_name is not None:
            where.append("i.JOB_NAME = %s")
            args.append(job_name)
        if status is not None:
            where.append("e.STATUS = %s")
            args.append(status)
        if run_date is not None:
            where.append(
                "EXISTS (SELECT 1 FROM BATCH_JOB_EXECUTION_PARAMS p"
                " WHERE p.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
                " AND p.PARAMETER_NAME = 'runDate' AND p.PARAMETER_VALUE = %s)"
            )
            args.append(run_date.isoformat())
        if before is not None:
            where.append("e.JOB_EXECUTION_ID < %s")
            args.append(before)
        return await self._executions(" AND ".join(where), tuple(args), limit=limit)

    async def _executions(self, where: str, args: tuple, *, limit: int) -> list[JobExecution]:
        rows = await fetch_all(
            self.pool,
            f"SELECT {_EXECUTION_COLUMNS} FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
            " LEFT JOIN BATCH_JOB_EXECUTION_CONTEXT x ON x.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
            f" WHERE {where} ORDER BY e.JOB_EXECUTION_ID DESC LIMIT {int(limit)}",
            args,
        )
        clock = await self._database_clock()
        executions = {
            row[0]: JobExecution(
                id=row[0],
                instance_id=row[1],
                job_name=row[2],
                status=Status(row[3]),
                parameters={},
                create_time=_on(clock, row[4]),
                start_time=_on(clock, row[5]),
                end_time=_on(clock, row[6]),
                exit_code=row[7] or "",
                exit_message=row[8] or "",
                last_updated=_on(clock, row[9]),
                context=decode_context(row[10], row[11]),
            )
            for row in rows
        }
        if not executions:
            return []
        marks = ", ".join(["%s"] * len(executions))
        ids = tuple(executions)
        for exec_id, name, value in await fetch_all(
            self.pool,
            "SELECT JOB_EXECUTION_ID, PARAMETER_NAME, PARAMETER_VALUE"
            f" FROM BATCH_JOB_EXECUTION_PARAMS WHERE JOB_EXECUTION_ID IN ({marks})",
            ids,
        ):
            executions[exec_id].parameters[name] = value
        for row in await fetch_all(
            self.pool,
            f"SELECT {_STEP_COLUMNS} FROM BATCH_STEP_EXECUTION s"
            " LEFT JOIN BATCH_STEP_EXECUTION_CONTEXT c ON c.STEP_EXECUTION_ID = s.STEP_EXECUTION_ID"
            f" WHERE s.JOB_EXECUTION_ID IN ({marks}) ORDER BY s.STEP_EXECUTION_ID",
            ids,
        ):
            step = _step_from_row(row)
            step.start_time = _on(clock, step.start_time)
            step.end_time = _on(clock, step.end_time)
            executions[step.job_execution_id].steps.append(step)
        return list(executions.values())

    async def _execute(self, sql: str, args: tuple) -> None:
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(sql, args)

    async def job_tallies(self) -> list[JobTally]:
        """Every job's executions by status, its instances not recovered from a FAILED or
        STOPPED execution, and when an execution last started and last COMPLETED: one
        grouped read (what the metrics expose, whichever process ran the executions)."""
        rows = await fetch_all(
            self.pool,
            "SELECT i.JOB_NAME, e.STATUS, COUNT(*), COUNT(latest.ID), MAX(e.START_TIME),"
            " MAX(e.END_TIME) FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
            " LEFT JOIN (SELECT MAX(JOB_EXECUTION_ID) AS ID FROM BATCH_JOB_EXECUTION"
            " GROUP BY JOB_INSTANCE_ID) latest ON latest.ID = e.JOB_EXECUTION_ID"
            " GROUP BY i.JOB_NAME, e.STATUS ORDER BY i.JOB_NAME",
        )
        clock = await self._database_clock()
        return [
            _tally(name, list(job_rows), clock)
            for name, job_rows in groupby(rows, key=lambda row: row[0])
        ]
