"""`/actuator/prometheus` reads the job repository at scrape time: executions written by
another process (here: a MariaDbJobRepository of the test's own, as the CLI or another replica
writes them) change the scraped figures, and a database that stalls or goes away leaves
the scrape answering at once with the last figures read."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from asyncmy.pool import Pool
from prometheus_client.parser import text_string_to_metric_families

from app.__main__ import EXIT_FAILED
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.jobs import fcm_send_spec, usage_stats_spec
from app.model import JobExecution, JobParameter, Status
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.automation import Schedule
from app.runtime.job import JobSpec
from app.runtime.scheduler import ScheduledRun, scheduled_runs
from tests.integration.test_web_health_metrics import serving
from tests.proxy import FaultProxy, through
from tests.reliability.support import cli, cli_environment, stats_world, until
from tests.waits import waiting

STATS = "couponUsageStatsJob"
FANOUT = "couponUsageStatsFcmSendJob"
# The figures of every scrape below: a hang of the scrape fails the test, not a slow one
SCRAPE_WITHIN = 30


def run_date(day: str) -> list[JobParameter]:
    return [JobParameter("runDate", "java.time.LocalDate", day)]


async def ended(
    repository: MariaDbJobRepository, job: str, day: str, status: Status | None
) -> JobExecution:
    """An execution of `job` for `day` as another process records it: started, then ended
    `status` (None: still running)."""
    execution = await repository.start_execution(job, run_date(day), rerun_completed=False)
    if status is not None:
        await repository.finish_execution(execution.id, status, f"ended {status}")
    found = await repository.get_execution(execution.id)
    assert found is not None
    return found


async def pin_creation(pool: Pool, execution: JobExecution, local_time: str) -> None:
    """The execution's CREATE_TIME, as the database's clock reads it."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET CREATE_TIME = %s WHERE JOB_EXECUTION_ID = %s",
            (local_time, execution.id),
        )


async def backdated(pool: Pool, execution: JobExecution) -> None:
    """The execution as if created three years ago: the old service's history."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET CREATE_TIME = CREATE_TIME - INTERVAL 3 YEAR"
            " WHERE JOB_EXECUTION_ID = %s",
            (execution.id,),
        )


async def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """The scraped samples, (name, labels without `application`) -> value; every one
    labelled application="batch-service"."""
    async with waiting(SCRAPE_WITHIN, "a scrape of /actuator/prometheus"):
        resp = await client.get("/actuator/prometheus")
        assert resp.status == 200
        text = await resp.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            assert labels.pop("application") == "batch-service", s
            values[s.name, frozenset(labels.items())] = s.value
    return values


FIGURES = (
    "batch_job_repository_executions",
    "batch_job_unrecovered_instances",
    "batch_job_last_start_timestamp_seconds",
    "batch_job_last_success_timestamp_seconds",
)


def repository_figures(values: dict[tuple[str, frozenset], float]) -> dict[str, dict]:
    """The job repository's figures of a scrape (the time of the read aside), by metric
    name then labels."""
    figures: dict[str, dict] = {}
    for (name, labels), value in values.items():
        if name in FIGURES:
            figures.setdefault(name, {})[tuple(sorted(labels))] = value
    return figures


def executions(job: str, **counts: int) -> dict[tuple, float]:
    return {
        (("spring_batch_job_name", job), ("status", status.value)): counts.get(status.value, 0)
        for status in Status
    }


def unrecovered(job: str, failed: int, stopped: int) -> dict[tuple, float]:
    return {
        (("spring_batch_job_name", job), ("status", "FAILED")): failed,
        (("spring_batch_job_name", job), ("status", "STOPPED")): stopped,
    }


async def test_executions_of_another_process_are_scraped(settings: Settings, pool: Pool) -> None:
    other = MariaDbJobRepository(pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS)
    async with serving(settings, broker=False, metrics_ttl=0) as client:
        assert repository_figures(await scrape(client)) == {}  # nothing has run

        failed = await ended(other, STATS, "2025-10-25", Status.FAILED)
        completed = await ended(other, STATS, "2025-10-26", Status.COMPLETED)
        stopped = await ended(other, FANOUT, "2025-10-25", Status.STOPPED)
        running = await ended(other, FANOUT, "2025-10-26", None)
        assert completed.end_time is not None and running.start_time is not None
        assert repository_figures(await scrape(client)) == {
            "batch_job_repository_executions": {
                **executions(STATS, FAILED=1, COMPLETED=1),
                **executions(FANOUT, STOPPED=1, STARTED=1),
            },
            "batch_job_unrecovered_instances": {
                **unrecovered(STATS, failed=1, stopped=0),
                **unrecovered(FANOUT, failed=0, stopped=1),
            },
            "batch_job_last_start_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): completed.start_time.timestamp(),
                (("spring_batch_job_name", FANOUT),): running.start_time.timestamp(),
            },
            "batch_job_last_success_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): completed.end_time.timestamp(),
            },
        }

        # The night's FAILED instance restarted by `python -m app restart` and COMPLETED,
        # the STOPPED fan-out abandoned: nothing is left to recover.
        restarted = await ended(other, STATS, "2025-10-25", Status.COMPLETED)
        assert restarted.instance_id == failed.instance_id
        assert await other.abandon(stopped.id) == Status.STOPPED
        assert restarted.end_time is not None and restarted.start_time is not None
        assert repository_figures(await scrape(client)) == {
            "batch_job_repository_executions": {
                **executions(STATS, FAILED=1, COMPLETED=2),
                **executions(FANOUT, ABANDONED=1, STARTED=1),
            },
            "batch_job_unrecovered_instances": {
                **unrecovered(STATS, failed=0, stopped=0),
                **unrecovered(FANOUT, failed=0, stopped=0),
            },
            "batch_job_last_start_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): restarted.start_time.timestamp(),
                (("spring_batch_job_name", FANOUT),): running.start_time.timestamp(),
            },
            "batch_job_last_success_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): restarted.end_time.timestamp(),
            },
        }


@pytest.mark.slow
async def test_a_night_failed_and_restarted_from_the_command_line_is_scraped(
    settings: Settings, pool: Pool, tmp_path: Path
) -> None:
    """Issue 18's finding: the CLI's runs, in a process of their own, are what the
    daemon's scrape shows; the restart clears the instance left FAILED."""
    world = stats_world(20)
    await world.load(pool)
    repository = MariaDbJobRepository(
        pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS
    )
    async with (
        run_fake_peers(world.peer_data()) as peers,
        serving(settings, broker=False, metrics_ttl=0) as client,
    ):
        env = cli_environment(
            settings,
            STORE_SERVICE_URL=peers.store_url,
            NOTIFICATION_SERVICE_URL=peers.notification_url,
            RETRY_BUDGET_SECONDS=0.2,
        )
        peers.control.update({"fail_status": 503, "fail_times": -1})  # the store service down
        args = ["run", "coupon-usage-stats", "--run-date", "2025-10-26", "--quiet"]
        async with cli(args, env, tmp_path / "run.log") as night:
            assert await night.wait(60) == EXIT_FAILED, night.log_text()
        (failed,) = await repository.list_executions(STATS)
        assert failed.status == Status.FAILED and failed.start_time is not None
        assert repository_figures(await scrape(client)) == {
            "batch_job_repository_executions": executions(STATS, FAILED=1),
            "batch_job_unrecovered_instances": unrecovered(STATS, failed=1, stopped=0),
            "batch_job_last_start_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): failed.start_time.timestamp(),
            },
        }

        peers.control.update({"fail_status": None})
        args = ["restart", str(failed.id), "--quiet"]
        async with cli(args, env, tmp_path / "restart.log") as restart:
            assert await restart.wait(60) == 0, restart.log_text()
        restarted, _ = await repository.list_executions(STATS)
        assert restarted.status == Status.COMPLETED
        assert restarted.start_time is not None and restarted.end_time is not None
        assert repository_figures(await scrape(client)) == {
            "batch_job_repository_executions": executions(STATS, FAILED=1, COMPLETED=1),
            "batch_job_unrecovered_instances": unrecovered(STATS, failed=0, stopped=0),
            "batch_job_last_start_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): restarted.start_time.timestamp(),
            },
            "batch_job_last_success_timestamp_seconds": {
                (("spring_batch_job_name", STATS),): restarted.end_time.timestamp(),
            },
        }


def yearly(spec: JobSpec, cron: str, completes_within: timedelta) -> Schedule:
    """The job's schedule with another cron: a due run that stays the same all year."""
    assert spec.schedule is not None
    return Schedule(spec, replace(spec.schedule, cron=cron, completes_within=completes_within))


def scheduled_figures(values: dict[tuple[str, frozenset], float]) -> dict[tuple, float]:
    return {
        tuple(sorted(labels)): value
        for (name, labels), value in values.items()
        if name == "batch_job_scheduled_run_timestamp_seconds"
    }


async def test_the_latest_due_run_of_each_schedule_is_scraped_with_its_status(
    settings: Settings, pool: Pool
) -> None:
    """What BatchScheduledRunNotCompleted reads, for any job: each schedule's latest time
    whose allowance has passed, labelled with its instance's latest status."""
    seoul = settings.timezone
    now = datetime.now(seoul)
    # Both runs of this year are due from 09:00 on 1 January (01:00 + 8 h, 03:00 + 6 h)
    year = now.year if now >= datetime(now.year, 1, 1, 9, 0, tzinfo=seoul) else now.year - 1
    stats_at = datetime(year, 1, 1, 1, 0, tzinfo=seoul)
    fanout_at = datetime(year, 1, 1, 3, 0, tzinfo=seoul)
    schedules = (
        yearly(usage_stats_spec.SPEC, "0 1 1 1 *", timedelta(hours=8)),
        yearly(fcm_send_spec.SPEC, "0 3 1 1 *", timedelta(hours=6)),
    )
    day_before = f"{year - 1}-12-31"  # the stats run of 01:00 is yesterday's
    fanout_parameters = fcm_send_spec.SPEC.parse(
        {"runDate": f"{year}-01-01", "targetHour": "3"}, fanout_at
    )

    def figures(stats: str, fanout: str) -> dict[tuple, float]:
        return {
            (("spring_batch_job_name", STATS), ("status", stats)): stats_at.timestamp(),
            (("spring_batch_job_name", FANOUT), ("status", fanout)): fanout_at.timestamp(),
        }

    other = MariaDbJobRepository(pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS)
    async with serving(
        settings, broker=False, metrics_ttl=0, schedules=lambda: schedules
    ) as client:
        # A fresh deployment: neither this process nor any before it ran the schedules
        # when these runs were due, and it owes nothing for them
        assert scheduled_figures(await scrape(client)) == {}

        # The old service had run both jobs since the year before: it was due to run them
        for job in (STATS, FANOUT):
            await backdated(pool, await ended(other, job, f"{year - 2}-06-01", Status.COMPLETED))
        assert scheduled_figures(await scrape(client)) == figures("NONE", "NONE")

        failed = await ended(other, STATS, day_before, Status.FAILED)
        sent = await other.start_execution(FANOUT, fanout_parameters, rerun_completed=False)
        assert scheduled_figures(await scrape(client)) == figures("FAILED", "STARTED")

        await other.finish_execution(sent.id, Status.COMPLETED, "")
        restarted = await ended(other, STATS, day_before, Status.COMPLETED)
        assert restarted.instance_id == failed.instance_id
        assert scheduled_figures(await scrape(client)) == figures("COMPLETED", "COMPLETED")

        # Another instance of the job is not the scheduled run's
        await ended(other, STATS, f"{year - 1}-12-30", Status.FAILED)
        assert scheduled_figures(await scrape(client)) == figures("COMPLETED", "COMPLETED")

    # A process that runs no schedules exposes none
    async with serving(settings, broker=False, metrics_ttl=0) as client:
        assert scheduled_figures(await scrape(client)) == {}


async def test_a_run_never_launched_is_owed_from_the_first_execution_or_the_process_start(
    settings: Settings, pool: Pool
) -> None:
    """A run due before the job's first execution and before the process that runs the
    schedules started is left out; one due after either is exposed NONE."""
    seoul = settings.timezone
    schedule = yearly(usage_stats_spec.SPEC, "0 1 1 1 *", timedelta(hours=8))
    due = datetime(2024, 1, 1, 1, 0, tzinfo=seoul)
    late = datetime(2024, 6, 1, tzinfo=seoul)
    never_launched = [ScheduledRun(STATS, due, None)]
    repository = MariaDbJobRepository(
        pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS
    )

    async def runs(since: datetime) -> list[ScheduledRun]:
        return await scheduled_runs(repository, [schedule], late, since=since)

    # No execution of the job ever: owed only by a process that ran the schedules then
    assert await runs(since=due + timedelta(hours=1)) == []
    assert await runs(since=due - timedelta(minutes=1)) == never_launched
    # Its first execution (another instance), created after the run was due, then before
    first = await ended(repository, STATS, "2024-03-01", Status.COMPLETED)
    await pin_creation(pool, first, "2024-02-01 00:00:00")
    assert await runs(since=late) == []
    await pin_creation(pool, first, "2023-12-31 00:00:00")  # the old service's night
    assert await runs(since=late) == never_launched
    # Another job's history is not this job's
    await pin_creation(pool, first, "2024-02-01 00:00:00")
    await backdated(pool, await ended(repository, FANOUT, "2023-06-01", Status.COMPLETED))
    assert await runs(since=late) == []


async def test_a_scrape_storm_reads_once_within_the_ttl(settings: Settings, pool: Pool) -> None:
    other = MariaDbJobRepository(pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS)
    await ended(other, STATS, "2025-10-25", Status.COMPLETED)
    async with serving(settings, broker=False, metrics_ttl=3600) as client:
        first = await scrape(client)
        await ended(other, STATS, "2025-10-26", Status.FAILED)
        storm = await asyncio.gather(*(scrape(client) for _ in range(20)))
    assert all(repository_figures(values) == repository_figures(first) for values in storm)
    read_at = ("batch_job_repository_read_timestamp_seconds", frozenset())
    assert {values[read_at] for values in storm} == {first[read_at]}


async def test_a_stalled_or_gone_database_leaves_the_scrape_with_the_last_figures(
    settings: Settings, pool: Pool, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    other = MariaDbJobRepository(pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS)
    await ended(other, STATS, "2025-10-25", Status.COMPLETED)
    read_at = ("batch_job_repository_read_timestamp_seconds", frozenset())
    served = through(settings, db=db_proxy)
    async with serving(served, broker=False, metrics_ttl=0, metrics_timeout=0.5) as client:
        first = await scrape(client)
        figures = repository_figures(first)
        assert figures["batch_job_repository_executions"] == executions(STATS, COMPLETED=1)

        await ended(other, STATS, "2025-10-26", Status.FAILED)  # not through the proxy
        db_proxy.stall()  # the app's database holds every answer
        for _ in range(3):
            stalled = await scrape(client)
            assert repository_figures(stalled) == figures
            assert stalled[read_at] == first[read_at]
            # The rest is served as ever: the scrape itself is counted
            assert any(name == "http_server_requests_seconds_count" for name, _ in stalled)

        db_proxy.resume()

        async def read_again() -> dict[tuple[str, frozenset], float] | None:
            values = await scrape(client)
            return values if values[read_at] > first[read_at] else None

        fresh = await until(read_again, within=SCRAPE_WITHIN, what="a read after the stall")
        assert repository_figures(fresh)["batch_job_repository_executions"] == executions(
            STATS, COMPLETED=1, FAILED=1
        )

        db_proxy.refuse()  # the database gone: connections reset, new ones refused
        db_proxy.drop()
        await ended(other, STATS, "2025-10-27", Status.FAILED)
        for _ in range(3):
            gone = await scrape(client)
            assert repository_figures(gone) == repository_figures(fresh)
            assert gone[read_at] == fresh[read_at]
        # Said once for the three failed reads, in a line (an outage is no bug)
        (warning,) = [r for r in caplog.records if r.name == "app.web.repository_metrics"]
        assert warning.levelname == "WARNING" and not warning.exc_info
        assert warning.getMessage().startswith("the job repository's metrics could not be read")
        await db_proxy.accept()  # the pool's shutdown says QUIT to its connections
