"""Faults in their class (issue 26): what a later try may fix is retried, within a budget
that is a deadline, and never skipped; one outage is one WARNING and one line at its end.

Each fault comes from something the test owns: the fake notification service answering
429 with Retry-After, `KILL QUERY` of the run's own events query (held by the test's
table lock until killed), a vhost with no queue bound, the test's proxy in front of
RabbitMQ.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.db import fetch_all
from app.edges.peers import FCM_TOKENS
from app.model import JobExecution
from app.runtime.job import find_job
from app.runtime.launcher import Launcher, RunningJob
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
    skipped_items,
)
from tests.reliability.test_faults_broker import assert_all_delivered
from tests.waits import waiting

pytestmark = pytest.mark.slow

STEP = "couponUsageStatsFcmSendStep"
PIPELINE = {"CHUNK_SIZE": 25, "ENRICH_WORKERS": 2, "QUEUE_SIZE": 2}
# The run-wide events query, as PROCESSLIST shows it.
EVENTS_SQL = "%SELECT store_id, COUNT(*) FROM coupon_events%"
UNROUTABLE = re.compile(
    r"UnroutableError: \d+ of \d+ messages returned as unroutable: no queue is bound to"
    r" routing key 'coupon\.usage\.stats\.fcm\.send' on exchange 'coupon\.exchange'"
)


def lines_at_least(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= level]


def back_after(caplog: pytest.LogCaptureFixture, dependency: str) -> list[float]:
    """The seconds each "<dependency> back after N s" line says."""
    pattern = re.compile(rf"{re.escape(dependency)} back after (\d+\.\d) s \(\d+ faults\)")
    return [
        float(match[1])
        for r in caplog.records
        if r.levelno == logging.INFO and (match := pattern.fullmatch(r.getMessage()))
    ]


async def test_a_429_burst_is_ridden_out_honouring_retry_after(
    pool: Pool, settings: Settings, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve token lookups answered 429 with `Retry-After: 1` (before: a data fault, the
    halving skipped members for good). Each chunk waits what the service asked, though its
    own backoff starts at 10 ms; the outage is one WARNING and one line at its end."""
    caplog.set_level(logging.INFO)
    world = fanout_world(1000)
    await world.load(pool)
    async with run_fake_peers(world.peers) as fake:
        fake.control.latency_ms = 20
        job = job_settings(settings, queue, fake, RETRY_BUDGET_SECONDS=30, **PIPELINE)
        async with open_resources(job, broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, JOB), FANOUT_PARAMETERS, rerun=False)
            await after_commits(run, 3)
            fake.control.update({"fail_status": 429, "fail_times": 12, "retry_after": "1"})
            await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
        assert fake.control.fail_times == 0  # the burst happened, and is over
    assert execution is not None
    assert not skipped_items(caplog.records, STEP)
    assert_all_delivered(execution, world, await drain(queue))
    assert lines_at_least(caplog, logging.WARNING) == [
        "app.pipeline.retry: notification service unavailable: PeerUnavailable: notification"
        " service /internal/v1/fcm-tokens/search: HTTP 429, Retry-After 1 s"
    ]
    # Twelve 429s, two workers, a second between a chunk's tries: five seconds at least
    # (10 ms backoff alone would have spent the burst in a fraction of one).
    [seconds] = back_after(caplog, "notification service")
    assert seconds >= 4.0


async def test_a_killed_events_query_is_retried_never_skipped(
    pool: Pool, settings: Settings, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The run-wide events query killed on the server (`KILL QUERY`, MySQL 1317) for
    two seconds: a statement interrupted, retried (before: a data fault, every half of
    every chunk asked again and killed again, members skipped for good)."""
    world = fanout_world(1000)
    await world.load(pool)
    kills = 0
    async with (
        run_fake_peers(world.peers) as fake,
        pool.acquire() as locker,
        locker.cursor() as lock,
    ):
        # The events query waits for the table (its state: "Waiting for table metadata
        # lock") until killed: the test chooses when it runs, and so can kill it.
        await lock.execute("LOCK TABLES coupon_events WRITE")
        job = job_settings(settings, queue, fake, RETRY_BUDGET_SECONDS=30, **PIPELINE)
        async with open_resources(job, broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, JOB), FANOUT_PARAMETERS, rerun=False)
            until = time.monotonic() + 2
            while time.monotonic() < until:
                assert not run.task.done(), "the run ended with its events query held"
                for (query,) in await fetch_all(
                    pool,
                    "SELECT ID FROM information_schema.PROCESSLIST"
                    " WHERE DB = %s AND INFO LIKE %s AND ID <> CONNECTION_ID()",
                    (settings.database.target.database, EVENTS_SQL),
                ):
                    await fetch_all(pool, f"KILL QUERY {int(query)}")
                    kills += 1
                await asyncio.sleep(0.02)  # polls the server for the next try's query
            await lock.execute("UNLOCK TABLES")
            await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert kills >= 3, "the events query was not killed again and again"
    assert execution is not None
    assert not skipped_items(caplog.records, STEP)
    assert_all_delivered(execution, world, await drain(queue))


async def test_an_unroutable_fanout_fails_within_the_budget_naming_the_routing_key(
    pool: Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A vhost with no queue bound: every message comes back. The run FAILS within
    RETRY_BUDGET_SECONDS, its exit message naming the exchange and the routing key,
    nothing skipped, each chunk's tokens asked for once (before: every member skipped,
    COMPLETED WITH SKIPS, two token lookups per member, 11 minutes when the peers took
    2 s)."""
    caplog.set_level(logging.INFO)
    budget = 3
    world = fanout_world(2000)
    await world.load(pool)
    with rabbit.temporary_vhost("unbound") as vhost:
        async with run_fake_peers(world.peers) as fake:
            fake.control.latency_ms = 100
            job = job_settings(settings, vhost, fake, RETRY_BUDGET_SECONDS=budget, **PIPELINE)
            async with open_resources(job, broker=True) as resources:
                launcher = Launcher(resources, JOBS)
                started = time.monotonic()
                async with waiting(120, "the unroutable fan-out's end"):
                    execution = await launcher.run(
                        find_job(JOBS, JOB), FANOUT_PARAMETERS, rerun=False
                    )
                took = time.monotonic() - started
            lookups = fake.calls[FCM_TOKENS]
    assert execution.status == "FAILED"
    assert UNROUTABLE.fullmatch(execution.exit_message), execution.exit_message
    assert counts(execution)["skipped"] == 0
    assert not skipped_items(caplog.records, STEP)
    # A chunk per worker started, each looked up once, then published again and again.
    assert len(lookups) <= PIPELINE["ENRICH_WORKERS"], len(lookups)
    # Within the budget: the first lookups (0.1 s), the budget, the run's start and end.
    assert took < budget + 3, took
    # Each chunk in flight may give up at the deadline (two workers: one or two lines)
    elapsed = gave_up_after(caplog, budget)
    assert elapsed and all(budget - 0.5 <= spent <= budget + 0.2 for spent in elapsed), elapsed


async def fanout_with_a_broker_outage(
    pool: Pool,
    settings: Settings,
    queue: str,
    broker_proxy: FaultProxy,
    outage: Callable[[RunningJob], Awaitable[None]],
    **overrides: object,
) -> tuple[JobExecution, FanoutWorld]:
    """The fan-out of 2,000 members through the test's proxy to RabbitMQ; after its third
    commit the broker is gone (connections reset, new ones refused) during `outage`."""
    world = fanout_world(2000)
    await world.load(pool)
    async with run_fake_peers(world.peers) as fake:
        fake.control.latency_ms = 30
        job = job_settings(settings, queue, fake, PUBLISH_WINDOW=20, **PIPELINE, **overrides)
        async with open_resources(through(job, broker=broker_proxy), broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, JOB), FANOUT_PARAMETERS, rerun=False)
            await after_commits(run, 3)
            async with broker_proxy.outage():
                await outage(run)
            async with waiting(60, "the run's end after the broker outage"):
                await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert execution is not None
    return execution, world


def gave_up_after(caplog: pytest.LogCaptureFixture, budget: float) -> list[float]:
    """The seconds each chunk that gave up says it retried."""
    pattern = re.compile(
        rf"still failing after \d+ faults in (\d+\.\d) s \(RETRY_BUDGET_SECONDS={budget:g}\)"
    )
    return [float(match[1]) for r in caplog.records if (match := pattern.search(r.getMessage()))]


async def test_the_retry_budget_is_a_deadline(
    pool: Pool,
    settings: Settings,
    queue: str,
    broker_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker refused for longer than RETRY_BUDGET_SECONDS (2 s), while a try may
    wait BROKER_STALL_SECONDS (20 s) for a channel: the step fails 2 s after its first
    fault, the try in flight cut, and the log says so in true figures (before: a try begun
    within the budget rode on for its 20 s)."""
    budget = 2
    took = 0.0

    async def longer_than_the_budget(run: RunningJob) -> None:
        nonlocal took
        began = time.monotonic()
        await asyncio.wait({run.task}, timeout=30)  # the broker away all along
        took = time.monotonic() - began

    execution, _ = await fanout_with_a_broker_outage(
        pool, settings, queue, broker_proxy, longer_than_the_budget,
        RETRY_BUDGET_SECONDS=budget, BROKER_STALL_SECONDS=20,
    )  # fmt: skip
    assert execution.status == "FAILED"
    assert counts(execution)["skipped"] == 0
    assert took < budget + 3, took
    elapsed = gave_up_after(caplog, budget)
    assert elapsed and max(elapsed) <= budget + 0.2, elapsed


async def test_a_broker_outage_is_one_warning_and_one_line_at_its_end(
    pool: Pool,
    settings: Settings,
    queue: str,
    broker_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker gone 4 s mid-run and back: one WARNING as the connection is lost, one
    line as it is back, nothing at ERROR; every trace id delivered (before: aiormq's
    ERROR and aio-pika's WARNING at each reconnect attempt, every second, and a WARNING at
    each chunk's every retry)."""
    caplog.set_level(logging.INFO)

    async def four_seconds(run: RunningJob) -> None:
        await asyncio.sleep(4)
        assert not run.task.done()

    execution, world = await fanout_with_a_broker_outage(
        pool, settings, queue, broker_proxy, four_seconds, RETRY_BUDGET_SECONDS=60
    )
    assert_all_delivered(execution, world, await drain(queue))
    dependency = f"broker 127.0.0.1:{broker_proxy.port}"
    # one WARNING for the outage (asyncio's own line for writes to the reset socket, which
    # a loaded loop makes before it tells the connection, is dropped: seen in 2 of 6 runs
    # here on 2026-12-07); on a loaded machine a later stall may be an outage of its own
    # (confirmations slower than BROKER_STALL_SECONDS), with its own line at its end
    warning, *stalls = lines_at_least(caplog, logging.WARNING)
    assert warning.startswith(f"app.edges.broker: {dependency}: connection lost: "), warning
    assert all(s.startswith("app.edges.broker: broker stalled: ") for s in stalls), stalls
    assert len(back_after(caplog, dependency)) == 1 + len(stalls)
