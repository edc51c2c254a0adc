"""Fault 4: a peer down (every call 503). A short outage is ridden out within the retry
budget; a longer one fails the step at its checkpoint (never a skip), and the restart,
once the peer is back, does exactly the rest."""

from __future__ import annotations

import logging

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from tests.integration.test_fcm_send_job import JOB as FANOUT_JOB
from tests.integration.test_fcm_send_job import counts as fanout_counts
from tests.integration.test_fcm_send_job import job_settings as fanout_settings
from tests.integration.test_fcm_send_job import run_job as run_fanout
from tests.integration.test_usage_stats_job import counts, job_settings, run_job, stats
from tests.reliability.support import (
    FANOUT_PARAMETERS,
    STATS_RUN_DATE,
    after_commits,
    drain,
    fanout_world,
    skipped_items,
    stats_world,
    trace_ids_of,
)

pytestmark = pytest.mark.slow

# Calls that fail in a row for a short outage: ridden out within RETRY_BUDGET_SECONDS.
SHORT_OUTAGE_CALLS = 8
PIPELINE = {"CHUNK_SIZE": 25, "ENRICH_WORKERS": 2, "QUEUE_SIZE": 2, "RETRY_BUDGET_SECONDS": 1}
STORE_503 = "PeerUnavailable: store service /internal/v1/stores/regions: HTTP 503"
TOKENS_503 = "PeerUnavailable: notification service /internal/v1/fcm-tokens/search: HTTP 503"


async def test_store_service_down_briefly_is_ridden_out(
    pool: Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    world = stats_world(600)
    await world.load(pool)
    async with run_fake_peers(world.peer_data()) as fake:
        job = job_settings(settings, fake, **PIPELINE)
        async with open_resources(job, broker=False) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(
                find_job(JOBS, "coupon-usage-stats"), {"runDate": STATS_RUN_DATE}, rerun=False
            )
            await after_commits(run, 3)
            fake.control.update({"fail_status": 503, "fail_times": SHORT_OUTAGE_CALLS})
            await run.task
            first = await launcher.repository.get_execution(run.execution.id)
        assert fake.control.fail_times == 0  # the outage happened, and is over
    assert first is not None and first.status == "COMPLETED", first and first.exit_message
    assert first.exit_code == "COMPLETED"
    assert counts(first)["skipped"] == 0
    assert not skipped_items(caplog.records, "couponUsageStatsStep")
    assert await stats(pool) == world.expected


async def test_store_service_down_fails_the_step_and_the_restart_fills_exactly_the_rest(
    pool: Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    world = stats_world(1500)
    await world.load(pool)
    caplog.set_level(logging.INFO)
    async with run_fake_peers(world.peer_data()) as fake:
        fake.control.latency_ms = 20
        job = job_settings(settings, fake, **PIPELINE)
        async with open_resources(job, broker=False) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(
                find_job(JOBS, "coupon-usage-stats"), {"runDate": STATS_RUN_DATE}, rerun=False
            )
            await after_commits(run, 5)
            fake.control.update({"fail_status": 503, "fail_times": -1})  # down for good
            await run.task
            first = await launcher.repository.get_execution(run.execution.id)
        assert first is not None
        assert (first.status, first.exit_code) == ("FAILED", "FAILED")
        assert first.exit_message == STORE_503
        assert counts(first)["skipped"] == 0
        assert not skipped_items(caplog.records, "couponUsageStatsStep")
        checkpoint = first.steps[0].checkpoint
        assert checkpoint is not None
        before = await stats(pool)
        assert before == [row for row in world.expected if row[0] <= checkpoint]

        fake.control.update({"fail_status": None, "fail_times": 0})  # back
        restart = await run_job(job)  # a plain launch resumes the FAILED instance
    assert restart.status == "COMPLETED", restart.exit_message
    assert restart.steps[0].checkpoint is not None
    assert counts(restart)["read"] == world.members - checkpoint  # members 1..N, after it only
    assert await stats(pool) == world.expected


async def test_notification_service_down_fails_the_step_and_the_restart_delivers_the_rest(
    pool: Pool, settings: Settings, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = fanout_world(2000)
    await world.load(pool)
    caplog.set_level(logging.INFO)
    async with (
        run_fake_peers(world.peers) as store,
        run_fake_peers(world.peers) as notification,
    ):
        notification.control.latency_ms = 20
        job = fanout_settings(settings, queue, store, notification, **PIPELINE)
        async with open_resources(job, broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, FANOUT_JOB), FANOUT_PARAMETERS, rerun=False)
            await after_commits(run, 5)
            notification.control.update({"fail_status": 503, "fail_times": -1})
            await run.task
            first = await launcher.repository.get_execution(run.execution.id)
        assert first is not None
        assert (first.status, first.exit_message) == ("FAILED", TOKENS_503)
        assert fanout_counts(first)["skipped"] == 0
        assert not skipped_items(caplog.records, "couponUsageStatsFcmSendStep")
        delivered = set(trace_ids_of(await drain(queue)))
        assert delivered and delivered < world.trace_ids()

        notification.control.update({"fail_status": None, "fail_times": 0})
        restart = await run_fanout(job, FANOUT_PARAMETERS, rerun=False)
    assert restart.status == "COMPLETED", restart.exit_message
    again = set(trace_ids_of(await drain(queue)))
    assert delivered | again == world.trace_ids()  # every push, none lost
