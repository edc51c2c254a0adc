"""Side by side with Spring Batch 5.2 (issue 27): runs written as Spring writes them, with the
platform's URL (`serverTimezone=Asia/Seoul`) on this machine's MariaDB, whose clock is UTC.

Spring writes every BATCH_* time as `LocalDateTime.now()` of its JVM (SimpleJobRepository.java
:175, :193, :209, :230; AbstractJob.java:300; AbstractStep.java:210), which Connector/J
stores in the URL's zone. At each chunk commit it updates the step execution alone
(TaskletStep.java:429-435), with an optimistic lock on VERSION (JdbcStepExecutionDao.java
:81-85, :283-292); its job row stands still meanwhile. Line numbers are of branch 5.2.x's
spring-batch-core sources.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asyncmy.pool import Pool

from app.__main__ import EXIT_FAILED
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.model import AlreadyRunning, ChunkCounts, JobParameter, Status
from app.repository.mariadb import MariaDbJobRepository
from app.repository.rules import spring_launch_refusal
from app.runtime.reconciler import Reconciler
from app.spring_format import decode_context, encode_context, job_key
from tests.integration.test_cli_database_errors import cli
from tests.integration.test_daemon_serve import serve
from tests.integration.test_spring_repository import OLD_SERVICE_HISTORIES
from tests.integration.test_web_api import Client, bearer, client, until_finished
from tests.reliability.support import cli_environment, until
from tests.settings import TEST_JWT_KEY, make_settings
from tests.waits import waiting

__all__ = ["client"]  # the fixture, shared with test_web_api

SEOUL = ZoneInfo("Asia/Seoul")
STATS, STEP = "couponUsageStatsJob", "couponUsageStatsStep"
PLATFORM_OPTIONS = "useSSL=false&allowPublicKeyRetrieval=true&serverTimezone=Asia/Seoul"


def params(day: str) -> list[JobParameter]:
    return [JobParameter("runDate", "java.time.LocalDate", day)]


def seoul_wall(seconds_ago: float = 0) -> datetime:
    """Spring's `LocalDateTime.now()` in a JVM of Asia/Seoul, as Connector/J stores it with
    serverTimezone=Asia/Seoul: Seoul's wall time, whatever the server's own zone."""
    return datetime.now(SEOUL).replace(tzinfo=None) - timedelta(seconds=seconds_ago)


def platform(settings: Settings) -> Settings:
    """The test's settings with the platform's JDBC URL."""
    return make_settings(DB_URL=f"jdbc:{settings.DB_URL}?{PLATFORM_OPTIONS}")


@dataclass
class SpringRun:
    """A job execution of the old service, its one step running, as Spring writes it."""

    pool: Pool
    execution_id: int
    step_id: int
    version: int = 1  # the step's: 0 at JobRepository.add, 1 at AbstractStep's start

    async def commit_chunk(self, items: int = 2) -> bool:
        """TaskletStep's commit: the step's counts, LAST_UPDATED and VERSION, guarded by
        VERSION; False where Spring gets an OptimisticLockingFailureException."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE BATCH_STEP_EXECUTION SET READ_COUNT = READ_COUNT + %s,"
                " WRITE_COUNT = WRITE_COUNT + %s, COMMIT_COUNT = COMMIT_COUNT + 1,"
                " VERSION = VERSION + 1, LAST_UPDATED = %s"
                " WHERE STEP_EXECUTION_ID = %s AND VERSION = %s",
                (items, items, seoul_wall(), self.step_id, self.version),
            )
            if not cur.rowcount:
                return False
        self.version += 1
        return True

    async def age(self, job_seconds: float, step_seconds: float) -> None:
        """The last update of its job row and of its step, so long ago (Seoul time)."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE BATCH_JOB_EXECUTION SET LAST_UPDATED = %s WHERE JOB_EXECUTION_ID = %s",
                (seoul_wall(job_seconds), self.execution_id),
            )
            await cur.execute(
                "UPDATE BATCH_STEP_EXECUTION SET LAST_UPDATED = %s WHERE STEP_EXECUTION_ID = %s",
                (seoul_wall(step_seconds), self.step_id),
            )

    async def fail(self) -> None:
        """The step and the job end FAILED (AbstractStep.java:265, AbstractJob.java:352)."""
        ended = seoul_wall()
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            for table, id_column, row_id in (
                ("BATCH_STEP_EXECUTION", "STEP_EXECUTION_ID", self.step_id),
                ("BATCH_JOB_EXECUTION", "JOB_EXECUTION_ID", self.execution_id),
            ):
                await cur.execute(
                    f"UPDATE {table} SET STATUS = 'FAILED', EXIT_CODE = 'FAILED',"
                    " EXIT_MESSAGE = 'IllegalStateException: writer fails', END_TIME = %s,"
                    f" LAST_UPDATED = %s, VERSION = VERSION + 1 WHERE {id_column} = %s",
                    (ended, ended, row_id),
                )


async def _spring_id(cur: Any, sequence: str) -> int:
    """MySQLMaxValueIncrementer's next value."""
    await cur.execute(f"UPDATE {sequence} SET ID = LAST_INSERT_ID(ID + 1) LIMIT 1")
    await cur.execute("SELECT LAST_INSERT_ID()")
    (value,) = await cur.fetchone()
    return int(value)


async def spring_launch(
    pool: Pool, day: str, step_context: dict[str, Any] | None = None
) -> SpringRun:
    """A launch of the old service's stats job for `day` as Spring writes it, up to its step's
    start: the instance unless it exists (createJobExecution, SimpleJobRepository.java
    :131-182), the execution STARTED (AbstractJob.java:300), the step STARTED with
    `step_context`, the previous step's context that SimpleStepHandler.java:133-142 copies
    into a restart, or an empty one."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT JOB_INSTANCE_ID FROM BATCH_JOB_INSTANCE WHERE JOB_KEY = %s",
            (job_key(params(day)),),
        )
        found = await cur.fetchone()
        if found is None:
            instance_id = await _spring_id(cur, "BATCH_JOB_SEQ")
            await cur.execute(
                "INSERT INTO BATCH_JOB_INSTANCE (JOB_INSTANCE_ID, VERSION, JOB_NAME, JOB_KEY)"
                " VALUES (%s, 0, %s, %s)",
                (instance_id, STATS, job_key(params(day))),
            )
        else:
            (instance_id,) = found
        execution_id = await _spring_id(cur, "BATCH_JOB_EXECUTION_SEQ")
        now = seoul_wall()
        await cur.execute(
            "INSERT INTO BATCH_JOB_EXECUTION (JOB_EXECUTION_ID, VERSION, JOB_INSTANCE_ID,"
            " CREATE_TIME, START_TIME, STATUS, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
            " VALUES (%s, 1, %s, %s, %s, 'STARTED', 'UNKNOWN', '', %s)",
            (execution_id, instance_id, now, now, now),
        )
        await cur.execute(
            "INSERT INTO BATCH_JOB_EXECUTION_PARAMS (JOB_EXECUTION_ID, PARAMETER_NAME,"
            " PARAMETER_TYPE, PARAMETER_VALUE, IDENTIFYING)"
            " VALUES (%s, 'runDate', 'java.time.LocalDate', %s, 'Y')",
            (execution_id, day),
        )
        await cur.execute(
            "INSERT INTO BATCH_JOB_EXECUTION_CONTEXT (JOB_EXECUTION_ID, SHORT_CONTEXT,"
            " SERIALIZED_CONTEXT) VALUES (%s, %s, %s)",
            (execution_id, *encode_context({})),
        )
        step_id = await _spring_id(cur, "BATCH_STEP_EXECUTION_SEQ")
        await cur.execute(
            "INSERT INTO BATCH_STEP_EXECUTION (STEP_EXECUTION_ID, VERSION, STEP_NAME,"
            " JOB_EXECUTION_ID, CREATE_TIME, START_TIME, STATUS, COMMIT_COUNT, READ_COUNT,"
            " FILTER_COUNT, WRITE_COUNT, READ_SKIP_COUNT, WRITE_SKIP_COUNT,"
            " PROCESS_SKIP_COUNT, ROLLBACK_COUNT, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
            " VALUES (%s, 1, %s, %s, %s, %s, 'STARTED', 0, 0, 0, 0, 0, 0, 0, 0, 'EXECUTING',"
            " '', %s)",
            (step_id, STEP, execution_id, now, now, now),
        )
        spring_keys = {
            "batch.version": "5.2.3",  # AbstractStep.java:204
            "batch.taskletType": "org.springframework.batch.core.step.item.ChunkOrientedTasklet",
            "batch.stepType": "org.springframework.batch.core.step.tasklet.TaskletStep",
            "couponUsageStatsReader.read.count": 0,
        }
        await cur.execute(
            "INSERT INTO BATCH_STEP_EXECUTION_CONTEXT (STEP_EXECUTION_ID, SHORT_CONTEXT,"
            " SERIALIZED_CONTEXT) VALUES (%s, %s, %s)",
            (step_id, *encode_context({**(step_context or {}), **spring_keys})),
        )
    return SpringRun(pool, execution_id, step_id)


async def stored_context(pool: Pool, step_id: int) -> dict[str, Any]:
    [(short, serialized)] = await fetch_all(
        pool,
        "SELECT SHORT_CONTEXT, SERIALIZED_CONTEXT FROM BATCH_STEP_EXECUTION_CONTEXT"
        " WHERE STEP_EXECUTION_ID = %s",
        (step_id,),
    )
    return decode_context(short, serialized)


async def this_services_failed_run(
    repository: MariaDbJobRepository, day: str, checkpoint: int
) -> int:
    """A run of this service that committed a chunk up to `checkpoint`, then FAILED; its
    step execution's id."""
    execution = await repository.start_execution(STATS, params(day), rerun_completed=False)
    step = await repository.start_step(execution, STEP)
    async with repository.pool.acquire() as conn:
        counts = ChunkCounts(checkpoint, checkpoint, 0, 0)
        await repository.commit_chunk(conn, step.id, counts, {"checkpoint": checkpoint}, 0)
    await repository.finish_step(step.id, Status.FAILED, "PeerUnavailable: 503")
    await repository.finish_execution(execution.id, Status.FAILED, "PeerUnavailable: 503")
    return step.id


# ---- one clock -----------------------------------------------------------------------


async def test_with_the_platforms_url_every_time_written_is_seoul_wall_time(
    pool: Pool, settings: Settings
) -> None:
    """On this machine's MariaDB (`@@system_time_zone` UTC) the session's NOW() is UTC; the
    platform's URL makes every BATCH_* time Seoul's wall time, as Spring's are, and the
    times read back carry +09:00."""
    repository = MariaDbJobRepository.of(pool, platform(settings))
    assert repository.abandon_after_seconds == 120
    execution = await repository.start_execution(STATS, params("2025-10-31"), rerun_completed=False)
    step = await repository.start_step(execution, STEP)
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, step.id, ChunkCounts(1, 1, 0, 0), {"checkpoint": 1}, 0)
    await repository.heartbeat(execution.id)
    await repository.finish_step(step.id, Status.COMPLETED)
    await repository.finish_execution(execution.id, Status.COMPLETED)

    [(utc, *times)] = await fetch_all(
        pool,
        "SELECT UTC_TIMESTAMP(6), e.CREATE_TIME, e.START_TIME, e.END_TIME, e.LAST_UPDATED,"
        " s.CREATE_TIME, s.START_TIME, s.END_TIME, s.LAST_UPDATED FROM BATCH_JOB_EXECUTION e"
        " JOIN BATCH_STEP_EXECUTION s ON s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID",
    )
    seoul = utc + timedelta(hours=9)
    assert all(seoul - timedelta(seconds=30) < t <= seoul for t in times), (utc, times)
    recorded = await repository.get_execution(execution.id)
    assert recorded is not None and recorded.start_time is not None
    assert recorded.start_time.utcoffset() == timedelta(hours=9)
    assert abs(recorded.start_time - datetime.now(UTC)) < timedelta(seconds=30)
    # what batch_job_last_start_timestamp_seconds exposes: the instant, not 9 h off
    [tally] = await repository.job_tallies()
    assert tally.last_start is not None
    assert abs(tally.last_start.timestamp() - time.time()) < 30


async def test_without_a_declared_zone_the_session_clock_writes_as_before(pool: Pool) -> None:
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    execution = await repository.start_execution(STATS, params("2025-10-31"), rerun_completed=False)
    [(gap,)] = await fetch_all(
        pool,
        "SELECT TIMESTAMPDIFF(SECOND, CREATE_TIME, NOW(6)) FROM BATCH_JOB_EXECUTION"
        " WHERE JOB_EXECUTION_ID = %s",
        (execution.id,),
    )
    assert 0 <= gap < 30


async def test_a_run_written_in_another_zone_is_named_ahead_of_the_clock(
    pool: Pool, settings: Settings, fake: FakePeers, vhost: str, tmp_path: Path
) -> None:
    """Spring's rows in Seoul time read by a clock of UTC: 9 h ahead, never taken over (the
    issue's first finding). `migrate` and `serve` warn, naming both zones."""
    run = await spring_launch(pool, "2025-11-02")
    await run.age(job_seconds=3600, step_seconds=3600)
    utc_clock = MariaDbJobRepository(pool, abandon_after_seconds=120, zone=UTC)
    [ahead] = await utc_clock.ahead_of_clock()
    assert (ahead.execution_id, ahead.status) == (run.execution_id, "STARTED")
    assert 7.9 * 3600 < ahead.seconds < 8.1 * 3600  # 9 h ahead, updated an hour ago
    assert await utc_clock.expired_executions() == []
    assert (
        await MariaDbJobRepository(pool, abandon_after_seconds=120, zone=SEOUL).ahead_of_clock()
        == []
    )

    env = cli_environment(settings, DB_TIMEZONE="UTC")
    code, _, err = await cli(["migrate"], env, tmp_path)
    assert code == 0, err
    assert err.startswith(
        f"warning: execution {run.execution_id} of {STATS} (STARTED) was last updated 8.0 h"
        " ahead of the BATCH_* clock, in UTC (UTC+00:00) (DB_TIMEZONE): it was written in"
        " another zone, about UTC+08:00."
    ), err
    log = tmp_path / "serve.log"
    async with serve(
        settings, fake, vhost, log, DB_TIMEZONE="UTC", SCHEDULER_ENABLED="false"
    ) as daemon:

        async def warned() -> bool:
            return "ahead of the BATCH_* clock" in daemon.log_text()

        await until(warned, within=30, what="serve's warning")
        assert await daemon.stop() == 0
    assert "BATCH_* times in UTC (UTC+00:00) (DB_TIMEZONE)" in daemon.log_text()


# ---- alive means any sign of life ----------------------------------------------------


async def test_a_spring_run_committing_chunks_is_alive_though_its_job_row_stands_still(
    pool: Pool, settings: Settings
) -> None:
    """Its job row last updated an hour ago, its step a second ago: alive. Killed (its step
    silent past the lease), it is taken over, and Spring's next commit meets the fence."""
    repository = MariaDbJobRepository.of(pool, platform(settings))
    run = await spring_launch(pool, "2025-11-02")
    assert await run.commit_chunk()
    await run.age(job_seconds=3600, step_seconds=1)

    assert await repository.expired_executions() == []
    assert await repository.take_over(run.execution_id) is None
    with pytest.raises(AlreadyRunning):
        await repository.start_execution(STATS, params("2025-11-02"), rerun_completed=False)
    assert await run.commit_chunk()  # Spring goes on

    await run.age(job_seconds=3600, step_seconds=121)  # SIGKILLed two minutes ago
    assert [e.id for e in await repository.expired_executions()] == [run.execution_id]
    assert await repository.take_over(run.execution_id) == Status.FAILED
    assert not await run.commit_chunk()  # had it lived: OptimisticLockingFailureException
    rows = await fetch_all(
        pool,
        "SELECT e.STATUS, s.STATUS, s.EXIT_MESSAGE FROM BATCH_JOB_EXECUTION e JOIN"
        " BATCH_STEP_EXECUTION s ON s.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID",
    )
    assert rows == [
        ("FAILED", "FAILED", "abandoned: no heartbeat for 121 s (JOB_ABANDON_AFTER_SECONDS=120)")
    ]
    again = await repository.start_execution(STATS, params("2025-11-02"), rerun_completed=False)
    assert again.id != run.execution_id


async def test_the_reconciler_leaves_a_committing_spring_run_and_takes_a_silent_one(
    pool: Pool, settings: Settings
) -> None:
    """A reconciler pass every 0.2 s with a lease of 2 s: a Spring run committing a chunk
    every 0.5 s for three leases is left alone; once it stops committing (SIGKILL) it is
    taken over, its silence then at least the lease."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=2, zone=SEOUL)
    reconciler = Reconciler(repository, every=0.2)
    run = await spring_launch(pool, "2025-11-03")

    async def committing() -> None:
        for _ in range(12):
            assert await run.commit_chunk()
            await asyncio.sleep(0.5)

    spring = asyncio.create_task(committing())
    taken: list[int] = []
    async with waiting(60, "the Spring run's commits, the reconciler passing meanwhile"):
        while not spring.done():
            taken += await reconciler.reconcile()
            await asyncio.sleep(0.2)
    await spring
    assert taken == []

    async def taken_over() -> bool:
        return bool(await reconciler.reconcile())

    await until(taken_over, within=30, every=0.2, what="the takeover of the silent run")
    [(status, message)] = await fetch_all(
        pool,
        "SELECT STATUS, EXIT_MESSAGE FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s",
        (run.execution_id,),
    )
    assert status == "FAILED"
    silence = int(message.removeprefix("abandoned: no heartbeat for ").split(" ")[0])
    assert silence >= 2, message


# ---- a checkpoint belongs to the step execution that wrote it --------------------------


async def test_a_checkpoint_springs_restart_copied_is_not_resumed(
    pool: Pool, settings: Settings
) -> None:
    """SimpleStepHandler.java:133-142 copies the last step's whole context into the
    restarted step; getLastStepExecution orders by CREATE_TIME, then id
    (JdbcStepExecutionDao.java:121-123, :354). This service resumes only from a checkpoint
    its own step execution wrote, and its steps sort after Spring's on one clock."""
    repository = MariaDbJobRepository.of(pool, platform(settings))
    ours = await this_services_failed_run(repository, "2025-10-31", checkpoint=3)
    copied = await stored_context(pool, ours)
    assert copied == {"checkpoint": 3, "checkpoint.stepExecutionId": ours}

    spring = await spring_launch(pool, "2025-10-31", step_context=copied)
    await spring.fail()  # Spring's restart failed
    execution = await repository.get_execution(spring.execution_id)
    assert execution is not None
    [spring_step] = execution.steps
    assert spring_step.context["checkpoint"] == 3 and spring_step.checkpoint is None

    again = await repository.start_execution(STATS, params("2025-10-31"), rerun_completed=False)
    fresh = await repository.start_step(again, STEP)
    assert fresh.checkpoint is None
    by_create_time = await fetch_all(
        pool,
        "SELECT STEP_EXECUTION_ID FROM BATCH_STEP_EXECUTION"
        " ORDER BY CREATE_TIME DESC, STEP_EXECUTION_ID DESC",
    )
    assert [row[0] for row in by_create_time] == [fresh.id, spring.step_id, ours]


async def test_this_services_own_checkpoint_is_resumed(pool: Pool, settings: Settings) -> None:
    repository = MariaDbJobRepository.of(pool, platform(settings))
    await this_services_failed_run(repository, "2025-10-31", checkpoint=3)
    again = await repository.start_execution(STATS, params("2025-10-31"), rerun_completed=False)
    assert (await repository.start_step(again, STEP)).checkpoint == 3


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    """The store service with the old service's test stores (1 to 9)."""
    stores = {str(n): f"동{n}" for n in range(1, 10)}
    async with run_fake_peers({"stores": stores, "tokens": {}}, key=TEST_JWT_KEY) as peers:
        yield peers


async def test_after_springs_failed_restart_this_service_reads_every_member(
    client: Client, pool: Pool
) -> None:
    """This service's stats run FAILED after member 3; Spring's restart copied its
    checkpoint and failed; this service's next run reads all five members again."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(OLD_SERVICE_HISTORIES.read_text(encoding="utf-8"))
    api = await client(DB_TIMEZONE="Asia/Seoul")
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120, zone=SEOUL)
    ours = await this_services_failed_run(repository, "2025-10-31", checkpoint=3)
    spring = await spring_launch(pool, "2025-10-31", step_context=await stored_context(pool, ours))
    await spring.fail()

    resp = await api.post("/api/v1/jobs/coupon-usage-stats?runDate=2025-10-31", headers=bearer())
    assert resp.status == 202, await resp.text()
    done = await until_finished(api, resp.headers["Location"])
    assert (done["status"], done["readCount"], done["writeCount"]) == ("COMPLETED", 5, 4)
    assert await fetch_all(
        pool, "SELECT COUNT(*) FROM coupon_usage_stats WHERE aggregated_at = '2025-10-31'"
    ) == [(4,)]


# ---- Spring's refusal rules, and the roll-back's preparation --------------------------


@pytest.mark.parametrize(
    ("executions", "expected"),
    [
        ([(3, Status.FAILED, True), (2, Status.STOPPED, True)], None),
        ([(3, Status.FAILED, True), (2, Status.COMPLETED, True)], (2, "InstanceAlreadyComplete")),
        ([(3, Status.FAILED, True), (2, Status.ABANDONED, True)], (2, "InstanceAlreadyComplete")),
        ([(3, Status.FAILED, True), (2, Status.COMPLETED, False)], None),
        ([(3, Status.UNKNOWN, True), (2, Status.COMPLETED, True)], (3, "Restart")),
        ([(3, Status.COMPLETED, True), (2, Status.UNKNOWN, True)], (3, "InstanceAlreadyComplete")),
        ([(3, Status.FAILED, True), (2, Status.STARTED, True)], (2, "ExecutionAlreadyRunning")),
    ],
)
def test_springs_launch_refusal_is_simple_job_repositorys(
    executions: list[tuple[int, Status, bool]], expected: tuple[int, str] | None
) -> None:
    """SimpleJobRepository.java:143-164: every execution, newest first; a running one
    throws JobExecutionAlreadyRunningException, an UNKNOWN one JobRestartException, a
    COMPLETED or ABANDONED one with identifying parameters
    JobInstanceAlreadyCompleteException; the first match decides."""
    refusal = spring_launch_refusal(executions)
    if expected is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.execution_id, refusal.exception) == (
            expected[0],
            f"Job{expected[1]}Exception",
        )


async def rollback(
    settings: Settings, tmp_path: Path, *args: str, answers: str = ""
) -> tuple[int, str, str]:
    env = cli_environment(settings, DB_URL=platform(settings).DB_URL, JOB_ABANDON_AFTER_SECONDS=2)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app", "prepare-rollback", *args),
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with waiting(60, "prepare-rollback's exit"):
        out, err = await process.communicate(answers.encode())
    return process.returncode, out.decode(), err.decode()


async def test_prepare_rollback_lists_what_spring_trips_on_and_ends_it_on_the_operators_word(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """A run of this service left STARTED by a crash, a killed Spring run, and an instance
    this service reran after it completed and that failed since: three things Spring
    trips on. The operator stops the first, abandons the second; the third needs a run."""
    repository = MariaDbJobRepository.of(pool, platform(settings))
    crashed = await repository.start_execution(STATS, params("2025-11-01"), rerun_completed=False)
    killed = await spring_launch(pool, "2025-11-02")
    await killed.age(job_seconds=60, step_seconds=30)
    done = await repository.start_execution(STATS, params("2025-10-30"), rerun_completed=False)
    await repository.finish_execution(done.id, Status.COMPLETED)
    rerun = await repository.start_execution(STATS, params("2025-10-30"), rerun_completed=True)
    await repository.finish_execution(rerun.id, Status.FAILED, "boom")

    code, out, err = await rollback(settings, tmp_path, "--spring-timezone", "Asia/Seoul")
    assert (code, err) == (EXIT_FAILED, "")
    lines = out.splitlines()
    assert lines[0] == (
        "BATCH_* times: Asia/Seoul (UTC+09:00), from DB_URL serverTimezone"
        " (the database session's: UTC+00:00)"
    )
    assert "  the old service's zone, Asia/Seoul, is this clock's" in lines
    assert any(
        line.startswith(f"  execution {crashed.id} {STATS} runDate=2025-11-01 STARTED")
        for line in lines
    )
    assert any(
        line.startswith(f"  execution {killed.execution_id} {STATS} runDate=2025-11-02 STARTED")
        for line in lines
    )
    assert (
        f"  execution {rerun.id} {STATS} runDate=2025-10-30 FAILED:"
        f" JobInstanceAlreadyCompleteException (execution {done.id} is COMPLETED)"
    ) in "\n".join(lines)
    assert lines[-1] == "not ready: 3 thing(s) above that Spring Batch would trip on"
    assert (await repository.get_execution(crashed.id)).status == "STARTED"  # type: ignore[union-attr]

    code, out, _ = await rollback(settings, tmp_path, answers="s\na\n")
    assert code == EXIT_FAILED
    assert f"execution {crashed.id}: STOPPED" in out.splitlines()
    assert f"execution {killed.execution_id}: ABANDONED" in out.splitlines()
    assert out.splitlines()[-1] == "not ready: 1 thing(s) above that Spring Batch would trip on"
    stopped = await repository.get_execution(crashed.id)
    assert stopped is not None and stopped.exit_message.endswith(
        "stopped for a roll-back to Spring Batch"
    )

    await repository.abandon(rerun.id)
    code, out, _ = await rollback(settings, tmp_path, "--stop")
    assert code == 0
    assert out.splitlines()[-1] == "ready: nothing here that Spring Batch would trip on"


async def test_prepare_rollback_names_a_zone_mismatch(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    code, out, _ = await rollback(settings, tmp_path, "--spring-timezone", "UTC")
    assert code == EXIT_FAILED
    assert (
        "  ZONE MISMATCH: the old service writes BATCH_* times in UTC (UTC+00:00)"
        " (--spring-timezone UTC), this service in Asia/Seoul (UTC+09:00)"
    ) in out
    code, out, err = await rollback(settings, tmp_path, "--spring-timezone", "Mars/Olympus")
    assert (code, out) == (2, "")
    assert err == "error: --spring-timezone is not a known time zone (got 'Mars/Olympus')\n"
