"""Fault 2: the database connection that streams the stats job's window killed on the
server (`KILL`) mid-stream: the execution fails with a clear message, and a restart
resumes from the checkpoint and completes with the exact table. And a run-wide query of
the fan-out failing while its sibling token lookup is in flight: the run fails, never
hangs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from asyncmy.pool import Pool

from app.__main__ import EXIT_FAILED
from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.db import fetch_all
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from tests.integration.test_fcm_send_job import pool_execute
from tests.integration.test_usage_stats_job import job_settings, run_job, stats
from tests.reliability.support import (
    FANOUT_HOUR,
    FANOUT_RUN_DATE,
    STATS_RUN_DATE,
    bulk_stats_world,
    cli,
    cli_environment,
    fanout_world,
    until,
)

pytestmark = pytest.mark.slow

# The stream's statement, as PROCESSLIST shows it while the server is still sending rows.
STREAM_SQL = "SELECT member_id, store_id, TO_SECONDS(created_at) FROM coupon_histories%"
# The driver's error, translated where it arose into the service's class (issue 26).
LOST_CONNECTION = (
    "DatabaseUnavailable: database {}: connection lost:"
    " Lost connection to MySQL server during query (MySQL error 2013)",
    # if the server could still say so
    "DatabaseUnavailable: database {}: connection lost: Connection was killed (MySQL error 1927)",
)


async def test_streaming_connection_killed_on_the_server_then_a_restart_completes(
    pool: Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # 400,000 rows in the window: far more than the socket buffers hold while the reader
    # waits for slow chunks, so the server is still sending when the connection dies.
    world = bulk_stats_world(8000, rows_per_member=50)
    await world.load(pool)
    caplog.set_level(logging.INFO)
    async with run_fake_peers(world.peer_data()) as fake:
        fake.control.latency_ms = 50
        job = job_settings(
            settings, fake, CHUNK_SIZE=25, ENRICH_WORKERS=2, QUEUE_SIZE=2, FETCH_ROWS=500
        )
        async with open_resources(job, broker=False) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(
                find_job(JOBS, "coupon-usage-stats"), {"runDate": STATS_RUN_DATE}, rerun=False
            )

            async def streaming() -> list[tuple]:
                if run.progress.commits < 3:
                    return []
                assert not run.task.done(), "the run ended before the kill"
                return await fetch_all(
                    pool,
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND INFO LIKE %s",
                    (settings.database.target.database, STREAM_SQL),
                )

            # One of the READ_STREAMS connections dies (another may have sent its share
            # already); the others are closed with the step.
            streams = await until(streaming, within=30, what="a streaming query")
            await pool_execute(pool, f"KILL {int(streams[0][0])}")
            await run.task
            failed = await launcher.repository.get_execution(run.execution.id)
        assert failed is not None
        assert failed.status == "FAILED"
        # The client reads what the socket still held, then finds the connection closed.
        target = settings.database.target
        address = f"{target.host}:{target.port}"
        assert failed.exit_message in [lost.format(address) for lost in LOST_CONNECTION]
        (step,) = failed.steps
        assert step.status == "FAILED"
        assert step.exit_message == failed.exit_message
        checkpoint = step.checkpoint
        assert checkpoint is not None
        assert step.read_count == checkpoint < world.members  # members 1..checkpoint
        assert await stats(pool) == world.expected_upto(checkpoint)
        # an outage the policy foresees: one ERROR line naming the cause, no traceback
        assert [
            (r.levelno, r.exc_info)
            for r in caplog.records
            if r.getMessage() == f"step failed: job=couponUsageStatsJob execution={failed.id}"
            f" error={failed.exit_message}"
        ] == [(logging.ERROR, None)]

        fake.control.latency_ms = 0
        resumed = await run_job(job_settings(settings, fake, CHUNK_SIZE=500), rerun=False)
    assert resumed.status == "COMPLETED", resumed.exit_message
    assert resumed.instance_id == failed.instance_id
    assert resumed.steps[0].read_count == world.members - checkpoint  # fewer: from the checkpoint
    assert await stats(pool) == world.expected


async def test_a_fan_out_whose_events_query_fails_at_its_first_chunk_fails_never_hangs(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """coupon_events away (renamed by the test): the run-wide events query fails at once,
    while the first chunk's token lookup, its sibling, opens the HTTP session. Before,
    that lookup awaited aiohttp's import in a thread (a tenth of a second in a fresh
    process), a future shared by every lookup of the run: its cancellation cancelled the
    import for all, the workers died of the CancelledError and the run waited forever
    for their chunks."""
    world = fanout_world(40)
    await world.load(pool)
    await pool_execute(pool, "RENAME TABLE coupon_events TO coupon_events_away")
    try:
        async with run_fake_peers(world.peers) as fake:
            env = cli_environment(
                settings,
                RABBITMQ_VHOST=queue,
                STORE_SERVICE_URL=fake.store_url,
                NOTIFICATION_SERVICE_URL=fake.notification_url,
                RETRY_BUDGET_SECONDS=1,
                CHUNK_SIZE=5,
            )
            args = ["run", "coupon-usage-stats-fcm-send", "--run-date", FANOUT_RUN_DATE]
            args += ["--target-hour", str(FANOUT_HOUR), "--quiet"]
            async with cli(args, env, tmp_path / "run.log") as run:
                code = await run.wait(within=60)  # the process's exit: never, before
                log = run.log_text()
    finally:
        await pool_execute(pool, "RENAME TABLE coupon_events_away TO coupon_events")
    assert code == EXIT_FAILED, log
    (row,) = await fetch_all(pool, "SELECT STATUS, EXIT_MESSAGE FROM BATCH_JOB_EXECUTION")
    assert row[0] == "FAILED"
    assert row[1].startswith("NotAboutItems: "), row[1]
    assert "coupon_events' doesn't exist" in row[1], row[1]
