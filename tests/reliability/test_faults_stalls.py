"""Stalls (issue 13, finding 1): the test's own proxy holds every byte between the service
and MariaDB or RabbitMQ, connections open, for a while mid-run.

`DB_STALL_SECONDS` and `BROKER_STALL_SECONDS` put a deadline on every statement and broker
operation; a stall beyond it is logged as a WARNING naming what stalled, and is an
availability fault: retried within `RETRY_BUDGET_SECONDS`, then the step fails,
restartable. Before, the service waited out every stall in silence and resumed when the
bytes flowed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.model import JobExecution
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from tests.integration import test_fcm_send_job as fanout
from tests.integration.test_usage_stats_job import job_settings, run_job, stats
from tests.proxy import FaultProxy, through
from tests.reliability.support import (
    FANOUT_PARAMETERS,
    STATS_RUN_DATE,
    StatsWorld,
    after_commits,
    drain,
    fanout_world,
    stats_world,
    trace_ids_of,
)
from tests.waits import waiting

pytestmark = pytest.mark.slow

STALL_SECONDS = 1  # DB_STALL_SECONDS, BROKER_STALL_SECONDS
SHORT_BUDGET = 3  # RETRY_BUDGET_SECONDS when the stall must outlast it
STATS_JOB = find_job(JOBS, "coupon-usage-stats")


def stall_warnings(records: Iterable[logging.LogRecord], peer: str) -> list[str]:
    """The WARNINGs of the edge to `peer` ("db", "broker") that name a stall."""
    return [
        r.getMessage()
        for r in records
        if r.levelno == logging.WARNING
        and r.name == f"app.edges.{peer}"
        and "stalled" in r.getMessage()
    ]


def db_stalled(proxy: FaultProxy, what: str) -> str:
    return (
        f"database stalled: no answer within {STALL_SECONDS} s (DB_STALL_SECONDS) to {what}"
        f" on 127.0.0.1:{proxy.port}"
    )


def db_stalls(proxy: FaultProxy) -> set[str]:
    """What a chunk's commit may stall on: its transaction, or a new connection for the
    retry (the stalled one was closed)."""
    return {db_stalled(proxy, "a transaction"), db_stalled(proxy, "a connection from the pool")}


async def stats_run_with_a_db_stall(
    world: StatsWorld,
    settings: Settings,
    db_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
    *,
    stall: float,
    **overrides: object,
) -> tuple[JobExecution, list[str]]:
    """The stats job over `world`, its database held `stall` s after its 3rd commit; the
    execution as recorded, and the stall WARNINGs logged while the stall lasted."""
    async with run_fake_peers(world.peer_data()) as fake:
        fake.control.latency_ms = 30  # a store lookup per chunk of 25 members
        job = job_settings(
            settings,
            fake,
            CHUNK_SIZE=25,
            ENRICH_WORKERS=2,
            QUEUE_SIZE=2,
            DB_STALL_SECONDS=STALL_SECONDS,
            **overrides,
        )
        async with open_resources(through(job, db=db_proxy), broker=False) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(STATS_JOB, {"runDate": STATS_RUN_DATE}, rerun=False)
            await after_commits(run, 3)
            db_proxy.stall()
            await asyncio.sleep(stall)
            assert not run.task.done()  # the stall held the run
            warned = stall_warnings(caplog.records, "db")
            db_proxy.resume()
            async with waiting(60, "the run's end after the database stall"):
                await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert execution is not None
    return execution, warned


async def test_a_database_stall_within_the_budget_is_named_then_the_run_completes(
    pool: Pool, settings: Settings, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world = stats_world(2000)
    await world.load(pool)
    execution, warned = await stats_run_with_a_db_stall(
        world, settings, db_proxy, caplog, stall=4 * STALL_SECONDS, RETRY_BUDGET_SECONDS=60
    )
    assert warned, "no WARNING named the database stall while it lasted"
    # The stall caught the sink in a commit (or waiting for the next chunk, then in it).
    assert warned[0] == db_stalled(db_proxy, "a transaction")
    assert set(warned) <= db_stalls(db_proxy), warned
    assert execution.status == "COMPLETED", execution.exit_message
    assert execution.steps[0].skip_count == 0
    assert await stats(pool) == world.expected


async def test_a_database_stall_beyond_the_budget_fails_the_run_then_a_restart_completes(
    pool: Pool, settings: Settings, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    world = stats_world(2000)
    await world.load(pool)
    stall = STALL_SECONDS + SHORT_BUDGET + 4
    failed, _ = await stats_run_with_a_db_stall(
        world, settings, db_proxy, caplog, stall=stall, RETRY_BUDGET_SECONDS=SHORT_BUDGET
    )
    # Failed within the stall; recorded once the database answered again.
    assert failed.status == "FAILED"
    assert failed.exit_message.startswith("DatabaseStalled: "), failed.exit_message
    assert failed.exit_message.removeprefix("DatabaseStalled: ") in db_stalls(db_proxy)
    (step,) = failed.steps
    assert step.status == "FAILED"
    assert step.skip_count == 0  # an availability fault is never a skip
    checkpoint = step.checkpoint
    assert checkpoint is not None and checkpoint < world.members
    assert await stats(pool) == world.expected_upto(checkpoint)

    async with run_fake_peers(world.peer_data()) as fake:
        resumed = await run_job(job_settings(settings, fake, CHUNK_SIZE=500), rerun=False)
    assert resumed.status == "COMPLETED", resumed.exit_message
    assert resumed.instance_id == failed.instance_id
    assert resumed.steps[0].read_count == world.members - checkpoint
    assert await stats(pool) == world.expected


async def test_a_broker_stall_within_the_budget_is_named_then_every_trace_id_arrives(
    pool: Pool,
    settings: Settings,
    queue: str,
    broker_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    world = fanout_world(2000)
    await world.load(pool)
    async with run_fake_peers(world.peers) as fake:
        fake.control.latency_ms = 30
        job = fanout.job_settings(
            settings, queue, fake, CHUNK_SIZE=25, ENRICH_WORKERS=2, QUEUE_SIZE=2,
            PUBLISH_WINDOW=20, BROKER_STALL_SECONDS=STALL_SECONDS, RETRY_BUDGET_SECONDS=60,
        )  # fmt: skip
        async with open_resources(through(job, broker=broker_proxy), broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, fanout.JOB), FANOUT_PARAMETERS, rerun=False)
            await after_commits(run, 3)
            broker_proxy.stall()
            await asyncio.sleep(4 * STALL_SECONDS)
            assert not run.task.done()  # the stall held the run
            warned = stall_warnings(caplog.records, "broker")
            broker_proxy.resume()
            async with waiting(60, "the run's end after the broker stall"):
                await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert warned, "no WARNING named the broker stall while it lasted"
    confirms_stalled = re.compile(
        rf"broker stalled: no confirmation within {STALL_SECONDS} s \(BROKER_STALL_SECONDS\)"
        rf" from 127\.0\.0\.1:{broker_proxy.port} for (\d+) of (\d+) messages; counted as"
        " lost, to be published again"
    )
    for message in warned:
        match = confirms_stalled.fullmatch(message)
        assert match, message
        assert 0 < int(match[1]) <= int(match[2]), message
    assert execution is not None
    assert execution.status == "COMPLETED", execution.exit_message
    assert fanout.counts(execution)["skipped"] == 0
    got = await drain(queue)
    assert set(trace_ids_of(got)) == world.trace_ids()
    assert {m.body for m in got} == world.expected_bodies()
