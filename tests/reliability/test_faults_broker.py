"""Fault 3: the broker connection closed mid-run (`rabbitmqctl close_connection`), and the
broker gone for a while mid-run (the test's own proxy in front of it resets every
connection and refuses new ones; the shared RabbitMQ is never stopped): no expected trace
id is missing from the consumer's queue.

And the broker unreachable from the start (issue 12, finding 2): the run fails after
`RETRY_BUDGET_SECONDS`, restartable, instead of skipping every chunk (before: COMPLETED,
every member skipped, exit 0)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from asyncmy.pool import Pool

from app.__main__ import EXIT_FAILED
from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.model import JobExecution
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.job import find_job
from app.runtime.launcher import Launcher, RunningJob
from app.runtime.resources import open_resources
from tests.integration import rabbit
from tests.integration.test_fcm_send_job import JOB, counts, job_settings, queue_depth
from tests.proxy import FaultProxy, through
from tests.reliability.support import (
    FANOUT_HOUR,
    FANOUT_PARAMETERS,
    FANOUT_RUN_DATE,
    FanoutWorld,
    after_commits,
    cli,
    cli_environment,
    drain,
    fanout_world,
    trace_ids_of,
    until,
)

pytestmark = pytest.mark.slow

JOB_NAME = find_job(JOBS, JOB).name


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
        # A budget the outages fit in: a publish on a lost connection fails at once, and
        # the chunk's retries, not one try's wait, ride the outage out (issue 26).
        job = job_settings(
            settings, queue, fake, CHUNK_SIZE=25, ENRICH_WORKERS=2, QUEUE_SIZE=2,
            PUBLISH_WINDOW=20, RETRY_BUDGET_SECONDS=30,
        )  # fmt: skip
        job = through(job, broker=broker_proxy)
        async with open_resources(job, broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, JOB), FANOUT_PARAMETERS, rerun=False)
            await disturb(run)
            await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert execution is not None
    assert_all_delivered(execution, world, await drain(queue))


async def test_broker_connection_closed_twice_mid_run(
    pool: Pool, settings: Settings, queue: str, broker_proxy: FaultProxy
) -> None:
    async def close_twice(run: RunningJob) -> None:
        for commits in (5, 25):
            await after_commits(run, commits)
            # Held: the run reaches the broker through the proxy, which holds every byte
            # meanwhile, so however long rabbitmqctl takes (seconds on a loaded machine)
            # the run cannot publish, commit or end before the close.
            assert (
                await until(
                    lambda: close_while_held(broker_proxy, queue),
                    within=60,
                    what="the run's broker connection closed while the proxy holds it",
                )
                == 1
            )

    await run_fanout_while(pool, settings, queue, close_twice, broker_proxy)


async def close_while_held(proxy: FaultProxy, vhost: str) -> int:
    """Close the connections to `vhost` (`rabbitmqctl close_connection`) while `proxy`
    holds the traffic; how many were closed. None may be listed: the client is between
    two connections (RabbitMQ lists one once its handshake is done), and a held handshake
    never ends, so the caller lets the traffic flow a moment and tries again."""
    proxy.stall()
    try:
        return await asyncio.to_thread(rabbit.close_connections, vhost)
    finally:
        proxy.resume()
        await asyncio.sleep(0.05)  # the handshake's next frames, if it was between two


async def test_broker_gone_and_back_mid_run(
    pool: Pool, settings: Settings, queue: str, broker_proxy: FaultProxy
) -> None:
    before = 0  # connections the proxy accepted before the outage

    async def gone_and_back(run: RunningJob) -> None:
        nonlocal before
        await after_commits(run, 5)
        assert broker_proxy.open_connections == 1  # the job's broker connection
        before = broker_proxy.connections
        async with broker_proxy.outage():
            await asyncio.sleep(5)  # as long as the broker's own stop and start took
            assert not run.task.done()
            assert broker_proxy.connections == before  # nothing got through meanwhile

    await run_fanout_while(pool, settings, queue, gone_and_back, broker_proxy)
    assert broker_proxy.connections > before  # the job connected again after it


async def test_broker_unreachable_from_the_start_fails_the_run_then_a_restart_delivers_all(
    pool: Pool, settings: Settings, queue: str, broker_proxy: FaultProxy, tmp_path: Path
) -> None:
    world = fanout_world(300)
    await world.load(pool)
    repository = MariaDbJobRepository(
        pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS
    )
    args = [
        "run", JOB, "--run-date", FANOUT_RUN_DATE, "--target-hour", str(FANOUT_HOUR), "--quiet",
    ]  # fmt: skip
    broker_proxy.refuse()  # connecting to the broker: ECONNREFUSED, from the process's start
    async with run_fake_peers(world.peers) as fake:
        env = cli_environment(
            settings,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
            RABBITMQ_PORT=broker_proxy.port,
            RABBITMQ_VHOST=queue,
            CHUNK_SIZE=25,
            RETRY_BUDGET_SECONDS=3,
        )
        async with cli(args, env, tmp_path / "unreachable.log") as first:
            assert await first.wait(60) == EXIT_FAILED, first.log_text()
        (failed,) = await repository.list_executions(JOB_NAME)
        assert failed.status == "FAILED"
        assert "broker" in failed.exit_message.lower(), failed.exit_message
        assert f"execution {failed.id}: FAILED" in first.log_text()
        assert failed.exit_message in first.log_text()
        (step,) = failed.steps
        assert step.status == "FAILED"
        assert (step.write_count, step.skip_count) == (0, 0)  # nothing published, none skipped
        assert await queue_depth(queue) == 0

        await broker_proxy.accept()
        async with cli(args, env, tmp_path / "restarted.log") as second:
            assert await second.wait(60) == 0, second.log_text()
    resumed, _ = await repository.list_executions(JOB_NAME)
    assert resumed.instance_id == failed.instance_id
    assert resumed.status == "COMPLETED", resumed.exit_message
    assert counts(resumed) == {
        "read": world.read - step.read_count,
        "written": world.written,
        "filtered": world.read - world.written - step.filter_count,
        "skipped": 0,
    }
    got = await drain(queue)
    assert sorted(m.body for m in got) == sorted(world.expected_bodies())
