"""A job is one module and one migration (issues 20 and 29): a toy job, a daily count of
USED coupons per store, written into a folder of its own that JOB_DIRS names, and nothing
else changed, is in the CLI (its choices, its flags, its migration, a run), the OpenAPI
document, the API's job list that the console renders its forms from, the schedules and the
figure its alert reads, and the dashboard's per-job panels and the alerts, which name no
job but take each by its label."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from asyncmy.pool import Pool
from prometheus_client.parser import text_string_to_metric_families

from app.__main__ import EXIT_USAGE
from app.composition import JOBS, discover_jobs
from app.config import JOB_DIRS, Settings
from app.edges.db import fetch_all
from app.model import Status
from app.replicas import ReplicaRegistry
from app.runtime.automation import RestartPolicy, due_slot, schedules_of
from app.runtime.job import JobSpec, find_job
from app.runtime.launcher import Launcher
from app.runtime.parameters import LOCAL_DATE, now_in
from app.runtime.resources import open_resources
from app.runtime.scheduler import ScheduledRun, Scheduler, scheduled_runs
from app.schema.migrate import HISTORY_TABLE, migrate
from app.web.app import create_app
from app.web.openapi import openapi
from tests.dashboard import DASHBOARD
from tests.fakes import memory_launcher
from tests.integration.test_web_api import bearer
from tests.reliability.support import cli_environment
from tests.waits import waiting

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SEOUL = ZoneInfo("Asia/Seoul")

# ---- the toy job: one module, one migration -----------------------------------------

MODULE = '''
"""storeDailyUsesJob: each store's USED coupons of a day."""

from datetime import date, timedelta
from typing import Any

from app.pipeline.chunk import Chunk, Processed, Rows, StepDefinition
from app.pipeline.writers import KeyRangeWriter
from app.runtime.job import Cron, JobContext, JobSpec, Parameter
from app.runtime.parameters import LocalDate

_USES = (
    "SELECT store_id, COUNT(*) FROM coupon_histories WHERE coupon_status = 'USED'"
    " AND created_at >= %s AND created_at < %s AND store_id > %s"
    " GROUP BY store_id ORDER BY store_id"
)

Count = tuple[int, int]  # (store_id, uses)


def build(context: JobContext[Any]) -> StepDefinition[Count, list[Count]]:
    day = date.fromisoformat(context.parameters["runDate"])

    async def read(checkpoint: Any) -> Rows[Count]:
        args = (day, day + timedelta(days=1), checkpoint or 0)
        return Rows([(_USES, args)], lambda rows: [(int(s), int(n)) for s, n in rows])

    async def process(chunk: Chunk[Count]) -> Processed[list[Count]]:
        return Processed(chunk.items)

    return StepDefinition(
        name="storeDailyUsesStep",
        read=read,
        process=process,
        writer=KeyRangeWriter(
            "store_daily_uses", "store_id", ("store_id", "uses"), {"run_date": day}
        ),
        item_key=lambda count: count[0],
        item_label="store ids",
        final_chunk=True,
    )


SPEC = JobSpec(
    name="storeDailyUsesJob",
    path="store-daily-uses",
    title="Store daily uses",
    parameters=(Parameter("runDate", LocalDate(), "the day counted, YYYY-MM-DD"),),
    build=build,
    schedule=Cron("30 2 * * *", lambda at: {"runDate": str(at.date() - timedelta(days=1))}),
)
'''
MIGRATION = """
CREATE TABLE IF NOT EXISTS store_daily_uses (
    run_date DATE NOT NULL,
    store_id BIGINT NOT NULL,
    uses INT NOT NULL,
    PRIMARY KEY (run_date, store_id)
) ENGINE=InnoDB;
"""
VERSION = 900


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("jobs")
    (folder / "store_daily_uses_spec.py").write_text(MODULE, encoding="utf-8")
    (folder / f"V{VERSION}__store_daily_uses.sql").write_text(MIGRATION, encoding="utf-8")
    return folder


@pytest.fixture
def jobs(toy_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[JobSpec, ...]]:
    """The jobs as the app finds them with JOB_DIRS naming the toy's folder."""
    monkeypatch.setenv(JOB_DIRS, str(toy_folder))
    monkeypatch.setattr(sys, "path", list(sys.path))  # as it was, after the test
    yield discover_jobs()
    sys.modules.pop("store_daily_uses_spec", None)


@pytest.fixture
async def toy_table(pool: Pool, jobs: tuple[JobSpec, ...]) -> AsyncIterator[Pool]:
    """The toy's table, as its migration makes it; gone after the test, its migration
    with it."""
    yield pool
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE IF EXISTS store_daily_uses")
        await cur.execute(f"DELETE FROM {HISTORY_TABLE} WHERE version = %s", (VERSION,))


def toy(jobs: tuple[JobSpec, ...]) -> JobSpec:
    return find_job(jobs, "store-daily-uses")


async def add_uses(pool: Pool, day: date) -> None:
    """Store 7: two uses that day; store 9: one, and one the day before; store 8: one
    issued, none used."""
    rows = [(7, "USED", day), (7, "USED", day), (9, "USED", day), (9, "USED", day - timedelta(1))]
    rows.append((8, "ISSUED", day))
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (1, 1, %s, 1, %s, %s)",
            [(store, status, datetime.combine(at, datetime.min.time()).replace(hour=12))
             for store, status, at in rows],
        )  # fmt: skip


async def counts(pool: Pool) -> list[tuple[date, int, int]]:
    rows = await fetch_all(
        pool, "SELECT run_date, store_id, uses FROM store_daily_uses ORDER BY run_date, store_id"
    )
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args,
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with waiting(60, "the CLI's exit"):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


# ---- where it is found --------------------------------------------------------------


async def test_the_cli_offers_the_job_migrates_its_table_and_runs_it(
    toy_table: Pool, jobs: tuple[JobSpec, ...], toy_folder: Path, settings: Settings, tmp_path: Path
) -> None:
    env = {**cli_environment(settings, JOB_DIRS=toy_folder), "COLUMNS": "200"}
    code, out, _ = await cli(env, tmp_path, "run", "--help")
    assert code == 0
    paths = sorted(spec.path for spec in jobs)
    assert "store-daily-uses" in paths and len(paths) == len(JOBS) + 1
    assert "{" + ",".join(paths) + "}" in out
    assert "store-daily-uses: required, the day counted, YYYY-MM-DD" in " ".join(out.split())

    code, _, err = await cli(env, tmp_path, "migrate")
    assert code == 0, err
    assert f"V{VERSION}__store_daily_uses" in err
    await add_uses(toy_table, date(2025, 10, 27))
    code, _, err = await cli(
        env, tmp_path, "run", "store-daily-uses", "--run-date", "2025-10-27", "--quiet"
    )
    assert code == 0, err
    assert await counts(toy_table) == [(date(2025, 10, 27), 7, 2), (date(2025, 10, 27), 9, 1)]
    code, _, err = await cli(
        env, tmp_path, "run", "store-daily-uses", "--run-date", "2025-10-26", "--quiet"
    )
    assert code == 0, err
    assert await counts(toy_table) == [
        (date(2025, 10, 26), 9, 1), (date(2025, 10, 27), 7, 2), (date(2025, 10, 27), 9, 1)
    ]  # fmt: skip
    # It takes no --dry-run: it declares none
    assert await cli(
        env, tmp_path, "run", "store-daily-uses", "--run-date", "2025-10-27", "--dry-run"
    ) == (EXIT_USAGE, "", "error: store-daily-uses takes no --dry-run (its options: --run-date)\n")


def test_the_openapi_document_names_the_job(jobs: tuple[JobSpec, ...]) -> None:
    launch = openapi(jobs)["paths"]["/api/v1/jobs/{jobName}"]["post"]["parameters"]
    (job_name,) = [p for p in launch if p["name"] == "jobName"]
    assert "`store-daily-uses` (`storeDailyUsesJob`)" in job_name["description"]
    (day,) = [p for p in launch if p["name"] == "runDate"]
    assert "store-daily-uses: required, the day counted, YYYY-MM-DD" in day["description"]


async def test_the_job_list_that_the_console_renders_names_the_job(
    jobs: tuple[JobSpec, ...], settings: Settings
) -> None:
    app = create_app(memory_launcher(jobs), {})
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/jobs", headers=bearer())
        assert resp.status == 200
        listed = (await resp.json())["jobs"]
    assert [job["path"] for job in listed] == [spec.path for spec in jobs]
    (mine,) = [job for job in listed if job["path"] == "store-daily-uses"]
    # What its schedule would launch now (the console's form starts from it): the day before
    # its last 02:30 (Asia/Seoul has no summer time)
    last_night = (now_in(settings.timezone) - timedelta(hours=2, minutes=30)).date()
    assert mine == {
        "name": "storeDailyUsesJob",
        "path": "store-daily-uses",
        "title": "Store daily uses",
        "parameters": [
            {
                "name": "runDate",
                "type": LOCAL_DATE,
                "help": "the day counted, YYYY-MM-DD",
                "default": None,
                "choices": [],
            },
        ],
        "schedule": {"cron": "30 2 * * *", "punctual": False},
        "backfills": False,
        "publishes": False,
        "estimates": False,
        "confirm": "",
        "suggested": {"runDate": (last_night - timedelta(days=1)).isoformat()},
    }


async def test_the_scheduler_fires_it_and_its_figures_are_the_dashboard_s_and_alerts(
    toy_table: Pool, jobs: tuple[JobSpec, ...], settings: Settings
) -> None:
    async with open_resources(settings, broker=False) as resources:
        await migrate(resources.pool)
        (schedule,) = [s for s in schedules_of(jobs) if s.job is toy(jobs)]
        night = due_slot(schedule.when.cron, datetime.now(SEOUL))
        await add_uses(toy_table, night.date() - timedelta(days=1))
        due = ScheduledRun("storeDailyUsesJob", night, None)
        since = night - timedelta(days=1)
        policy = RestartPolicy(attempts=0, backoff_seconds=1, misfire_grace=timedelta(0))
        launcher = Launcher(resources, jobs)
        late = night + timedelta(hours=1, minutes=30)
        # Its run is due within the default allowance (an hour): what the alert reads
        assert await scheduled_runs(launcher.repository, [schedule], late, since=since) == [due]
        registry = ReplicaRegistry(resources.pool, lease_seconds=120)
        scheduler = Scheduler(launcher, SEOUL, [schedule], policy, registry, every=60)
        await scheduler.run_pass()  # its last due time's instance, never launched
        await scheduler.stop()
        [run] = launcher.running.values()
        await run.task
        final = await launcher.repository.get_execution(run.execution.id)
        assert await scheduled_runs(launcher.repository, [schedule], late, since=since) == [
            replace(due, status=Status.COMPLETED)
        ]
        async with TestClient(TestServer(create_app(launcher, {}))) as client:
            resp = await client.get("/actuator/prometheus")
            assert resp.status == 200
            text = await resp.text()
    assert final is not None
    assert (final.status, final.parameters) == (
        Status.COMPLETED,
        {"runDate": (night.date() - timedelta(days=1)).isoformat()},
    )
    assert await counts(toy_table) == [
        (night.date() - timedelta(days=1), 7, 2), (night.date() - timedelta(days=1), 9, 1)
    ]  # fmt: skip
    # The dashboard's per-job panels repeat over the jobs its variable finds: the toy's
    # series is among them. Neither the dashboard nor the alerts name a job.
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "job"]
    values_of = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
    assert values_of is not None
    metric, label = values_of.groups()
    found = {
        sample.labels[label]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    }
    assert "storeDailyUsesJob" in found
    repeated = [panel for panel in board["panels"] if panel.get("repeat") == "job"]
    assert repeated and all("$job" in panel["targets"][0]["expr"] for panel in repeated)
    for text_of in (DASHBOARD, ALERTS):
        named = [n for spec in jobs for n in (spec.name, spec.path) if n in text_of.read_text()]
        assert named == [], text_of
