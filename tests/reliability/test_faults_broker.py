"""Fault 3: the broker connection closed mid-run (`rabbitmqctl close_connection`), and the
broker gone for a while mid-run (the test's own proxy in front of it resets every
connection and refuses new ones; the shared RabbitMQ is never stopped): no expected trace
id is missing from the consumer's queue."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.runtime.launcher import Launcher, RunningJob, find_job
from app.runtime.repository import JobExecution
from app.runtime.resources import open_resources
from tests.integration import rabbit
from tests.integration.test_fcm_send_job import JOB, counts, job_settings
from tests.proxy import FaultProxy, through
from tests.reliability.support import (
    FANOUT_PARAMETERS,
    FanoutWorld,
    after_commits,
    drain,
    fanout_world,
    trace_ids_of,
    until,
)

pytestmark = pytest.mark.slow


def assert_all_delivered(execution: JobExecution, world: FanoutWorld, got: list) -> None:
    assert execution.status == "COMPLETED", execution.exit_message
    assert counts(execution) == {
        "read": world.read,
        "written": world.written,
        "filtered": world.read - world.written,
        "skipped": 0,
    }
    assert set(trace_ids_of(got)) == world.trace_ids()
    assert {m.body for m in got} == world.expected_bodies()


async def run_fanout_while(
    pool: Pool,
    settings: Settings,
    queue: str,
    disturb: Callable[[RunningJob], Awaitable[None]],
    broker_proxy: FaultProxy | None = None,
) -> None:
    """Run the fan-out job over 2,000 members (reaching the broker through `broker_proxy`
    if given), `disturb` the broker during the run, and check that every expected trace
    id arrived."""
    world = fanout_world(2000)
    await world.load(pool)
    async with run_fake_peers(world.peers) as fake:
        fake.control.latency_ms = 30
        job = job_settings(
            settings, queue, fake, CHUNK_SIZE=25, ENRICH_WORKERS=2, QUEUE_SIZE=2, PUBLISH_WINDOW=20
        )
        job = through(job, broker=broker_proxy)
        async with open_resources(job, broker=True) as resources:
            launcher = Launcher(resources)
            run = await launcher.launch(find_job(JOB), FANOUT_PARAMETERS, rerun=False)
            assert run.task is not None
            await disturb(run)
            await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert execution is not None
    assert_all_delivered(execution, world, await drain(queue))


async def test_broker_connection_closed_twice_mid_run(
    pool: Pool, settings: Settings, queue: str
) -> None:
    async def close_twice(run: RunningJob) -> None:
        async def close() -> int:
            return await asyncio.to_thread(rabbit.close_connections, queue)

        for commits in (5, 25):
            await after_commits(run, commits)
            # The client may be between two connections (RabbitMQ lists one once its
            # handshake is done): close the next one it opens.
            assert await until(close, within=30, what="a connection to close") == 1

    await run_fanout_while(pool, settings, queue, close_twice)


async def test_broker_gone_and_back_mid_run(
    pool: Pool, settings: Settings, queue: str, broker_proxy: FaultProxy
) -> None:
    before = 0  # connections the proxy accepted before the outage

    async def gone_and_back(run: RunningJob) -> None:
        nonlocal before
        assert run.task is not None
        await after_commits(run, 5)
        assert broker_proxy.open_connections == 1  # the job's broker connection
        before = broker_proxy.connections
        async with broker_proxy.outage():
            await asyncio.sleep(5)  # as long as the broker's own stop and start took
            assert not run.task.done()
            assert broker_proxy.connections == before  # nothing got through meanwhile

    await run_fanout_while(pool, settings, queue, gone_and_back, broker_proxy)
    assert broker_proxy.connections > before  # the job connected again after it
