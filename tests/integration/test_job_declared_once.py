"""A job is declared once (issue 20): a third job, declared here and nowhere else, is in the
CLI (its choices, its flags, a run), the OpenAPI document, the API's job list that the
console renders its forms from, the schedules and the figure its alert reads, with no other
file changed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from asyncmy.connection import Connection
from asyncmy.pool import Pool

from app.__main__ import EXIT_USAGE
from app.composition import JOBS
from app.config import Settings
from app.edges.db import fetch_all
from app.model import JobParameter, Status
from app.pipeline.chunk import Chunk, Processed, StepDefinition
from app.pipeline.writers import DatabaseWriter
from app.replicas import ReplicaRegistry
from app.runtime.automation import RestartPolicy, Schedule, due_slot, schedules_of
from app.runtime.job import Cron, JobContext, JobSpec, Parameter
from app.runtime.launcher import Launcher
from app.runtime.parameters import INTEGER, LOCAL_DATE, now_in, run_date
from app.runtime.resources import open_resources
from app.runtime.scheduler import ScheduledRun, Scheduler, scheduled_runs
from app.web.app import create_app
from app.web.openapi import openapi
from tests.integration.test_web_api import bearer
from tests.reliability.support import cli_environment

ROOT = Path(__file__).resolve().parents[2]
SEOUL = ZoneInfo("Asia/Seoul")


# ---- the third job: its declaration and its code ------------------------------------


def parse(raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
    limit = raw.get("limit") or "3"
    return [run_date(raw), JobParameter("limit", INTEGER, str(int(limit)))]


def build(context: JobContext) -> StepDefinition[int, list[tuple[int, int, str]]]:
    """Copies the first `limit` numbers of digest_numbers, doubled, for the run date."""
    day, limit = context.parameters["runDate"], int(context.parameters["limit"])
    pool = context.resources.pool

    async def numbers() -> AsyncGenerator[list[int], None]:
        rows = await fetch_all(pool, "SELECT n FROM digest_numbers ORDER BY n LIMIT %s", (limit,))
        yield [int(n) for (n,) in rows]

    async def read(checkpoint: Any) -> AsyncGenerator[list[int], None]:
        return numbers()

    async def process(chunk: Chunk[int]) -> Processed[list[tuple[int, int, str]]]:
        return Processed([(n, 2 * n, day) for n in chunk.items])

    async def write(conn: Connection, rows: list[tuple[int, int, str]]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO digest_doubles VALUES (%s, %s, %s)", rows)

    return StepDefinition(
        name="weeklyDigestStep",
        read=read,
        process=process,
        writer=DatabaseWriter(write),
        item_key=lambda n: n,
    )


DIGEST = JobSpec(
    name="weeklyDigestJob",
    path="weekly-digest",
    title="Weekly digest",
    parameters=(
        Parameter("runDate", LOCAL_DATE, "YYYY-MM-DD"),
        Parameter("limit", INTEGER, "how many numbers to copy", default="3"),
    ),
    parse=parse,
    build=build,
    backfills=True,
    schedule=Cron("0 9 * * 1", lambda at: {"runDate": at.date().isoformat()}),
)
WITH_DIGEST = (*JOBS, DIGEST)

# `python -m app` with the third job added to the composition root's.
_CLI = (
    "import sys, app.__main__ as cli, app.composition as root;"
    " from tests.integration.test_job_declared_once import DIGEST;"
    " root.JOBS = cli.JOBS = (*root.JOBS, DIGEST);"
    " sys.exit(cli.main())"
)


async def cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLI, *args,
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def tables(pool: Pool) -> AsyncIterator[Pool]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE IF EXISTS digest_numbers, digest_doubles")
        await cur.execute("CREATE TABLE digest_numbers (n INT PRIMARY KEY)")
        await cur.execute("CREATE TABLE digest_doubles (n INT, doubled INT, run_date DATE)")
        await cur.execute("INSERT INTO digest_numbers VALUES (1), (2), (3), (4), (5)")
    yield pool
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE digest_numbers, digest_doubles")


async def doubles(pool: Pool) -> list[tuple[int, int, date]]:
    rows = await fetch_all(pool, "SELECT n, doubled, run_date FROM digest_doubles ORDER BY n")
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_the_cli_offers_the_job_its_flags_and_runs_it(
    tables: Pool, settings: Settings, tmp_path: Path
) -> None:
    env = {**cli_environment(settings), "COLUMNS": "200"}
    code, out, _ = await cli(env, tmp_path, "run", "--help")
    assert code == 0
    assert "{coupon-usage-stats,coupon-usage-stats-fcm-send,weekly-digest}" in out
    assert "--limit LIMIT         how many numbers to copy (weekly-digest: default 3)" in out
    code, out, _ = await cli(env, tmp_path, "backfill", "--help")
    assert "{coupon-usage-stats,weekly-digest}" in out

    code, _, err = await cli(
        env, tmp_path, "run", "weekly-digest", "--run-date", "2025-10-27", "--limit", "2",
        "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "weeklyDigestJob execution" in err
    assert await doubles(tables) == [(1, 2, date(2025, 10, 27)), (2, 4, date(2025, 10, 27))]
    (execution,) = await fetch_all(
        tables,
        "SELECT p.PARAMETER_NAME, p.PARAMETER_TYPE, p.PARAMETER_VALUE, e.STATUS"
        " FROM BATCH_JOB_EXECUTION_PARAMS p"
        " JOIN BATCH_JOB_EXECUTION e ON e.JOB_EXECUTION_ID = p.JOB_EXECUTION_ID"
        " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
        " WHERE i.JOB_NAME = 'weeklyDigestJob' AND p.PARAMETER_NAME = 'limit'",
    )
    assert tuple(execution) == ("limit", "java.lang.Integer", "2", "COMPLETED")


def test_the_openapi_document_names_the_job_and_its_parameters() -> None:
    document = openapi(WITH_DIGEST)
    launch = document["paths"]["/api/v1/jobs/{jobName}"]["post"]["parameters"]
    (job_name,) = [p for p in launch if p["name"] == "jobName"]
    assert "`weekly-digest` (`weeklyDigestJob`)" in job_name["description"]
    (limit,) = [p for p in launch if p["name"] == "limit"]
    assert limit == {
        "name": "limit",
        "in": "query",
        "description": "how many numbers to copy (weekly-digest: default 3)",
        "schema": {"type": "integer"},
    }
    (day,) = [p for p in launch if p["name"] == "runDate"]
    assert "weekly-digest: required" in day["description"]
    without = openapi(JOBS)["paths"]["/api/v1/jobs/{jobName}"]["post"]["parameters"]
    assert [p["name"] for p in without] == [
        "jobName", "runDate", "dryRun", "targetHour", "from", "to"
    ]  # fmt: skip
    # a declared parameter's choices bound it, as the hand-written document did
    assert without[3]["schema"] == {"type": "integer", "minimum": 0, "maximum": 23}


async def test_the_job_list_that_the_console_renders_names_the_job(settings: Settings) -> None:
    launcher = SimpleNamespace(settings=settings, jobs={spec.path: spec for spec in WITH_DIGEST})
    app = create_app(launcher, {})  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/jobs", headers=bearer())
        assert resp.status == 200
        jobs = (await resp.json())["jobs"]
    assert [job["path"] for job in jobs] == [
        "coupon-usage-stats",
        "coupon-usage-stats-fcm-send",
        "weekly-digest",
    ]
    assert jobs[2] == {
        "name": "weeklyDigestJob",
        "path": "weekly-digest",
        "title": "Weekly digest",
        "parameters": [
            {
                "name": "runDate",
                "type": LOCAL_DATE,
                "help": "YYYY-MM-DD",
                "default": None,
                "choices": [],
            },
            {
                "name": "limit",
                "type": INTEGER,
                "help": "how many numbers to copy",
                "default": "3",
                "choices": [],
            },
        ],
        "schedule": {"cron": "0 9 * * 1", "punctual": False},
        "backfills": True,
        "publishes": False,
        "estimates": False,
        "confirm": "",
        # what its schedule would launch now: the console's form starts from it
        "suggested": {"runDate": now_in(settings.timezone).date().isoformat()},
    }


async def test_the_scheduler_fires_the_job_as_it_declares(tables: Pool, settings: Settings) -> None:
    *_, schedule = schedules_of(WITH_DIGEST)
    when = schedule.when
    assert (when.cron, schedule.job, when.punctual) == ("0 9 * * 1", DIGEST, False)
    assert isinstance(schedule, Schedule)
    monday = due_slot(when.cron, datetime.now(SEOUL))
    # Its run is due within the default allowance (an hour): what the alert reads, in a
    # process that ran the schedules since before it
    due = ScheduledRun("weeklyDigestJob", monday, None)
    since = monday - timedelta(days=1)
    policy = RestartPolicy(attempts=0, backoff_seconds=1, misfire_grace=timedelta(0))
    async with open_resources(settings, broker=False) as resources:
        launcher = Launcher(resources, WITH_DIGEST)
        late = monday + timedelta(hours=1, minutes=30)
        assert await scheduled_runs(launcher.repository, [schedule], late, since=since) == [due]
        registry = ReplicaRegistry(resources.pool, lease_seconds=120)
        scheduler = Scheduler(launcher, SEOUL, [schedule], policy, registry, every=60)
        await scheduler.run_pass()  # its last due time's instance, never launched
        await scheduler.stop()
        [run] = launcher.running.values()
        assert run.task is not None
        await run.task
        final = await launcher.repository.get_execution(run.execution.id)
        assert await scheduled_runs(launcher.repository, [schedule], late, since=since) == [
            replace(due, status=Status.COMPLETED)
        ]
    assert final is not None
    assert (final.status, final.parameters) == (
        Status.COMPLETED,
        {"runDate": monday.date().isoformat(), "limit": "3"},
    )
    assert await doubles(tables) == [(n, 2 * n, monday.date()) for n in (1, 2, 3)]


async def test_a_job_that_cannot_dry_run_refuses_a_dry_run_and_runs_nothing(
    tables: Pool, settings: Settings, tmp_path: Path
) -> None:
    """It declares no dryRun: --dry-run and dryRun=true are refused naming the job, never
    a real run (issue 26: before, the stats job, which declared none, ran for real)."""
    env = cli_environment(settings)
    assert await cli(
        env, tmp_path, "run", "weekly-digest", "--run-date", "2025-10-27", "--dry-run"
    ) == (
        EXIT_USAGE,
        "",
        "error: weekly-digest takes no --dry-run (its options: --run-date, --limit)\n",
    )
    async with open_resources(settings, broker=False) as resources:
        launcher = Launcher(resources, WITH_DIGEST)
        async with TestClient(TestServer(create_app(launcher, {}))) as client:
            path = "/api/v1/jobs/weekly-digest"
            resp = await client.post(f"{path}?runDate=2025-10-27&dryRun=true", headers=bearer())
            assert resp.status == 400
            error = (await resp.json())["error"]
    assert (error["code"], error["message"]) == (
        "INVALID_PARAMETER",
        "dryRun: is not a parameter of weekly-digest (it takes runDate, limit)",
    )
    assert await doubles(tables) == []
    assert await fetch_all(tables, "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION") == [(0,)]
