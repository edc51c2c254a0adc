"""Fault 4: a peer down (every call 503) for longer than the retries, then back: the
chunks it hit are skipped and reported with their member ids, and rerunning the same
parameters fills exactly that gap."""

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
from tests.integration.test_fcm_send_job import TOKEN_SEARCH
from tests.integration.test_fcm_send_job import counts as fanout_counts
from tests.integration.test_fcm_send_job import job_settings as fanout_settings
from tests.integration.test_fcm_send_job import run_job as run_fanout
from tests.integration.test_usage_stats_job import REGIONS, counts, job_settings, run_job, stats
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


# The peer fails this many calls in a row: with 2 attempts a chunk and 2 workers, at
# least one chunk meets a 503 on both of its attempts.
OUTAGE_CALLS = 8
PIPELINE = {"CHUNK_SIZE": 25, "ENRICH_WORKERS": 2, "QUEUE_SIZE": 2, "RETRY_ATTEMPTS": 2}


async def test_store_service_down_then_back_a_rerun_fills_exactly_the_gap(
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
            assert run.task is not None
            await after_commits(run, 5)
            calls_before = len(fake.calls[REGIONS])
            fake.control.update({"fail_status": 503, "fail_times": OUTAGE_CALLS})
            await run.task
            first = await launcher.repository.get_execution(run.execution.id)
        assert fake.control.fail_times == 0  # the outage happened, and is over
        assert len(fake.calls[REGIONS]) > calls_before + OUTAGE_CALLS  # calls went on after it

        chunks = skipped_items(caplog.records, "couponUsageStatsStep")
        skipped = [m for ids, _ in chunks for m in ids]
        assert chunks and all(len(ids) == 25 for ids, _ in chunks)
        assert {repr(error) for _, error in chunks} == {
            "PeerUnavailable('store service /internal/v1/stores/regions: HTTP 503')"
        }
        assert first is not None
        assert first.status == "COMPLETED", first.exit_message
        assert first.steps[0].skip_count == len(skipped)
        assert counts(first) == {
            "read": world.members,
            "written": len(world.expected_except(skipped)),
            "filtered": world.members - len(skipped) - len(world.expected_except(skipped)),
            "skipped": len(skipped),
        }
        before = await stats(pool)
        assert before == world.expected_except(skipped)  # every other member is there

        rerun = await run_job(job, rerun=True)
    assert rerun.status == "COMPLETED", rerun.exit_message
    assert counts(rerun)["skipped"] == 0
    after = await stats(pool)
    assert after == world.expected
    gap = [row for row in world.expected if row[0] in set(skipped)]
    assert gap and sorted(set(after) - set(before)) == gap


async def test_notification_service_down_then_back_a_rerun_delivers_the_missing_trace_ids(
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
            assert run.task is not None
            await after_commits(run, 5)
            calls_before = len(notification.calls[TOKEN_SEARCH])
            notification.control.update({"fail_status": 503, "fail_times": OUTAGE_CALLS})
            await run.task
            first = await launcher.repository.get_execution(run.execution.id)
        assert notification.control.fail_times == 0
        assert len(notification.calls[TOKEN_SEARCH]) > calls_before + OUTAGE_CALLS

        chunks = skipped_items(caplog.records, "couponUsageStatsFcmSendStep")
        skipped = {m for ids, _ in chunks for m in ids}
        assert chunks
        assert {repr(error) for _, error in chunks} == {
            "PeerUnavailable('notification service /internal/v1/fcm-tokens/search: HTTP 503')"
        }
        assert first is not None
        assert first.status == "COMPLETED", first.exit_message
        assert fanout_counts(first)["skipped"] == first.steps[0].skip_count == len(skipped)
        delivered = set(trace_ids_of(await drain(queue)))
        missing = world.trace_ids(skipped)
        assert missing  # the skipped chunks had messages to send
        assert delivered == world.trace_ids() - missing  # all but the skipped, exactly

        rerun = await run_fanout(job, FANOUT_PARAMETERS, rerun=True)
    assert rerun.status == "COMPLETED", rerun.exit_message
    assert fanout_counts(rerun) == {
        "read": world.read,
        "written": world.written,
        "filtered": world.read - world.written,
        "skipped": 0,
    }
    again = await drain(queue)
    assert {m.body for m in again} == world.expected_bodies()
    assert delivered | set(trace_ids_of(again)) == world.trace_ids()
