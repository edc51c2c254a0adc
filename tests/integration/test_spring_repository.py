"""One job repository with the old Spring Batch 5.2 service (issue 19): its rows, written
as its JDBC DAOs write them, are listed and resumed; what this service writes is what
Spring reads, checked with a real JDK."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.model import ChunkCounts, JobParameter, Status
from app.repository.mariadb import MariaDbJobRepository
from app.schema.migrate import migrate
from app.spring_format import UNDECODABLE, decode_context, job_key, legacy_job_key
from tests.integration.test_cli_database_errors import cli
from tests.integration.test_web_api import Client, bearer, client, until_finished
from tests.reliability.support import cli_environment
from tests.settings import TEST_JWT_KEY

__all__ = ["client"]  # the fixture, shared with test_web_api

HERE = Path(__file__).parent / "spring"
# The old service's own test rows (its coupon_histories fixture), which the demo loads too
OLD_SERVICE_HISTORIES = Path(__file__).parents[2] / "scripts" / "demo_data" / "coupon_histories.sql"
STATS, FANOUT = "couponUsageStatsJob", "couponUsageStatsFcmSendJob"
# Java's ObjectOutputStream (Spring's DefaultExecutionContextSerializer): an empty map, and
# a chunk step's context (tests/integration/spring/ContextCheck.java `write` printed it).
EMPTY_CONTEXT = (
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhwP0AA"
    "AAAAAAB3CAAAABAAAAAAeA=="
)
SPRING_STEP_CONTEXT = (
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3RvckkACXRocmVzaG9sZHhwP0AA"
    "AAAAAAx3CAAAABAAAAAGdAAFdG90YWxzcgAOamF2YS5sYW5nLkxvbmc7i+SQzI8j3wIAAUoABXZhbHVleHIAEGph"
    "dmEubGFuZy5OdW1iZXKGrJUdC5TgiwIAAHhwAAABH3H7BMt0ABFiYXRjaC50YXNrbGV0VHlwZXQAPW9yZy5zcHJp"
    "bmdmcmFtZXdvcmsuYmF0Y2guY29yZS5zdGVwLml0ZW0uQ2h1bmtPcmllbnRlZFRhc2tsZXR0AAlyZXN0YXJ0ZWRz"
    "cgARamF2YS5sYW5nLkJvb2xlYW7NIHKA1Zz67gIAAVoABXZhbHVleHABdAAeY291cG9uSGlzdG9yeVJlYWRlci5y"
    "ZWFkLmNvdW50c3IAEWphdmEubGFuZy5JbnRlZ2VyEuKgpPeBhzgCAAFJAAV2YWx1ZXhxAH4ABAAAAAp0AAlsYXN0"
    "U3RvcmV0AAzrhbjrn4nsp4Trj5l0AA5iYXRjaC5zdGVwVHlwZXQAN29yZy5zcHJpbmdmcmFtZXdvcmsuYmF0Y2gu"
    "Y29yZS5zdGVwLnRhc2tsZXQuVGFza2xldFN0ZXB4"
)
SPRING_STEP_VALUES = {
    "batch.taskletType": "org.springframework.batch.core.step.item.ChunkOrientedTasklet",
    "batch.stepType": "org.springframework.batch.core.step.tasklet.TaskletStep",
    "couponHistoryReader.read.count": 10,  # an Integer
    "lastStore": "노량진동",
    "total": 1234567890123,  # a Long
    "restarted": True,
}
FAILED_EXECUTION, UNKNOWN_EXECUTION = 7, 8  # the old service's ids


async def insert_old_service_rows(pool: Pool) -> None:
    """What the old service left, as JdbcJobInstanceDao, JdbcJobExecutionDao,
    JdbcStepExecutionDao and JdbcExecutionContextDao write it: a FAILED stats run of
    2025-10-31 (runDate a LocalDate) and a fan-out run of 2025-10-25 10h whose end could
    not be recorded (UNKNOWN; targetHour a Long, as JobParametersBuilder.addLong gives)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SET FOREIGN_KEY_CHECKS = 1")
        for sequence, last in (
            ("BATCH_JOB_SEQ", 2),
            ("BATCH_JOB_EXECUTION_SEQ", UNKNOWN_EXECUTION),
            ("BATCH_STEP_EXECUTION_SEQ", 12),
        ):
            await cur.execute(f"UPDATE {sequence} SET ID = %s", (last,))
        await cur.executemany(
            "INSERT INTO BATCH_JOB_INSTANCE (JOB_INSTANCE_ID, VERSION, JOB_NAME, JOB_KEY)"
            " VALUES (%s, 0, %s, %s)",
            [
                (1, STATS, "85e04c2961a946d5d9c8b33fd48a65ab"),
                (2, FANOUT, "294573cc895ff838927734fbac7a4c94"),
            ],
        )
        await cur.executemany(
            "INSERT INTO BATCH_JOB_EXECUTION (JOB_EXECUTION_ID, VERSION, JOB_INSTANCE_ID,"
            " CREATE_TIME, START_TIME, END_TIME, STATUS, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    FAILED_EXECUTION, 2, 1, "2025-11-01 01:00:00.001", "2025-11-01 01:00:00.010",
                    "2025-11-01 01:00:03.500", "FAILED", "FAILED",
                    "org.springframework.dao.DataAccessResourceFailureException: timeout",
                    "2025-11-01 01:00:03.500",
                ),
                (
                    UNKNOWN_EXECUTION, 1, 2, "2025-10-25 10:00:00.001", "2025-10-25 10:00:00.010",
                    None, "UNKNOWN", "UNKNOWN", "", "2025-10-25 10:00:01.000",
                ),
            ],
        )  # fmt: skip
        await cur.executemany(
            "INSERT INTO BATCH_JOB_EXECUTION_PARAMS (JOB_EXECUTION_ID, PARAMETER_NAME,"
            " PARAMETER_TYPE, PARAMETER_VALUE, IDENTIFYING) VALUES (%s, %s, %s, %s, %s)",
            [
                (FAILED_EXECUTION, "runDate", "java.time.LocalDate", "2025-10-31", "Y"),
                (UNKNOWN_EXECUTION, "runDate", "java.time.LocalDate", "2025-10-25", "Y"),
                (UNKNOWN_EXECUTION, "targetHour", "java.lang.Long", "10", "Y"),
                (UNKNOWN_EXECUTION, "dryRun", "java.lang.Boolean", "false", "N"),
            ],
        )
        await cur.executemany(
            "INSERT INTO BATCH_JOB_EXECUTION_CONTEXT (JOB_EXECUTION_ID, SHORT_CONTEXT,"
            " SERIALIZED_CONTEXT) VALUES (%s, %s, NULL)",
            [(FAILED_EXECUTION, EMPTY_CONTEXT), (UNKNOWN_EXECUTION, EMPTY_CONTEXT)],
        )
        await cur.execute(
            "INSERT INTO BATCH_STEP_EXECUTION (STEP_EXECUTION_ID, VERSION, STEP_NAME,"
            " JOB_EXECUTION_ID, CREATE_TIME, START_TIME, END_TIME, STATUS, COMMIT_COUNT,"
            " READ_COUNT, FILTER_COUNT, WRITE_COUNT, READ_SKIP_COUNT, WRITE_SKIP_COUNT,"
            " PROCESS_SKIP_COUNT, ROLLBACK_COUNT, EXIT_CODE, EXIT_MESSAGE, LAST_UPDATED)"
            " VALUES (12, 3, 'couponUsageStatsStep', %s, '2025-11-01 01:00:00.020',"
            " '2025-11-01 01:00:00.020', '2025-11-01 01:00:03.400', 'FAILED', 1, 10, 0, 10,"
            " 0, 0, 0, 1, 'FAILED', 'timeout', '2025-11-01 01:00:03.400')",
            (FAILED_EXECUTION,),
        )
        await cur.execute(
            "INSERT INTO BATCH_STEP_EXECUTION_CONTEXT (STEP_EXECUTION_ID, SHORT_CONTEXT,"
            " SERIALIZED_CONTEXT) VALUES (12, %s, NULL)",
            (SPRING_STEP_CONTEXT,),
        )
        sql = OLD_SERVICE_HISTORIES.read_text(encoding="utf-8")
        await cur.execute(sql)


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    """The store service with the old service's test stores (1 to 9)."""
    stores = {str(n): f"동{n}" for n in range(1, 10)}
    async with run_fake_peers({"stores": stores, "tokens": {}}, key=TEST_JWT_KEY) as peers:
        yield peers


async def listed(api: TestClient, path: str) -> list[tuple[int, str, str, str]]:
    resp = await api.get(path, headers=bearer())
    assert resp.status == 200, await resp.text()
    return [
        (e["executionId"], e["jobName"], e["status"], e["exitCode"])
        for e in (await resp.json())["executions"]
    ]


async def test_the_old_services_rows_are_listed_and_its_failed_instance_resumed(
    client: Client, pool: Pool
) -> None:
    await insert_old_service_rows(pool)
    api = await client()
    old = [
        (UNKNOWN_EXECUTION, FANOUT, "UNKNOWN", "UNKNOWN"),
        (FAILED_EXECUTION, STATS, "FAILED", "FAILED"),
    ]
    assert await listed(api, "/api/v1/jobs/executions") == old  # the console's list
    assert await listed(api, "/api/v1/jobs/executions?status=UNKNOWN") == old[:1]
    assert await listed(api, f"/api/v1/jobs/{STATS}/executions") == old[1:]
    resp = await api.get(f"/api/v1/jobs/executions/{FAILED_EXECUTION}", headers=bearer())
    view = await resp.json()
    assert view["parameters"] == {"runDate": "2025-10-31"}
    steps = [
        (s["stepName"], s["status"], s["readCount"], s["checkpoint"], s["contextError"])
        for s in view["steps"]
    ]
    assert steps == [("couponUsageStatsStep", "FAILED", 10, None, None)]

    resp = await api.post("/api/v1/jobs/coupon-usage-stats?runDate=2025-10-31", headers=bearer())
    assert resp.status == 202, await resp.text()
    done = await until_finished(api, resp.headers["Location"])
    assert (done["status"], done["exitCode"]) == ("COMPLETED", "COMPLETED")
    assert (done["readCount"], done["writeCount"], done["filterCount"]) == (5, 4, 1)
    # the old service's instance, resumed from scratch (its context has no checkpoint of ours)
    rows = await fetch_all(
        pool,
        "SELECT JOB_EXECUTION_ID, JOB_INSTANCE_ID, VERSION, STATUS, EXIT_CODE"
        " FROM BATCH_JOB_EXECUTION ORDER BY JOB_EXECUTION_ID",
    )
    assert rows[:2] == [
        (FAILED_EXECUTION, 1, 2, "FAILED", "FAILED"),
        (UNKNOWN_EXECUTION, 2, 1, "UNKNOWN", "UNKNOWN"),
    ]
    (new_id, instance, version, status, exit_code) = rows[2]
    assert (new_id, instance, status, exit_code) == (9, 1, "COMPLETED", "COMPLETED")
    assert version >= 1  # 0 at insert, +1 for its end (and each heartbeat)
    assert await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_INSTANCE") == [(2,)]
    assert await fetch_all(
        pool, "SELECT COUNT(*) FROM coupon_usage_stats WHERE aggregated_at = '2025-10-31'"
    ) == [(4,)]


async def test_the_cli_lists_and_restarts_the_old_services_rows(
    pool: Pool, settings: Settings, fake: FakePeers, tmp_path: Path
) -> None:
    await insert_old_service_rows(pool)
    peers = {"STORE_SERVICE_URL": fake.store_url, "NOTIFICATION_SERVICE_URL": fake.notification_url}
    env = cli_environment(settings, **peers)
    code, out, err = await cli(["executions"], env, tmp_path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1].split()[:3] == [str(UNKNOWN_EXECUTION), FANOUT, "UNKNOWN"]
    assert lines[2].split()[:3] == [str(FAILED_EXECUTION), STATS, "FAILED"]
    code, out, err = await cli(["executions", "--status", "UNKNOWN"], env, tmp_path)
    assert (code, len(out.splitlines()), err) == (0, 2, "")
    code, _, err = await cli(["restart", str(FAILED_EXECUTION), "--quiet"], env, tmp_path)
    assert code == 0, err
    assert await fetch_all(
        pool,
        "SELECT JOB_INSTANCE_ID, STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID > %s",
        (UNKNOWN_EXECUTION,),
    ) == [(1, "COMPLETED")]


async def test_a_launch_finds_the_instance_under_the_old_services_types(pool: Pool) -> None:
    await insert_old_service_rows(pool)
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    fanout = [
        JobParameter("runDate", "java.time.LocalDate", "2025-10-25"),
        JobParameter("targetHour", "java.lang.Integer", "10"),
        JobParameter("dryRun", "java.lang.Boolean", "false", identifying=False),
    ]
    # UNKNOWN is neither running nor completed: a new execution of the same instance
    execution = await repository.start_execution(FANOUT, fanout, rerun_completed=False)
    assert execution.instance_id == 2
    # the parameters are recorded with this service's types
    assert await repository.get_parameters(execution.id) == fanout


async def test_an_instance_under_this_services_legacy_key_resumes_its_json_checkpoint(
    pool: Pool,
) -> None:
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    params = [JobParameter("runDate", "java.time.LocalDate", "2025-10-30")]
    first = await repository.start_execution(STATS, params, rerun_completed=False)
    step = await repository.start_step(first, "couponUsageStatsStep")
    await repository.finish_step(step.id, Status.FAILED, "boom")
    await repository.finish_execution(first.id, Status.FAILED, "boom")
    async with pool.acquire() as conn, conn.cursor() as cur:  # as the service wrote before
        await cur.execute(
            "UPDATE BATCH_JOB_INSTANCE SET JOB_KEY = MD5('runDate=2025-10-30;')"
            " WHERE JOB_INSTANCE_ID = %s",
            (first.instance_id,),
        )
        await cur.execute(
            "UPDATE BATCH_STEP_EXECUTION_CONTEXT SET SHORT_CONTEXT = '{\"checkpoint\": 4242}'"
            " WHERE STEP_EXECUTION_ID = %s",
            (step.id,),
        )
    second = await repository.start_execution(STATS, params, rerun_completed=False)
    assert second.instance_id == first.instance_id
    assert (await repository.start_step(second, "couponUsageStatsStep")).checkpoint == 4242


async def test_v004_gives_instances_under_the_former_key_springs_key(pool: Pool) -> None:
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    stats = [JobParameter("runDate", "java.time.LocalDate", "2025-10-30")]
    fanout = [
        JobParameter("runDate", "java.time.LocalDate", "2025-10-25"),
        JobParameter("targetHour", "java.lang.Integer", "10"),
        JobParameter("dryRun", "java.lang.Boolean", "false", identifying=False),
    ]
    taken = [JobParameter("runDate", "java.time.LocalDate", "2025-10-29")]
    ids = {}
    for job, params in ((STATS, stats), (FANOUT, fanout), (STATS, taken)):
        execution = await repository.start_execution(job, params, rerun_completed=False)
        ids[execution.instance_id] = params
    async with pool.acquire() as conn, conn.cursor() as cur:  # as the service wrote them before
        for instance_id, params in ids.items():
            await cur.execute(
                "UPDATE BATCH_JOB_INSTANCE SET JOB_KEY = %s WHERE JOB_INSTANCE_ID = %s",
                (legacy_job_key(params), instance_id),
            )
        await cur.execute(  # another instance holds the third one's Spring key already
            "INSERT INTO BATCH_JOB_INSTANCE (JOB_INSTANCE_ID, VERSION, JOB_NAME, JOB_KEY)"
            " VALUES (99, 0, %s, %s)",
            (STATS, job_key(taken)),
        )
        await cur.execute("DELETE FROM batch_service_schema_history WHERE version = 4")
        await conn.commit()
    assert await migrate(pool) == ["V004__spring_batch_job_keys"]
    first, second, third = ids
    assert await fetch_all(
        pool, "SELECT JOB_INSTANCE_ID, JOB_KEY, VERSION FROM BATCH_JOB_INSTANCE ORDER BY 1"
    ) == [
        (first, job_key(stats), 1),
        (second, "3e8b9023c2d1676364fe03291bbdb688", 1),
        (third, legacy_job_key(taken), 0),
        (99, job_key(taken), 0),
    ]


async def test_an_undecodable_context_is_shown_as_such_and_never_a_500(
    client: Client, pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    await insert_old_service_rows(pool)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE BATCH_STEP_EXECUTION_CONTEXT SET SHORT_CONTEXT = 'rO0ABXNy'")
        await cur.execute("UPDATE BATCH_JOB_EXECUTION_CONTEXT SET SHORT_CONTEXT = '{broken'")
    api = await client()
    resp = await api.get(f"/api/v1/jobs/executions/{FAILED_EXECUTION}", headers=bearer())
    assert resp.status == 200
    (step,) = (await resp.json())["steps"]
    assert step["checkpoint"] is None
    assert step["contextError"].startswith("EOFError")
    assert len(await listed(api, "/api/v1/jobs/executions")) == 2
    code, out, _ = await cli(["executions"], cli_environment(settings), tmp_path)
    assert (code, len(out.splitlines())) == (0, 3)
    execution = await MariaDbJobRepository(pool, abandon_after_seconds=1).get_execution(
        FAILED_EXECUTION
    )
    assert execution is not None and list(execution.context) == [UNDECODABLE]


async def test_rows_this_service_writes_follow_springs_conventions(pool: Pool) -> None:
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    params = [JobParameter("runDate", "java.time.LocalDate", "2025-10-31")]
    execution = await repository.start_execution(STATS, params, rerun_completed=False)
    step = await repository.start_step(execution, "couponUsageStatsStep")
    assert await fetch_all(pool, "SELECT JOB_KEY, VERSION FROM BATCH_JOB_INSTANCE") == [
        (job_key(params), 0)
    ]
    assert await fetch_all(pool, "SELECT VERSION, EXIT_CODE FROM BATCH_JOB_EXECUTION") == [
        (0, "UNKNOWN")
    ]
    assert await fetch_all(pool, "SELECT VERSION, EXIT_CODE FROM BATCH_STEP_EXECUTION") == [
        (0, "EXECUTING")
    ]
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, step.id, ChunkCounts(2, 2, 0, 0), {"checkpoint": 9}, 0)
        await conn.commit()
    await repository.heartbeat(execution.id)
    await repository.finish_step(step.id, Status.COMPLETED)
    await repository.finish_execution(execution.id, Status.COMPLETED)
    assert await fetch_all(pool, "SELECT VERSION, EXIT_CODE FROM BATCH_JOB_EXECUTION") == [
        (2, "COMPLETED")
    ]
    assert await fetch_all(pool, "SELECT VERSION, EXIT_CODE FROM BATCH_STEP_EXECUTION") == [
        (2, "COMPLETED")
    ]


# ---- a real JDK ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def context_check(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`java ContextCheck`, compiled here: `read` describes base64 contexts (one a line)
    with their Java types, as ObjectInputStream reads them; `write` prints a context of a
    Spring chunk step, as ObjectOutputStream writes it."""
    if shutil.which("javac") is None:
        pytest.skip("no javac (scripts/bootstrap installs openjdk-17-jdk-headless)")
    classes = tmp_path_factory.mktemp("java")
    subprocess.run(
        ["javac", "-d", str(classes), str(HERE / "ContextCheck.java")], check=True, timeout=120
    )
    return ["java", "-cp", str(classes), "ContextCheck"]


async def java(command: list[str], *args: str, stdin: str = "") -> list[str]:
    done = await asyncio.to_thread(
        subprocess.run, [*command, *args], input=stdin, capture_output=True, text=True,
        encoding="utf-8", timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


async def test_java_reads_every_context_this_service_writes(
    context_check: list[str], pool: Pool
) -> None:
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    params = [JobParameter("runDate", "java.time.LocalDate", "2025-10-31")]
    execution = await repository.start_execution(STATS, params, rerun_completed=False)
    await repository.set_execution_context(execution.id, {"dryRunOutput": "var/노량진동 😀.jsonl"})
    step = await repository.start_step(execution, "couponUsageStatsStep")
    fresh = await repository.start_step(execution, "anotherStep")
    context = {
        "checkpoint": 4242,
        "skipped": [17, 42],
        "messages": {"published": 3, "confirmed": 2},
    }
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, step.id, ChunkCounts(3, 1, 0, 2), context, 0)
        await conn.commit()
    long_context = {"checkpoint": 7, "skipped": list(range(10**12, 10**12 + 300))}
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, fresh.id, ChunkCounts(1, 1, 0, 0), long_context, 0)
        await conn.commit()

    rows = await fetch_all(
        pool,
        "SELECT SHORT_CONTEXT, SERIALIZED_CONTEXT FROM BATCH_JOB_EXECUTION_CONTEXT"
        " UNION ALL SELECT SHORT_CONTEXT, SERIALIZED_CONTEXT FROM BATCH_STEP_EXECUTION_CONTEXT"
        " ORDER BY 2, 1",
    )
    # Spring reads SERIALIZED_CONTEXT when it is set, SHORT_CONTEXT otherwise
    described = await java(context_check, "read", stdin="".join(f"{s or t}\n" for t, s in rows))
    long_list = ", ".join(f"java.lang.Long:{n}" for n in range(10**12, 10**12 + 300))
    assert sorted(described) == sorted(
        [
            "java.util.HashMap{dryRunOutput=java.lang.String:var/노량진동 😀.jsonl}",
            "java.util.HashMap{checkpoint=java.lang.Long:4242,"
            f" checkpoint.stepExecutionId=java.lang.Long:{step.id}, messages=java.util.HashMap"
            "{confirmed=java.lang.Long:2, published=java.lang.Long:3},"
            " skipped=java.util.ArrayList[java.lang.Long:17, java.lang.Long:42]}",
            "java.util.HashMap{checkpoint=java.lang.Long:7,"
            f" checkpoint.stepExecutionId=java.lang.Long:{fresh.id},"
            f" skipped=java.util.ArrayList[{long_list}]}}",
        ]
    )
    (short, serialized) = next(row for row in rows if row[1] is not None)
    assert len(short) == 2496 and short == serialized[:2492] + " ..."


async def test_contexts_java_writes_are_read(context_check: list[str]) -> None:
    (written,) = await java(context_check, "write")
    assert decode_context(written, None) == SPRING_STEP_VALUES
    assert decode_context(SPRING_STEP_CONTEXT, None) == SPRING_STEP_VALUES
