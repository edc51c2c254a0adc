"""Access to the Spring Batch 5 metadata tables, one statement (or a few) per function:
what the MariaDB job repository composes, as Spring's SimpleJobRepository composes its
DAOs. No rules here (`app.repository.rules`): each function reads or writes what it is
told. `now` is the SQL of the repository's clock (`DatabaseClock.now`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncmy.cursors import Cursor
from asyncmy.errors import IntegrityError

from app.edges.db import DbPool, fetch_all, transaction
from app.model import INTERRUPTED, RUNNING, ChunkCounts, JobParameter, Status, StepExecution
from app.repository.rules import CHECKPOINT_OWNER, MESSAGE_LIMIT, clip, owned_context
from app.spring_format import decode_context, encode_context, written_as_json

RUNNING_SQL = "(" + ", ".join(f"'{status.value}'" for status in RUNNING) + ")"
# The last sign of life of execution `e`: its own row's LAST_UPDATED, or any of its step
# executions' (Spring's chunk commits renew only the step's).
LAST_SIGN_OF_LIFE = (
    "GREATEST(e.LAST_UPDATED, COALESCE((SELECT MAX(s.LAST_UPDATED) FROM BATCH_STEP_EXECUTION s"
    " WHERE s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID), e.LAST_UPDATED))"
)
STEP_COLUMNS = (
    "s.STEP_EXECUTION_ID, s.JOB_EXECUTION_ID, s.STEP_NAME, s.STATUS, c.SHORT_CONTEXT,"
    " s.READ_COUNT, s.WRITE_COUNT, s.FILTER_COUNT,"
    " s.READ_SKIP_COUNT + s.PROCESS_SKIP_COUNT + s.WRITE_SKIP_COUNT, s.COMMIT_COUNT,"
    " s.START_TIME, s.END_TIME, s.EXIT_MESSAGE, c.SERIALIZED_CONTEXT"
)


def step_from_row(row: tuple) -> StepExecution:
    """A step execution from its STEP_COLUMNS; its checkpoint only where it is its own."""
    context = decode_context(row[4], row[13])
    owned = context.get(CHECKPOINT_OWNER) == row[0] or written_as_json(row[4], row[13])
    return StepExecution(
        id=row[0],
        job_execution_id=row[1],
        name=row[2],
        status=Status(row[3]),
        checkpoint=context.get("checkpoint") if owned else None,
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


async def next_id(pool: DbPool, sequence: str) -> int:
    """Spring's MySQLMaxValueIncrementer: its own transaction, committed at once, so the
    sequence row is locked for a moment, not for the caller's transaction (both services
    draw from the same sequences). Taken before the caller's transaction opens, so a
    caller never holds two pool connections; an id a refused launch drew is left unused."""
    async with transaction(pool) as conn, conn.cursor() as cur:
        await cur.execute(f"UPDATE {sequence} SET ID = LAST_INSERT_ID(ID + 1) LIMIT 1")
        await cur.execute("SELECT LAST_INSERT_ID()")
        (value,) = await cur.fetchone()
        return int(value)


async def execute(pool: DbPool, sql: str, args: tuple) -> None:
    """One statement in a transaction of its own."""
    async with transaction(pool) as conn, conn.cursor() as cur:
        await cur.execute(sql, args)


# BATCH_JOB_INSTANCE


async def find_instance(pool: DbPool, job_name: str, keys: Sequence[str]) -> int | None:
    """The instance under the first of `keys` found (the old Spring service's, with the
    parameter types it may have used, or this service's legacy key)."""
    found = dict(
        await fetch_all(
            pool,
            "SELECT JOB_KEY, JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE WHERE JOB_NAME = %s"
            f" AND JOB_KEY IN ({', '.join(['%s'] * len(keys))})",
            (job_name, *keys),
        )
    )
    return next((int(found[key]) for key in keys if key in found), None)


async def create_instance(pool: DbPool, job_name: str, keys: Sequence[str]) -> int:
    """A new instance under `keys[0]`; the one another process created a moment ago under
    any of `keys`, if it did."""
    instance_id = await next_id(pool, "BATCH_JOB_SEQ")
    try:
        await execute(
            pool,
            "INSERT INTO BATCH_JOB_INSTANCE (JOB_INSTANCE_ID, VERSION, JOB_NAME, JOB_KEY)"
            " VALUES (%s, 0, %s, %s)",
            (instance_id, job_name, keys[0]),
        )
        return instance_id
    except IntegrityError:
        raced = await find_instance(pool, job_name, keys)
        assert raced is not None
        return raced


async def lock_latest(cur: Cursor, instance_id: int) -> tuple[int, Status] | None:
    """Lock the instance's row, then its latest execution's; that one (id, status)."""
    await cur.execute(
        "SELECT JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE WHERE JOB_INSTANCE_ID = %s FOR UPDATE",
        (instance_id,),
    )
    return await _lock_latest_execution(cur, instance_id)


async def lock_latest_of_execution(cur: Cursor, execution_id: int) -> tuple[int, Status] | None:
    """Lock the instance of `execution_id`, then its latest execution's row; that one
    (id, status). None: no such execution."""
    await cur.execute(
        "SELECT i.JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE i JOIN BATCH_JOB_EXECUTION e"
        " ON e.JOB_INSTANCE_ID = i.JOB_INSTANCE_ID WHERE e.JOB_EXECUTION_ID = %s FOR UPDATE",
        (execution_id,),
    )
    found = await cur.fetchone()
    return None if found is None else await _lock_latest_execution(cur, found[0])


async def _lock_latest_execution(cur: Cursor, instance_id: int) -> tuple[int, Status] | None:
    await cur.execute(
        "SELECT JOB_EXECUTION_ID, STATUS FROM BATCH_JOB_EXECUTION"
        " WHERE JOB_INSTANCE_ID = %s ORDER BY JOB_EXECUTION_ID DESC LIMIT 1 FOR UPDATE",
        (instance_id,),
    )
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), Status(row[1]))


# BATCH_JOB_EXECUTION (with its parameters and context)


async def lock_status(cur: Cursor, execution_id: int) -> Status | None:
    """Lock the execution's row; its status (None: no such execution)."""
    await cur.execute(
        "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
        (execution_id,),
    )
    row = await cur.fetchone()
    return None if row is None else Status(row[0])


async def silence(cur: Cursor, execution_id: int, now: str) -> float:
    """Seconds since the execution's last sign of life (its row's or any step's
    LAST_UPDATED), with its step rows locked first: no chunk commits between this
    reading and what the caller's transaction does with it. The caller holds the job
    execution's row lock."""
    await cur.execute(
        "SELECT STEP_EXECUTION_ID FROM BATCH_STEP_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
        (execution_id,),
    )
    await cur.execute(
        f"SELECT TIMESTAMPDIFF(MICROSECOND, {LAST_SIGN_OF_LIFE}, {now})"
        " FROM BATCH_JOB_EXECUTION e WHERE e.JOB_EXECUTION_ID = %s",
        (execution_id,),
    )
    (idle_us,) = await cur.fetchone()
    return (idle_us or 0) / 1e6


async def counted_executions(cur: Cursor, instance_id: int) -> int:
    """The instance's executions that count against the automatic attempts (those not
    cut by a shutdown)."""
    await cur.execute(
        "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION WHERE JOB_INSTANCE_ID = %s AND EXIT_CODE <> %s",
        (instance_id, INTERRUPTED),
    )
    (count,) = await cur.fetchone()
    return int(count)


async def insert_execution(
    cur: Cursor,
    execution_id: int,
    instance_id: int,
    parameters: Sequence[JobParameter],
    *,
    queued: bool,
    now: str,
) -> None:
    """A new execution: STARTING (queued, no START_TIME yet) or STARTED, with its
    parameters and an empty context."""
    status = Status.STARTING if queued else Status.STARTED
    await cur.execute(
        "INSERT INTO BATCH_JOB_EXECUTION (JOB_EXECUTION_ID, VERSION, JOB_INSTANCE_ID,"
        " CREATE_TIME, START_TIME, STATUS, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
        f" VALUES (%s, 0, %s, {now}, IF(%s, NULL, {now}), %s, 'UNKNOWN', '', {now})",
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


async def end_running(
    cur: Cursor, execution_id: int, status: Status, message: str, now: str
) -> None:
    """End the execution and its steps still running: `status` (its exit code too) and
    `message`."""
    for table in ("BATCH_JOB_EXECUTION", "BATCH_STEP_EXECUTION"):
        await cur.execute(
            f"UPDATE {table} SET STATUS = %s, EXIT_CODE = %s,"
            f" EXIT_MESSAGE = %s, END_TIME = {now}, LAST_UPDATED = {now},"
            " VERSION = VERSION + 1"
            f" WHERE JOB_EXECUTION_ID = %s AND STATUS IN {RUNNING_SQL}",
            (status.value, status.value, clip(message), execution_id),
        )


async def finish(
    cur: Cursor,
    table: str,
    id_column: str,
    row_id: int,
    status: Status,
    exit_code: str,
    message: str,
    now: str,
) -> None:
    """The end of a job or step execution (status, exit code, message), unless it is no
    longer running (another replica has taken the execution over meanwhile)."""
    await cur.execute(
        f"UPDATE {table} SET STATUS = %s, EXIT_CODE = %s, EXIT_MESSAGE = %s,"
        f" END_TIME = {now}, LAST_UPDATED = {now}, VERSION = VERSION + 1"
        f" WHERE {id_column} = %s AND STATUS IN {RUNNING_SQL}",
        (status.value, exit_code, clip(message), row_id),
    )


async def stop_failed_rows(cur: Cursor, execution_id: int, now: str) -> None:
    """A FAILED execution and its FAILED steps STOPPED by an operator, each message
    saying so (`rules.stopped_after_failure`, in SQL)."""
    for table in ("BATCH_STEP_EXECUTION", "BATCH_JOB_EXECUTION"):
        # EXIT_MESSAGE first: MariaDB and MySQL assign left to right.
        await cur.execute(
            f"UPDATE {table} SET EXIT_MESSAGE = LEFT(CONCAT('stopped on request after"
            " it ended ', EXIT_CODE, IF(EXIT_MESSAGE <> '', CONCAT(': ', EXIT_MESSAGE),"
            " ''), '; restartable from the checkpoint, never automatically'),"
            f" {MESSAGE_LIMIT}), EXIT_CODE = 'STOPPED', STATUS = 'STOPPED',"
            f" LAST_UPDATED = {now}, VERSION = VERSION + 1"
            " WHERE JOB_EXECUTION_ID = %s AND STATUS = 'FAILED'",
            (execution_id,),
        )


# BATCH_STEP_EXECUTION (with its context)


async def previous_step(
    pool: DbPool, instance_id: int, step_name: str, before: int
) -> tuple[StepExecution, Status] | None:
    """The instance's last execution of the step before execution `before`, and its job
    execution's status."""
    rows = await fetch_all(
        pool,
        f"SELECT {STEP_COLUMNS}, e.STATUS FROM BATCH_STEP_EXECUTION s"
        " JOIN BATCH_JOB_EXECUTION e ON e.JOB_EXECUTION_ID = s.JOB_EXECUTION_ID"
        " LEFT JOIN BATCH_STEP_EXECUTION_CONTEXT c ON c.STEP_EXECUTION_ID = s.STEP_EXECUTION_ID"
        " WHERE e.JOB_INSTANCE_ID = %s AND s.STEP_NAME = %s AND s.JOB_EXECUTION_ID < %s"
        " ORDER BY s.STEP_EXECUTION_ID DESC LIMIT 1",
        (instance_id, step_name, before),
    )
    return (step_from_row(rows[0]), Status(rows[0][14])) if rows else None


async def insert_step(
    cur: Cursor, step_id: int, step_name: str, execution_id: int, checkpoint: Any, now: str
) -> None:
    """A new STARTED step execution, its context holding `checkpoint` as its own."""
    await cur.execute(
        "INSERT INTO BATCH_STEP_EXECUTION (STEP_EXECUTION_ID, VERSION, STEP_NAME,"
        " JOB_EXECUTION_ID, CREATE_TIME, START_TIME, STATUS, COMMIT_COUNT, READ_COUNT,"
        " FILTER_COUNT, WRITE_COUNT, READ_SKIP_COUNT, WRITE_SKIP_COUNT,"
        " PROCESS_SKIP_COUNT, ROLLBACK_COUNT, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
        f" VALUES (%s, 0, %s, %s, {now}, {now}, 'STARTED', 0, 0, 0, 0, 0, 0, 0, 0,"
        f" 'EXECUTING', '', {now})",
        (step_id, step_name, execution_id),
    )
    await cur.execute(
        "INSERT INTO BATCH_STEP_EXECUTION_CONTEXT"
        " (STEP_EXECUTION_ID, SHORT_CONTEXT, SERIALIZED_CONTEXT) VALUES (%s, %s, %s)",
        (step_id, *encode_context(owned_context({"checkpoint": checkpoint}, step_id))),
    )


async def add_chunk(
    cur: Cursor, step_id: int, counts: ChunkCounts, commits_before: int, now: str
) -> bool:
    """Add a chunk's counts to the step, if it is STARTED with `commits_before` commits;
    whether it was."""
    await cur.execute(
        "UPDATE BATCH_STEP_EXECUTION SET READ_COUNT = READ_COUNT + %s,"
        " WRITE_COUNT = WRITE_COUNT + %s, FILTER_COUNT = FILTER_COUNT + %s,"
        " PROCESS_SKIP_COUNT = PROCESS_SKIP_COUNT + %s, COMMIT_COUNT = COMMIT_COUNT + 1,"
        f" VERSION = VERSION + 1, LAST_UPDATED = {now}"
        " WHERE STEP_EXECUTION_ID = %s AND STATUS = 'STARTED' AND COMMIT_COUNT = %s",
        (counts.read, counts.written, counts.filtered, counts.skipped, step_id, commits_before),
    )
    return bool(cur.rowcount)


async def step_state(cur: Cursor, step_id: int) -> tuple[Status, int]:
    """The step's status and commit count."""
    await cur.execute(
        "SELECT STATUS, COMMIT_COUNT FROM BATCH_STEP_EXECUTION WHERE STEP_EXECUTION_ID = %s",
        (step_id,),
    )
    status, commits = await cur.fetchone()
    return Status(status), int(commits)


async def write_step_context(cur: Cursor, step_id: int, context: dict[str, Any]) -> None:
    await cur.execute(
        "UPDATE BATCH_STEP_EXECUTION_CONTEXT SET SHORT_CONTEXT = %s,"
        " SERIALIZED_CONTEXT = %s WHERE STEP_EXECUTION_ID = %s",
        (*encode_context(owned_context(context, step_id)), step_id),
    )


async def job_status_of_step(cur: Cursor, step_id: int) -> Status:
    """The status of the step's job execution."""
    await cur.execute(
        "SELECT e.STATUS FROM BATCH_JOB_EXECUTION e JOIN BATCH_STEP_EXECUTION s"
        " ON s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID WHERE s.STEP_EXECUTION_ID = %s",
        (step_id,),
    )
    (status,) = await cur.fetchone()
    return Status(status)
