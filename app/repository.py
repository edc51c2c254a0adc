"""The job repository: the one place that knows the Spring Batch 5 metadata tables.

A job instance is a job name plus its identifying parameters; each launch of it is
a job execution with one step execution per step. Launch rules run in a single
transaction that locks the instance row, so two processes launching the same
instance at once are serialized and exactly one of them runs.

One clock writes and compares every BATCH_* time: the database's, so that replicas with
skewed clocks agree on heartbeats, read as the wall time of the declared zone (the
JDBC URL's serverTimezone, in which Connector/J has Spring Batch write them; or
DB_TIMEZONE), else the session's NOW(6). An execution is alive while its own row or any
of its step executions was updated within JOB_ABANDON_AFTER_SECONDS: Spring Batch
renews only the step's row, at each chunk commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from itertools import groupby
from operator import itemgetter
from typing import Any

from asyncmy.connection import Connection
from asyncmy.cursors import Cursor
from asyncmy.errors import IntegrityError

from app.config import Settings
from app.edges.db import DbPool, fetch_all, transaction
from app.errors import BatchError
from app.model import (
    ABANDONABLE,
    INTERRUPTED,
    RESTARTABLE,
    RUNNING,
    AlreadyComplete,
    AlreadyRunning,
    AutomaticLaunch,
    ChunkCounts,
    InstanceSummary,
    JobExecution,
    JobParameter,
    JobTally,
    RestartLimitReached,
    Status,
    StepExecution,
    Superseded,
)
from app.spring_format import decode_context, encode_context, instance_keys, written_as_json

_MESSAGE_LIMIT = 2500  # EXIT_MESSAGE is VARCHAR(2500)
_RUNNING_SQL = "(" + ", ".join(f"'{status.value}'" for status in RUNNING) + ")"
# The step execution that wrote the checkpoint beside it in its context. Spring's restart
# copies the last step's whole context into its new step (SimpleStepHandler), so a
# checkpoint is trusted only in the context of the step execution it names.
CHECKPOINT_OWNER = "checkpoint.stepExecutionId"
# The last sign of life of execution `e`: its own row's LAST_UPDATED, or any of its step
# executions' (Spring's chunk commits renew only the step's).
_LAST_SIGN_OF_LIFE = (
    "GREATEST(e.LAST_UPDATED, COALESCE((SELECT MAX(s.LAST_UPDATED) FROM BATCH_STEP_EXECUTION s"
    " WHERE s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID), e.LAST_UPDATED))"
)


class AlreadyCommitted(BatchError):
    """This chunk's commit took effect already: an earlier attempt's COMMIT applied though
    its answer was lost (a stall). The retry's transaction rolls back, its writes with it."""


class LeaseLost(BatchError):
    """This runner's execution is no longer running: another replica found it silent and
    took the instance over, or an operator abandoned it. Nothing more may be committed
    for it."""


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _owned_context(context: dict[str, Any], step_id: int) -> tuple[str, str | None]:
    """The step's context as stored, its checkpoint marked as written by step execution
    `step_id`."""
    if context.get("checkpoint") is None:
        return encode_context(context)
    return encode_context({**context, CHECKPOINT_OWNER: step_id})


def _finish_sql(table: str, id_column: str, now: str) -> str:
    """The end of a job or step execution (status, exit code, message, id) at `now` (the
    clock's SQL), unless another replica has taken the execution over meanwhile."""
    return (
        f"UPDATE {table} SET STATUS = %s, EXIT_CODE = %s, EXIT_MESSAGE = %s,"
        f" END_TIME = {now}, LAST_UPDATED = {now}, VERSION = VERSION + 1"
        f" WHERE {id_column} = %s AND STATUS IN {_RUNNING_SQL}"
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


def _on(clock: tzinfo, value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=clock) if value is not None else None


def _tally(job_name: str, rows: list[tuple], clock: tzinfo) -> JobTally:
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


@dataclass(frozen=True)
class Refusal:
    """Spring Batch's refusal of a launch: the exception, and the execution that caused it."""

    exception: str
    execution_id: int
    status: Status


def spring_launch_refusal(executions: Sequence[tuple[int, Status, bool]]) -> Refusal | None:
    """What Spring Batch 5.2's `SimpleJobRepository.createJobExecution` throws for an
    instance with these executions (id, status, whether it has identifying parameters),
    newest first as its JdbcJobExecutionDao lists them; None: it would launch one. The
    first execution that matches a rule decides, as its loop does."""
    for execution_id, status, identifying in executions:
        if status in RUNNING:
            return Refusal("JobExecutionAlreadyRunningException", execution_id, status)
        if status == Status.UNKNOWN:
            return Refusal("JobRestartException", execution_id, status)
        if identifying and status in (Status.COMPLETED, Status.ABANDONED):
            return Refusal("JobInstanceAlreadyCompleteException", execution_id, status)
    return None


@dataclass(frozen=True)
class AheadOfClock:
    """A running execution last updated ahead of the clock's now: written by a clock in
    another zone (a replica or the old service with another serverTimezone)."""

    execution_id: int
    job_name: str
    status: Status
    seconds: float


def zone_label(zone: tzinfo, at: datetime | None = None) -> str:
    """`Asia/Seoul (UTC+09:00)`, or `UTC+09:00` for a bare offset: the zone and its
    offset at `at` (now)."""
    offset = (at or datetime.now(UTC)).astimezone(zone).utcoffset() or timedelta()
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    text = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    key = getattr(zone, "key", None)
    return f"{key} ({text})" if key and key != "localtime" else text


class JobRepository:
    def __init__(
        self, pool: DbPool, *, abandon_after_seconds: int, zone: tzinfo | None = None
    ) -> None:
        """`zone`: the zone BATCH_* times are written and compared in (None: the database
        session's, NOW(6))."""
        self.pool = pool
        self.abandon_after_seconds = abandon_after_seconds
        self._zone = zone
        self._session_zone: timezone | None = None

    @classmethod
    def of(cls, pool: DbPool, settings: Settings) -> JobRepository:
        """The repository as the settings declare it: its lease, its clock's zone."""
        return cls(
            pool,
            abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS,
            zone=settings.database.clock.zone,
        )

    def _now(self) -> str:
        """The SQL of the clock's now: the database's UTC clock as the zone's wall time
        (its offset as of now: a zone's DST change moves it), or the session's NOW(6)."""
        if self._zone is None:
            return "NOW(6)"
        offset = datetime.now(self._zone).utcoffset() or timedelta()
        return f"(UTC_TIMESTAMP(6) + INTERVAL {int(offset.total_seconds())} SECOND)"

    async def clock_zone(self) -> tzinfo:
        """The zone of every BATCH_* time: the declared one, else the session's. The times
        read back carry it, so that every time shown has its offset."""
        return self._zone if self._zone is not None else await self.session_zone()

    async def session_zone(self) -> timezone:
        """The offset of the database session's NOW(6) (read once)."""
        if self._session_zone is None:
            [(seconds,)] = await fetch_all(
                self.pool, "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6), NOW(6))"
            )
            self._session_zone = timezone(timedelta(minutes=round(int(seconds) / 60)))
        return self._session_zone

    async def _silence(self, cur: Cursor, execution_id: int) -> float:
        """Seconds since the execution's last sign of life (its row's or any step's
        LAST_UPDATED), with its step rows locked first: no chunk commits between this
        reading and what the caller's transaction does with it. The caller holds the
        job execution's row lock."""
        await cur.execute(
            "SELECT STEP_EXECUTION_ID FROM BATCH_STEP_EXECUTION WHERE JOB_EXECUTION_ID = %s"
            " FOR UPDATE",
            (execution_id,),
        )
        await cur.execute(
            f"SELECT TIMESTAMPDIFF(MICROSECOND, {_LAST_SIGN_OF_LIFE}, {self._now()})"
            " FROM BATCH_JOB_EXECUTION e WHERE e.JOB_EXECUTION_ID = %s",
            (execution_id,),
        )
        (idle_us,) = await cur.fetchone()
        return (idle_us or 0) / 1e6

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
                "SELECT JOB_EXECUTION_ID, STATUS FROM BATCH_JOB_EXECUTION"
                " WHERE JOB_INSTANCE_ID = %s ORDER BY JOB_EXECUTION_ID DESC LIMIT 1 FOR UPDATE",
                (instance_id,),
            )
            last = await cur.fetchone()
            if last is not None:
                last_id, last_status = last
                if last_status in RUNNING:
                    idle = await self._silence(cur, last_id)
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
            if automatic is not None:
                await self._check_automatic(cur, job_name, instance_id, last, automatic)
            now = self._now()
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
        execution = await self.get_execution(execution_id)
        assert execution is not None
        return execution

    @staticmethod
    async def _check_automatic(
        cur: Cursor,
        job_name: str,
        instance_id: int,
        last: tuple | None,
        automatic: AutomaticLaunch,
    ) -> None:
        """Refuse an automatic launch whose decision is out of date, or past its bound."""
        last_id = last[0] if last is not None else None
        if last_id != automatic.after or (last is not None and last[1] != Status.FAILED):
            now = f"execution {last_id} is {last[1]}" if last is not None else "none"
            raise Superseded(
                f"{job_name}: the instance changed since the automatic launch was decided"
                f" (its latest execution: {now})",
                last_id or 0,
            )
        if automatic.max_executions is None:
            return
        await cur.execute(
            "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION WHERE JOB_INSTANCE_ID = %s"
            " AND EXIT_CODE <> %s",
            (instance_id, INTERRUPTED),
        )
        (count,) = await cur.fetchone()
        if count >= automatic.max_executions:
            raise RestartLimitReached(
                f"{job_name} has run {count} executions of this instance already"
                f" (at most {automatic.max_executions} automatically); not restarted",
                last_id or 0,
            )

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

    async def first_execution_time(self, job_name: str) -> datetime | None:
        """When the job's earliest execution in the job repository was created, by this
        service or the old one; None: it never ran."""
        [(created,)] = await fetch_all(
            self.pool,
            "SELECT MIN(e.CREATE_TIME) FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
            " WHERE i.JOB_NAME = %s",
            (job_name,),
        )
        return _on(await self.clock_zone(), created)

    async def database_now(self) -> datetime:
        """The clock's time, as BATCH_* times are written (with its zone)."""
        [(now,)] = await fetch_all(self.pool, f"SELECT {self._now()}")
        assert isinstance(now, datetime)
        return now.replace(tzinfo=await self.clock_zone())

    async def instance_summary(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> InstanceSummary | None:
        """The instance of these parameters as the automatic launches read it; None: it was
        never launched."""
        instance_id = await self._find_instance(job_name, instance_keys(parameters))
        if instance_id is None:
            return None
        found = await self._summaries("e.JOB_INSTANCE_ID = %s", (instance_id,))
        return found[0] if found else None

    async def resumable_instances(
        self, job_names: Sequence[str], within: timedelta
    ) -> list[InstanceSummary]:
        """The instances of these jobs whose latest execution is FAILED: interrupted by a
        shutdown (whenever), or ended within `within` by the database clock."""
        if not job_names:
            return []
        names = ", ".join(["%s"] * len(job_names))
        return await self._summaries(
            f"i.JOB_NAME IN ({names}) AND e.STATUS = 'FAILED' AND (e.EXIT_CODE = %s"
            f" OR e.END_TIME > {self._now()} - INTERVAL %s MICROSECOND)",
            (*job_names, INTERRUPTED, int(within.total_seconds() * 1e6)),
        )

    async def _summaries(self, where: str, args: tuple) -> list[InstanceSummary]:
        """The instances whose latest execution `e` (of instance `i`) matches `where`."""
        rows = await fetch_all(
            self.pool,
            "SELECT e.JOB_EXECUTION_ID, e.JOB_INSTANCE_ID, i.JOB_NAME, e.STATUS, e.EXIT_CODE,"
            " e.END_TIME, (SELECT COUNT(*) FROM BATCH_JOB_EXECUTION c"
            " WHERE c.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID AND c.EXIT_CODE <> %s)"
            " FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
            f" WHERE {where} AND e.JOB_EXECUTION_ID = (SELECT MAX(l.JOB_EXECUTION_ID)"
            " FROM BATCH_JOB_EXECUTION l WHERE l.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID)"
            " ORDER BY e.JOB_EXECUTION_ID",
            (INTERRUPTED, *args),
        )
        if not rows:
            return []
        parameters: dict[int, dict[str, str]] = {row[0]: {} for row in rows}
        marks = ", ".join(["%s"] * len(parameters))
        for execution_id, name, value in await fetch_all(
            self.pool,
            "SELECT JOB_EXECUTION_ID, PARAMETER_NAME, PARAMETER_VALUE"
            f" FROM BATCH_JOB_EXECUTION_PARAMS WHERE JOB_EXECUTION_ID IN ({marks})",
            tuple(parameters),
        ):
            parameters[execution_id][name] = value
        clock = await self.clock_zone()
        return [
            InstanceSummary(
                instance_id=row[1],
                job_name=row[2],
                latest=row[0],
                status=Status(row[3]),
                exit_code=row[4] or "",
                end_time=_on(clock, row[5]),
                parameters=parameters[row[0]],
                counted=int(row[6]),
            )
            for row in rows
        ]

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
        now = self._now()
        async with conn.cursor() as cur:
            for table in ("BATCH_JOB_EXECUTION", "BATCH_STEP_EXECUTION"):
                await cur.execute(
                    f"UPDATE {table} SET STATUS = %s, EXIT_CODE = %s,"
                    f" EXIT_MESSAGE = %s, END_TIME = {now}, LAST_UPDATED = {now},"
                    " VERSION = VERSION + 1"
                    f" WHERE JOB_EXECUTION_ID = %s AND STATUS IN {_RUNNING_SQL}",
                    (status.value, status.value, _clip(message), execution_id),
                )

    async def expired_executions(self) -> list[JobExecution]:
        """Executions still recorded running (STARTING, STARTED, STOPPING) whose lease
        expired: no sign of life (neither their row nor a step's updated) for
        JOB_ABANDON_AFTER_SECONDS, by the clock."""
        return await self._executions(
            f"e.STATUS IN {_RUNNING_SQL}"
            f" AND {_LAST_SIGN_OF_LIFE} < {self._now()} - INTERVAL %s MICROSECOND",
            (int(self.abandon_after_seconds * 1e6),),
            limit=100,
        )

    async def running_executions(self) -> list[tuple[JobExecution, float]]:
        """Every execution recorded running, oldest first, with the seconds since its last
        sign of life."""
        running = await self._executions(f"e.STATUS IN {_RUNNING_SQL}", (), limit=1000)
        if not running:
            return []
        silence = dict(
            await fetch_all(
                self.pool,
                f"SELECT e.JOB_EXECUTION_ID, TIMESTAMPDIFF(MICROSECOND, {_LAST_SIGN_OF_LIFE},"
                f" {self._now()}) FROM BATCH_JOB_EXECUTION e"
                f" WHERE e.JOB_EXECUTION_ID IN ({', '.join(['%s'] * len(running))})",
                tuple(e.id for e in running),
            )
        )
        return [(e, (silence.get(e.id) or 0) / 1e6) for e in reversed(running)]

    async def ahead_of_clock(self, margin_seconds: float = 60) -> list[AheadOfClock]:
        """The running executions last updated (their row or a step) more than `margin`
        ahead of the clock: the sign of a second clock, written in another zone. Such an
        execution is never taken over, and refuses every launch of its instance."""
        rows = await fetch_all(
            self.pool,
            "SELECT * FROM (SELECT e.JOB_EXECUTION_ID, i.JOB_NAME, e.STATUS,"
            f" TIMESTAMPDIFF(MICROSECOND, {self._now()}, {_LAST_SIGN_OF_LIFE}) AS ahead"
            " FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
            f" WHERE e.STATUS IN {_RUNNING_SQL}) running WHERE ahead > %s"
            " ORDER BY JOB_EXECUTION_ID",
            (int(margin_seconds * 1e6),),
        )
        return [AheadOfClock(row[0], row[1], Status(row[2]), row[3] / 1e6) for row in rows]

    async def second_clock_warnings(self, declared: str) -> list[str]:
        """A line for each running execution last updated more than a minute ahead of
        the clock (`ahead_of_clock`), naming both zones: the clock's (`declared`: where
        it comes from) and the one the row seems written in."""
        ours = await self.clock_zone()
        now = datetime.now(UTC)
        offset = now.astimezone(ours).utcoffset() or timedelta()
        lines = []
        for ahead in await self.ahead_of_clock():
            quarters = round(ahead.seconds / 900) * 900
            theirs = timezone(offset + timedelta(seconds=quarters))
            lines.append(
                f"execution {ahead.execution_id} of {ahead.job_name} ({ahead.status}) was last"
                f" updated {_duration(ahead.seconds)} ahead of the BATCH_* clock, in"
                f" {zone_label(ours, now)} ({declared}): it was written in another zone, about"
                f" {zone_label(theirs, now)}. Until both write in one zone it is never taken"
                " over and every launch of its instance is refused as running: set DB_URL's"
                " serverTimezone (or DB_TIMEZONE) to the zone the old service writes in"
                ' (docs/rollback.md, "Which zone")'
            )
        return lines

    async def spring_refusals(self) -> list[tuple[JobExecution, Refusal]]:
        """The instances left to run again (their last execution FAILED, STOPPED or
        UNKNOWN) that Spring Batch would refuse to launch: each one's last execution
        and Spring's refusal (`spring_launch_refusal`)."""
        rows = await fetch_all(
            self.pool,
            "SELECT e.JOB_INSTANCE_ID, e.JOB_EXECUTION_ID, e.STATUS, EXISTS (SELECT 1"
            " FROM BATCH_JOB_EXECUTION_PARAMS p WHERE p.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
            " AND p.IDENTIFYING = 'Y') FROM BATCH_JOB_EXECUTION e WHERE e.JOB_INSTANCE_ID IN"
            " (SELECT l.JOB_INSTANCE_ID FROM BATCH_JOB_EXECUTION l"
            " WHERE l.STATUS IN ('FAILED', 'STOPPED', 'UNKNOWN') AND l.JOB_EXECUTION_ID ="
            " (SELECT MAX(m.JOB_EXECUTION_ID) FROM BATCH_JOB_EXECUTION m"
            " WHERE m.JOB_INSTANCE_ID = l.JOB_INSTANCE_ID))"
            " ORDER BY e.JOB_INSTANCE_ID, e.JOB_EXECUTION_ID DESC",
        )
        refused: list[tuple[JobExecution, Refusal]] = []
        for _, group in groupby(rows, key=itemgetter(0)):
            executions = [(row[1], Status(row[2]), bool(row[3])) for row in group]
            refusal = spring_launch_refusal(executions)
            if refusal is not None:
                last = await self.get_execution(executions[0][0])
                assert last is not None
                refused.append((last, refusal))
        return refused

    async def take_over(self, execution_id: int, note: str = "") -> Status | None:
        """End an execution whose lease expired, as its runner is gone: a STOPPING one
        STOPPED (the stop it was asked for), any other FAILED "abandoned" (restartable),
        its running steps with it; `note` is added to the message. The status set, or
        None when the execution is not (any more) expired: its runner renewed the lease
        or committed a chunk, or another replica took it over first (the row locks of the
        execution and its steps serialize them)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None or row[0] not in RUNNING:
                return None
            idle = await self._silence(cur, execution_id)
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
                f"UPDATE BATCH_JOB_EXECUTION SET LAST_UPDATED = {self._now()},"
                " VERSION = VERSION + 1"
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
            now = self._now()
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

    async def executions_since(self, execution_id: int) -> list[tuple[int, Status]]:
        """The execution and the later ones of its instance, oldest first, with their
        statuses: the run a stop is addressed to. Empty: no such execution."""
        rows = await fetch_all(
            self.pool,
            "SELECT e.JOB_EXECUTION_ID, e.STATUS FROM BATCH_JOB_EXECUTION x"
            " JOIN BATCH_JOB_EXECUTION e ON e.JOB_INSTANCE_ID = x.JOB_INSTANCE_ID"
            " AND e.JOB_EXECUTION_ID >= x.JOB_EXECUTION_ID"
            " WHERE x.JOB_EXECUTION_ID = %s ORDER BY e.JOB_EXECUTION_ID",
            (execution_id,),
        )
        return [(int(row_id), Status(status)) for row_id, status in rows]

    async def stop_failed(self, execution_id: int) -> bool:
        """A stop of a run that ended FAILED and awaits its automatic restart (or resume):
        STOPPED, the operator's word, which no automatic launch restarts; restartable by
        an operator from its checkpoint. Only while it is its instance's latest execution
        and FAILED, checked under the instance's lock (an automatic launch takes it too);
        False otherwise."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT i.JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE i JOIN BATCH_JOB_EXECUTION e"
                " ON e.JOB_INSTANCE_ID = i.JOB_INSTANCE_ID WHERE e.JOB_EXECUTION_ID = %s"
                " FOR UPDATE",
                (execution_id,),
            )
            found = await cur.fetchone()
            if found is None:
                return False
            await cur.execute(
                "SELECT JOB_EXECUTION_ID, STATUS FROM BATCH_JOB_EXECUTION"
                " WHERE JOB_INSTANCE_ID = %s ORDER BY JOB_EXECUTION_ID DESC LIMIT 1 FOR UPDATE",
                (found[0],),
            )
            if tuple(await cur.fetchone()) != (execution_id, Status.FAILED):
                return False
            for table in ("BATCH_STEP_EXECUTION", "BATCH_JOB_EXECUTION"):
                # EXIT_MESSAGE first: MariaDB and MySQL assign left to right.
                await cur.execute(
                    f"UPDATE {table} SET EXIT_MESSAGE = LEFT(CONCAT('stopped on request after"
                    " it ended ', EXIT_CODE, IF(EXIT_MESSAGE <> '', CONCAT(': ', EXIT_MESSAGE),"
                    " ''), '; restartable from the checkpoint, never automatically'),"
                    f" {_MESSAGE_LIMIT}), EXIT_CODE = 'STOPPED', STATUS = 'STOPPED',"
                    f" LAST_UPDATED = {self._now()}, VERSION = VERSION + 1"
                    " WHERE JOB_EXECUTION_ID = %s AND STATUS = 'FAILED'",
                    (execution_id,),
                )
            return True

    async def abandon(self, execution_id: int) -> Status | None:
        """Spring Batch's abandon, written as its SimpleJobOperator.abandon writes it: a
        STOPPED, FAILED or STOPPING execution becomes ABANDONED with END_TIME now, its
        EXIT_CODE and EXIT_MESSAGE kept and its step rows untouched. Never restarted: the
        next launch of its instance here starts from scratch (Spring refuses it); a
        runner still alive reads it as a lost lease. The status it had (None: no such
        execution)."""
        now = self._now()
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
            await cur.execute(
                "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            status = Status(row[0])
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

    async def finish_interrupted(
        self, execution_id: int, step_id: int | None, message: str, stopped: str
    ) -> Status | None:
        """Record the end of a run cut by a shutdown (its step's too): FAILED, EXIT_CODE
        INTERRUPTED, `message`; but STOPPED, `stopped`, where an operator asked it to stop
        (STOPPING) before the runner read it: a stop is never lost. The status recorded;
        None where another replica has taken the execution over meanwhile."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None or row[0] not in RUNNING:
                return None
            if row[0] == Status.STOPPING:
                status, exit_code, text = Status.STOPPED, Status.STOPPED.value, stopped
            else:
                status, exit_code, text = Status.FAILED, INTERRUPTED, message
            ended = [("BATCH_JOB_EXECUTION", "JOB_EXECUTION_ID", execution_id)]
            if step_id is not None:
                ended.insert(0, ("BATCH_STEP_EXECUTION", "STEP_EXECUTION_ID", step_id))
            now = self._now()
            for table, id_column, row_id in ended:
                await cur.execute(
                    _finish_sql(table, id_column, now),
                    (status.value, exit_code, _clip(text), row_id),
                )
            return status

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
        """Record a step execution. It resumes from the checkpoint of this instance's last
        execution of the step when that one is FAILED or STOPPED, its job execution was
        not abandoned, and the checkpoint is its own: written by this service for that
        very step execution (CHECKPOINT_OWNER), not copied into it by Spring's restart.
        Otherwise it starts from scratch (a rerun of a completed step, a resume across
        the two implementations)."""
        rows = await fetch_all(
            self.pool,
            f"SELECT {_STEP_COLUMNS}, e.STATUS FROM BATCH_STEP_EXECUTION s"
            " JOIN BATCH_JOB_EXECUTION e ON e.JOB_EXECUTION_ID = s.JOB_EXECUTION_ID"
            " LEFT JOIN BATCH_STEP_EXECUTION_CONTEXT c ON c.STEP_EXECUTION_ID = s.STEP_EXECUTION_ID"
            " WHERE e.JOB_INSTANCE_ID = %s AND s.STEP_NAME = %s AND s.JOB_EXECUTION_ID < %s"
            " ORDER BY s.STEP_EXECUTION_ID DESC LIMIT 1",
            (execution.instance_id, step_name, execution.id),
        )
        checkpoint = None
        if rows and rows[0][14] != Status.ABANDONED:
            previous = _step_from_row(rows[0])
            if previous.status in RESTARTABLE:
                checkpoint = previous.checkpoint
        step_id = await _next_id(self.pool, "BATCH_STEP_EXECUTION_SEQ")
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            now = self._now()
            await cur.execute(
                "INSERT INTO BATCH_STEP_EXECUTION (STEP_EXECUTION_ID, VERSION, STEP_NAME,"
                " JOB_EXECUTION_ID, CREATE_TIME, START_TIME, STATUS, COMMIT_COUNT, READ_COUNT,"
                " FILTER_COUNT, WRITE_COUNT, READ_SKIP_COUNT, WRITE_SKIP_COUNT,"
                " PROCESS_SKIP_COUNT, ROLLBACK_COUNT, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
                f" VALUES (%s, 0, %s, %s, {now}, {now}, 'STARTED', 0, 0, 0, 0, 0, 0, 0, 0,"
                f" 'EXECUTING', '', {now})",
                (step_id, step_name, execution.id),
            )
            await cur.execute(
                "INSERT INTO BATCH_STEP_EXECUTION_CONTEXT"
                " (STEP_EXECUTION_ID, SHORT_CONTEXT, SERIALIZED_CONTEXT) VALUES (%s, %s, %s)",
                (step_id, *_owned_context({"checkpoint": checkpoint}, step_id)),
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
        fences: the step and its job execution still running (once another replica has
        taken the execution over, or an operator abandoned it, LeaseLost), and its
        COMMIT_COUNT still `commits_before` (an attempt whose answer was lost may have
        committed the chunk already: AlreadyCommitted). Either way the chunk's
        transaction rolls back, its writes with it, so a chunk counts and writes once."""
        async with conn.cursor() as cur:
            await cur.execute(
                "UPDATE BATCH_STEP_EXECUTION SET READ_COUNT = READ_COUNT + %s,"
                " WRITE_COUNT = WRITE_COUNT + %s, FILTER_COUNT = FILTER_COUNT + %s,"
                " PROCESS_SKIP_COUNT = PROCESS_SKIP_COUNT + %s, COMMIT_COUNT = COMMIT_COUNT + 1,"
                f" VERSION = VERSION + 1, LAST_UPDATED = {self._now()}"
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
                    " its execution over (no sign of life for JOB_ABANDON_AFTER_SECONDS)"
                )
            await cur.execute(
                "UPDATE BATCH_STEP_EXECUTION_CONTEXT SET SHORT_CONTEXT = %s,"
                " SERIALIZED_CONTEXT = %s WHERE STEP_EXECUTION_ID = %s",
                (*_owned_context(context, step_id), step_id),
            )
            await cur.execute(
                "SELECT e.STATUS FROM BATCH_JOB_EXECUTION e JOIN BATCH_STEP_EXECUTION s"
                " ON s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID WHERE s.STEP_EXECUTION_ID = %s",
                (step_id,),
            )
            (status,) = await cur.fetchone()
            if status not in RUNNING:
                raise LeaseLost(
                    f"step execution {step_id}: its job execution is {status} (abandoned or"
                    " taken over)"
                )
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
        now = self._now()
        await self._execute(
            _finish_sql(table, id_column, now),
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
        clock = await self.clock_zone()
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
        clock = await self.clock_zone()
        return [
            _tally(name, list(job_rows), clock)
            for name, job_rows in groupby(rows, key=lambda row: row[0])
        ]
