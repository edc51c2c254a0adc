"""JobOperator's restart restarts only the instance's last execution (Spring Batch's
JobRestartException): the admin API answers 409 and the CLI exits 3, with the same words."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from aiohttp.test_utils import TestClient
from asyncmy.pool import Pool

from app.__main__ import EXIT_REFUSED
from app.composition import JOBS
from app.config import Settings
from app.edges.db import fetch_all
from app.model import Status
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.job import find_job
from tests.integration import test_web_api
from tests.integration.test_cli_database_errors import cli
from tests.integration.test_web_api import RUN_DATE, Client, bearer, until_finished
from tests.reliability.support import cli_environment

# The admin API's fixtures: a test client over a real launcher, the fake store service.
client, fake = test_web_api.client, test_web_api.fake


async def executions_of_one_instance(pool: Pool, *statuses: Status) -> list[int]:
    """One stats instance, one execution per status, in order (the last is the newest)."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    spec = find_job(JOBS, "coupon-usage-stats")
    parameters = spec.parse({"runDate": RUN_DATE}, datetime(2025, 10, 27, 9, 0))
    ids = []
    for status in statuses:
        execution = await repository.start_execution(spec.name, parameters, rerun_completed=False)
        await repository.finish_execution(execution.id, status, f"{status} here")
        ids.append(execution.id)
    return ids


async def cli_restart(settings: Settings, execution_id: int, cwd: Path) -> tuple[int, str, str]:
    return await cli(["restart", str(execution_id), "--quiet"], cli_environment(settings), cwd)


async def refused_by_api_and_cli(
    api: TestClient, settings: Settings, cwd: Path, execution_id: int, words: str
) -> None:
    """The restart refused alike: 409 JOB_NOT_RESTARTABLE from the API, exit 3 from the CLI."""
    resp = await api.post(f"/api/v1/jobs/executions/{execution_id}/restart", headers=bearer())
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert (error["code"], error["message"]) == ("JOB_NOT_RESTARTABLE", words)
    assert await cli_restart(settings, execution_id, cwd) == (
        EXIT_REFUSED,
        "",
        f"not restarted: {words}\n",
    )


async def execution_count(pool: Pool) -> int:
    [(count,)] = await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION")
    return int(count)


async def test_an_execution_its_instance_ran_on_after_is_not_restarted(
    client: Client, pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    api = await client()
    older, stopped, last = await executions_of_one_instance(
        pool, Status.FAILED, Status.STOPPED, Status.FAILED
    )
    for earlier in (older, stopped):
        words = (
            f"execution {earlier} is not its instance's last: execution {last} ran on after it"
            " and is FAILED; only the last one restarts"
        )
        await refused_by_api_and_cli(api, settings, tmp_path, earlier, words)
    assert await execution_count(pool) == 3  # nothing launched

    resp = await api.post(f"/api/v1/jobs/executions/{last}/restart", headers=bearer())
    assert resp.status == 202
    restarted = await until_finished(api, resp.headers["Location"])
    assert restarted["status"] == "COMPLETED"
    assert await execution_count(pool) == 4


async def test_an_instance_abandoned_since_is_not_restarted_from_an_older_execution(
    client: Client, pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    api = await client()
    failed, abandoned = await executions_of_one_instance(pool, Status.FAILED, Status.STOPPED)
    assert (
        await MariaDbJobRepository(pool, abandon_after_seconds=120).abandon(abandoned) == "STOPPED"
    )
    words = (
        f"execution {failed} is not its instance's last: execution {abandoned} ran on after it"
        " and is ABANDONED; only the last one restarts"
    )
    await refused_by_api_and_cli(api, settings, tmp_path, failed, words)
    assert await execution_count(pool) == 2


async def test_an_execution_of_a_job_this_service_does_not_run_is_not_restarted(
    client: Client, pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """An execution the job repository holds of another job (the Spring service's, say):
    before, the API's restart answered 404 "no job execution" for it, which exists."""
    api = await client()
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    execution = await repository.start_execution("retiredJob", [], rerun_completed=False)
    await repository.finish_execution(execution.id, Status.FAILED, "FAILED here")
    words = (
        f"execution {execution.id} is of retiredJob, a job this service does not run (it runs"
        " coupon-usage-stats, coupon-usage-stats-fcm-send)"
    )
    await refused_by_api_and_cli(api, settings, tmp_path, execution.id, words)
    assert await execution_count(pool) == 1  # nothing launched
