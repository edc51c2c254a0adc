"""The read side of the job repository (Spring's JobExplorer): executions as the API, the
console, the CLI, the schedules and the metrics read them. Nothing here writes.

An execution is alive while its own row or any of its step executions was updated within
JOB_ABANDON_AFTER_SECONDS: Spring Batch renews only the step's row, at each chunk commit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from itertools import groupby
from operator import itemgetter
from typing import Self

from app.config import Settings
from app.edges.db import DbPool, fetch_all
from app.model import (
    INTERRUPTED,
    RESTARTABLE,
    InstanceSummary,
    JobExecution,
    JobParameter,
    JobTally,
    Status,
)
from app.repository.clock import DatabaseClock, on, zone_label
from app.repository.rules import SpringRefusal, spring_launch_refusal
from app.repository.tables import (
    LAST_SIGN_OF_LIFE,
    RUNNING_SQL,
    STEP_COLUMNS,
    find_instance,
    step_from_row,
)
from app.spring_format import decode_context, instance_keys

_EXECUTION_COLUMNS = (
    "e.JOB_EXECUTION_ID, e.JOB_INSTANCE_ID, i.JOB_NAME, e.STATUS, e.CREATE_TIME, e.START_TIME,"
    " e.END_TIME, e.EXIT_CODE, e.EXIT_MESSAGE, e.LAST_UPDATED, x.SHORT_CONTEXT,"
    " x.SERIALIZED_CONTEXT"
)


@dataclass(frozen=True)
class AheadOfClock:
    """A running execution last updated ahead of the clock's now: written by a clock in
    another zone (a replica or the old service with another serverTimezone)."""

    execution_id: int
    job_name: str
    status: Status
    seconds: float


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _tally(job_name: str, rows: list[tuple], clock: tzinfo) -> JobTally:
    """A job's tally from its rows of `job_tallies`' read, one per status."""
    starts = [row[4] for row in rows if row[4] is not None]
    successes = [row[5] for row in rows if row[1] == Status.COMPLETED]
    return JobTally(
        job_name=job_name,
        executions={Status(row[1]): int(row[2]) for row in rows},
        unrecovered={Status(row[1]): int(row[3]) for row in rows if row[1] in RESTARTABLE},
        last_start=on(clock, max(starts, default=None)),
        last_success=on(clock, successes[0] if successes else None),
    )


class MariaDbJobExplorer:
    """The job repository's reads, in MariaDB (or MySQL)."""

    def __init__(
        self, pool: DbPool, *, abandon_after_seconds: int, zone: tzinfo | None = None
    ) -> None:
        """`zone`: the zone BATCH_* times are written and compared in (None: the database
        session's, NOW(6))."""
        self.pool = pool
        self.abandon_after_seconds = abandon_after_seconds
        self.clock = DatabaseClock(pool, zone)

    @classmethod
    def of(cls, pool: DbPool, settings: Settings) -> Self:
        """The repository as the settings declare it: its lease, its clock's zone."""
        return cls(
            pool,
            abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS,
            zone=settings.database.clock.zone,
        )

    async def clock_zone(self) -> tzinfo:
        """The zone of every BATCH_* time (`DatabaseClock.zone`)."""
        return await self.clock.zone()

    async def session_zone(self) -> timezone:
        """The offset of the database session's NOW(6) (read once)."""
        return await self.clock.session_zone()

    async def database_now(self) -> datetime:
        """The clock's time, as BATCH_* times are written (with its zone)."""
        [(now,)] = await fetch_all(self.pool, f"SELECT {self.clock.now()}")
        assert isinstance(now, datetime)
        return now.replace(tzinfo=await self.clock_zone())

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
                create_time=on(clock, row[4]),
                start_time=on(clock, row[5]),
                end_time=on(clock, row[6]),
                exit_code=row[7] or "",
                exit_message=row[8] or "",
                last_updated=on(clock, row[9]),
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
            f"SELECT {STEP_COLUMNS} FROM BATCH_STEP_EXECUTION s"
            " LEFT JOIN BATCH_STEP_EXECUTION_CONTEXT c ON c.STEP_EXECUTION_ID = s.STEP_EXECUTION_ID"
            f" WHERE s.JOB_EXECUTION_ID IN ({marks}) ORDER BY s.STEP_EXECUTION_ID",
            ids,
        ):
            step = step_from_row(row)
            step.start_time = on(clock, step.start_time)
            step.end_time = on(clock, step.end_time)
            executions[step.job_execution_id].steps.append(step)
        return list(executions.values())

    async def get_parameters(self, execution_id: int) -> list[JobParameter]:
        """The execution's parameters as recorded, with their types: what a restart uses."""
        rows = await fetch_all(
            self.pool,
            "SELECT PARAMETER_NAME, PARAMETER_TYPE, PARAMETER_VALUE, IDENTIFYING"
            " FROM BATCH_JOB_EXECUTION_PARAMS WHERE JOB_EXECUTION_ID = %s",
            (execution_id,),
        )
        return [JobParameter(name, kind, value, flag == "Y") for name, kind, value, flag in rows]

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

    # The automatic launches' reads

    async def instance_status(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> Status | None:
        """The status of the instance's latest execution; None: no such instance."""
        instance_id = await find_instance(self.pool, job_name, instance_keys(parameters))
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
        return on(await self.clock_zone(), created)

    async def instance_summary(
        self, job_name: str, parameters: Sequence[JobParameter]
    ) -> InstanceSummary | None:
        """The instance of these parameters as the automatic launches read it; None: it was
        never launched."""
        instance_id = await find_instance(self.pool, job_name, instance_keys(parameters))
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
            f" OR e.END_TIME > {self.clock.now()} - INTERVAL %s MICROSECOND)",
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
                end_time=on(clock, row[5]),
                parameters=parameters[row[0]],
                counted=int(row[6]),
            )
            for row in rows
        ]

    # The leases

    async def expired_executions(self) -> list[JobExecution]:
        """Executions still recorded running (STARTING, STARTED, STOPPING) whose lease
        expired: no sign of life (neither their row nor a step's updated) for
        JOB_ABANDON_AFTER_SECONDS, by the clock."""
        return await self._executions(
            f"e.STATUS IN {RUNNING_SQL}"
            f" AND {LAST_SIGN_OF_LIFE} < {self.clock.now()} - INTERVAL %s MICROSECOND",
            (int(self.abandon_after_seconds * 1e6),),
            limit=100,
        )

    async def running_executions(self) -> list[tuple[JobExecution, float]]:
        """Every execution recorded running, oldest first, with the seconds since its last
        sign of life."""
        running = await self._executions(f"e.STATUS IN {RUNNING_SQL}", (), limit=1000)
        if not running:
            return []
        silence = dict(
            await fetch_all(
                self.pool,
                f"SELECT e.JOB_EXECUTION_ID, TIMESTAMPDIFF(MICROSECOND, {LAST_SIGN_OF_LIFE},"
                f" {self.clock.now()}) FROM BATCH_JOB_EXECUTION e"
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
            f" TIMESTAMPDIFF(MICROSECOND, {self.clock.now()}, {LAST_SIGN_OF_LIFE}) AS ahead"
            " FROM BATCH_JOB_EXECUTION e"
            " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
            f" WHERE e.STATUS IN {RUNNING_SQL}) running WHERE ahead > %s"
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

    async def spring_refusals(self) -> list[tuple[JobExecution, SpringRefusal]]:
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
        refused: list[tuple[JobExecution, SpringRefusal]] = []
        for _, group in groupby(rows, key=itemgetter(0)):
            executions = [(row[1], Status(row[2]), bool(row[3])) for row in group]
            refusal = spring_launch_refusal(executions)
            if refusal is not None:
                last = await self.get_execution(executions[0][0])
                assert last is not None
                refused.append((last, refusal))
        return refused

    # The metrics' read

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
