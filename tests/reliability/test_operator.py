"""The operator's JobOperator, across replicas: stop, restart, abandon through the API,
the heartbeat as a lease, the per-process bound on running executions, backfills."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import pytest
from aiohttp.test_utils import TestClient, TestServer
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all, transaction
from app.model import ChunkCounts, JobParameter, Status
from app.repository.mariadb import MariaDbJobRepository
from app.repository.rules import LeaseLost
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.web.app import create_app
from tests.integration.test_fcm_send_job import job_settings as fanout_settings
from tests.integration.test_usage_stats_job import job_settings as stats_settings
from tests.integration.test_usage_stats_job import stats
from tests.integration.test_web_api import bearer
from tests.proxy import FaultProxy, through
from tests.reliability.support import (
    FANOUT_PARAMETERS,
    STATS_RUN_DATE,
    StatsWorld,
    after_commits,
    age_execution,
    drain,
    fanout_world,
    heartbeat_age,
    stats_world,
    trace_ids_of,
    until,
)
from tests.waits import waiting

pytestmark = pytest.mark.slow

FANOUT = find_job(JOBS, "coupon-usage-stats-fcm-send")
STATS = find_job(JOBS, "coupon-usage-stats")
QUICK = {"HEARTBEAT_SECONDS": 0.2, "CHUNK_SIZE": 100, "ENRICH_WORKERS": 2, "QUEUE_SIZE": 2}
STOP_MEMBERS = 23_000  # 21,231 members read, 20,050 messages: 22 chunks of 1,000


@dataclass
class Replica:
    launcher: Launcher
    api: TestClient


async def replica(stack: AsyncExitStack, settings: Settings, *, broker: bool) -> Replica:
    """A daemon of its own: its pool, its launcher, its admin API."""
    resources = await stack.enter_async_context(open_resources(settings, broker=broker))
    launcher = Launcher(resources, JOBS)
    stack.push_async_callback(launcher.shutdown, 10)
    api = await stack.enter_async_context(TestClient(TestServer(create_app(launcher, {}))))
    return Replica(launcher, api)


@dataclass
class StatsSetup:
    world: StatsWorld
    store: FakePeers
    job: Settings  # the stats job's settings over the world's store service


async def stats_setup(
    stack: AsyncExitStack,
    pool: Pool,
    settings: Settings,
    members: int,
    *,
    latency_ms: float = 0,
    **overrides: object,
) -> StatsSetup:
    """A stats world loaded, its fake store service answering in `latency_ms`."""
    world = stats_world(members)
    await world.load(pool)
    store = await stack.enter_async_context(run_fake_peers(world.peer_data()))
    store.control.latency_ms = latency_ms
    return StatsSetup(world, store, stats_settings(settings, store, **overrides))


async def status_of(pool: Pool, execution_id: int) -> str:
    [(status,)] = await fetch_all(
        pool, "SELECT STATUS FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s", (execution_id,)
    )
    return str(status)


async def test_a_fanout_stopped_through_another_replica_then_restarted_delivers_every_trace_id(
    pool: Pool, settings: Settings, queue: str
) -> None:
    """Spring's JobOperator across replicas: the stop request travels in the job
    repository; the runner reads it at a heartbeat, commits its chunks in flight and ends
    STOPPED; the restart through the API resumes from the checkpoint. 20,000 messages in
    22 chunks; from the 5th commit on, the token lookups take 2 s each until the stop has
    ended the run, so the stop finds most chunks unread however loaded the machine."""
    world = fanout_world(STOP_MEMBERS)
    assert sum(map(len, world.bodies.values())) >= 20_000
    await world.load(pool)
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(run_fake_peers(world.peers))
        job = fanout_settings(settings, queue, store, **{**QUICK, "CHUNK_SIZE": 1000})
        a = await replica(stack, job, broker=True)
        b = await replica(stack, job, broker=True)
        run = await a.launcher.launch(FANOUT, FANOUT_PARAMETERS, rerun=False)
        await after_commits(run, 5)
        store.control.latency_ms = 2000  # the rest waits: the stop lands mid-run

        url = f"/api/v1/jobs/executions/{run.execution.id}"
        resp = await b.api.post(f"{url}/stop", headers=bearer())
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["status"] == "STOPPING"
        async with waiting(20, "the stopped run's end"):
            await run.task
        stopped = await a.launcher.repository.get_execution(run.execution.id)
        assert stopped is not None
        assert (stopped.status, stopped.exit_code) == ("STOPPED", "STOPPED")
        assert stopped.exit_message == "stopped on request; restartable from the checkpoint"
        checkpoint = stopped.steps[0].checkpoint
        assert checkpoint is not None and checkpoint < world.members
        first = trace_ids_of(await drain(queue))
        # the chunks in flight committed first: exactly the members up to the checkpoint
        assert set(first) == world.trace_ids(range(1, checkpoint + 1))
        again = await b.api.post(f"{url}/stop", headers=bearer())
        assert again.status == 409 and (await again.json())["error"]["code"] == "JOB_NOT_RUNNING"
        store.control.latency_ms = 0

        resp = await b.api.post(f"{url}/restart", headers=bearer())
        assert resp.status == 202, await resp.text()
        restarted = await resp.json()
        assert resp.headers["Location"] == f"/api/v1/jobs/executions/{restarted['executionId']}"
        assert restarted["parameters"] == stopped.parameters
        resumed = b.launcher.running[restarted["executionId"]]
        await resumed.task
        final = await b.launcher.repository.get_execution(restarted["executionId"])
    assert final is not None and final.status == "COMPLETED", final and final.exit_message
    assert final.instance_id == stopped.instance_id
    rest = trace_ids_of(await drain(queue, within=60))  # most of the 20,000: the stop was quick
    assert set(first) | set(rest) == world.trace_ids()
    assert not set(first) & set(rest)  # the restart read after the checkpoint only


async def test_restart_stop_and_abandon_refuse_what_does_not_apply(
    pool: Pool, settings: Settings
) -> None:
    async with AsyncExitStack() as stack:
        setup = await stats_setup(stack, pool, settings, 30)
        a = await replica(stack, setup.job, broker=False)
        done = await a.launcher.run(STATS, {"runDate": STATS_RUN_DATE}, rerun=False)
        assert done.status == "COMPLETED"
        url = f"/api/v1/jobs/executions/{done.id}"
        for action, code in (
            ("stop", "JOB_NOT_RUNNING"),
            ("restart", "JOB_NOT_RESTARTABLE"),
            ("abandon", "JOB_NOT_ABANDONABLE"),
        ):
            resp = await a.api.post(f"{url}/{action}", headers=bearer())
            assert resp.status == 409, action
            assert (await resp.json())["error"]["code"] == code
            missing = await a.api.post(f"/api/v1/jobs/executions/999999/{action}", headers=bearer())
            assert missing.status == 404
            assert (await missing.json())["error"]["code"] == "EXECUTION_NOT_FOUND"
            unauthenticated = await a.api.post(f"{url}/{action}")
            assert unauthenticated.status == 401


async def test_an_abandoned_execution_is_never_restarted_and_its_instance_starts_over(
    pool: Pool, settings: Settings
) -> None:
    """The store service fails for good after the 3rd commit. 40 chunks: the pipeline's
    bounded queues let at most 13 chunks be looked up ahead of the commits (the commit
    queue's 8, a chunk per worker, the one committing), so the failure always meets chunks
    still to look up (with 12 chunks, a loaded database's slow commits let every lookup
    finish first, and the run COMPLETED)."""
    async with AsyncExitStack() as stack:
        setup = await stats_setup(
            stack, pool, settings, 1000, latency_ms=20, CHUNK_SIZE=25, RETRY_BUDGET_SECONDS=0.3
        )
        a = await replica(stack, setup.job, broker=False)
        run = await a.launcher.launch(STATS, {"runDate": STATS_RUN_DATE}, rerun=False)
        await after_commits(run, 3)
        setup.store.control.update({"fail_status": 503, "fail_times": -1})
        await run.task
        failed = await a.launcher.repository.get_execution(run.execution.id)
        assert failed is not None and failed.status == "FAILED"
        assert failed.steps[0].checkpoint is not None

        url = f"/api/v1/jobs/executions/{failed.id}"
        resp = await a.api.post(f"{url}/abandon", headers=bearer())
        assert resp.status == 200
        body = await resp.json()
        # as Spring's SimpleJobOperator.abandon writes it: the exit code kept, the step untouched
        assert (body["status"], body["exitCode"], body["steps"][0]["status"]) == (
            "ABANDONED",
            "FAILED",
            "FAILED",
        )
        assert (await a.api.post(f"{url}/restart", headers=bearer())).status == 409

        setup.store.control.update({"fail_status": None})
        fresh = await a.launcher.run(STATS, {"runDate": STATS_RUN_DATE}, rerun=False)
    assert fresh.status == "COMPLETED" and fresh.instance_id == failed.instance_id
    assert fresh.steps[0].read_count == setup.world.members  # from scratch, not the checkpoint
    assert await stats(pool) == setup.world.expected


async def test_the_lease_fences_a_runner_whose_instance_was_taken_over(pool: Pool) -> None:
    """Once another replica has marked the execution abandoned, the old runner's commit
    raises LeaseLost and its chunk's writes roll back with it."""
    parameters = [JobParameter("runDate", "java.time.LocalDate", STATS_RUN_DATE)]
    old = MariaDbJobRepository(pool, abandon_after_seconds=120)
    execution = await old.start_execution("fenceJob", parameters, rerun_completed=False)
    step = await old.start_step(execution, "fenceStep")
    takeover = await MariaDbJobRepository(pool, abandon_after_seconds=0).start_execution(
        "fenceJob", parameters, rerun_completed=False
    )
    assert await status_of(pool, execution.id) == "FAILED"
    assert await old.heartbeat(execution.id) == Status.FAILED  # what the old runner reads
    with pytest.raises(LeaseLost):
        async with transaction(pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
                " VALUES (1, 'x', 1, %s)",
                (STATS_RUN_DATE,),
            )
            await old.commit_chunk(conn, step.id, ChunkCounts(1, 1, 0, 0), {"checkpoint": 1}, 0)
    assert await stats(pool) == []
    await old.finish_execution(execution.id, Status.COMPLETED)  # not over the takeover's
    assert await status_of(pool, execution.id) == "FAILED"
    assert await status_of(pool, takeover.id) == "STARTED"


async def test_a_stalled_runner_loses_its_lease_and_writes_nothing_after_the_takeover(
    pool: Pool, settings: Settings, db_proxy: FaultProxy
) -> None:
    """Replica A reaches the database through a proxy that stalls; replica B finds A's
    heartbeat stale (backdated, once A's renewals have stopped), takes the instance over
    and completes it; when A's bytes flow again, A commits nothing more. A may be cut off
    mid-transaction, holding row locks that B needs: the server drops A's silent session
    DB_STALL_SECONDS + 1 s in."""
    lease = {"JOB_ABANDON_AFTER_SECONDS": 2, "HEARTBEAT_SECONDS": 0.2, "CHUNK_SIZE": 20}
    async with AsyncExitStack() as stack:
        setup = await stats_setup(stack, pool, settings, 400, latency_ms=20, **lease)
        cut_off = through(replace(setup.job, DB_STALL_SECONDS=1), db=db_proxy)
        a = await replica(stack, cut_off, broker=False)
        b = await replica(stack, setup.job, broker=False)
        run = await a.launcher.launch(STATS, {"runDate": STATS_RUN_DATE}, rerun=False)
        await after_commits(run, 3)
        db_proxy.stall()

        async def renewals_stopped() -> bool:  # 2.5 beats: no renewal is on its way still
            return await heartbeat_age(pool, run.execution.id) > 0.5

        await until(renewals_stopped, within=30, what="A's heartbeat held by the stall")
        # past JOB_ABANDON_AFTER_SECONDS without a heartbeat, instead of waiting that long
        await age_execution(pool, run.execution.id, 3)
        taken = await b.launcher.run(STATS, {"runDate": STATS_RUN_DATE}, rerun=False)
        assert taken.status == "COMPLETED", taken.exit_message
        assert await status_of(pool, run.execution.id) == "FAILED"
        [(commits_at_takeover,)] = await fetch_all(
            pool,
            "SELECT COMMIT_COUNT FROM BATCH_STEP_EXECUTION WHERE JOB_EXECUTION_ID = %s",
            (run.execution.id,),
        )
        db_proxy.resume()
        async with waiting(30, "the fenced run's end once the stall is released"):
            await run.task
        [(commits_after,)] = await fetch_all(
            pool,
            "SELECT COMMIT_COUNT FROM BATCH_STEP_EXECUTION WHERE JOB_EXECUTION_ID = %s",
            (run.execution.id,),
        )
    assert commits_after == commits_at_takeover  # A wrote nothing after the takeover
    assert await status_of(pool, run.execution.id) == "FAILED"  # nor over B's records
    assert await stats(pool) == setup.world.expected


async def test_launches_beyond_max_running_executions_wait_in_order_as_starting(
    pool: Pool, settings: Settings
) -> None:
    async with AsyncExitStack() as stack:
        setup = await stats_setup(
            stack, pool, settings, 200, latency_ms=20, MAX_RUNNING_EXECUTIONS=1, CHUNK_SIZE=20
        )
        a = await replica(stack, setup.job, broker=False)
        days = ["2025-10-24", "2025-10-25", "2025-10-26"]
        runs = [await a.launcher.launch(STATS, {"runDate": day}, rerun=True) for day in days]
        assert [r.execution.status for r in runs] == ["STARTED", "STARTING", "STARTING"]
        views = [
            await (
                await a.api.get(f"/api/v1/jobs/executions/{r.execution.id}", headers=bearer())
            ).json()
            for r in runs[1:]
        ]
        assert [(v["status"], v["startTime"]) for v in views] == [("STARTING", None)] * 2
        await asyncio.gather(*(r.task for r in runs))
        finished = [await a.launcher.repository.get_execution(r.execution.id) for r in runs]
    assert [e.status for e in finished if e is not None] == ["COMPLETED"] * 3
    starts = [e.start_time for e in finished if e is not None]
    ends = [e.end_time for e in finished if e is not None]
    assert all(s is not None for s in starts) and all(e is not None for e in ends)
    # one at a time, in launch order
    assert ends[0] <= starts[1] and ends[1] <= starts[2]  # type: ignore[operator]


async def test_a_backfill_launches_each_date_as_its_own_instance(
    pool: Pool, settings: Settings
) -> None:
    async with AsyncExitStack() as stack:
        setup = await stats_setup(stack, pool, settings, 50, MAX_RUNNING_EXECUTIONS=2)
        a = await replica(stack, setup.job, broker=False)
        resp = await a.api.post(
            "/api/v1/jobs/coupon-usage-stats?from=2025-10-24&to=2025-10-26", headers=bearer()
        )
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        assert body["refused"] == []
        launched = body["executions"]
        assert [e["parameters"]["runDate"] for e in launched] == [
            "2025-10-24",
            "2025-10-25",
            "2025-10-26",
        ]
        assert [e["status"] for e in launched] == ["STARTED", "STARTED", "STARTING"]

        async def all_done() -> bool:
            found = [await a.launcher.repository.get_execution(e["executionId"]) for e in launched]
            return all(f is not None and f.status == "COMPLETED" for f in found)

        await until(all_done, within=30, what="the backfill's three runs")
        for query, parameter in (
            ("from=2025-10-26&to=2025-10-24", "to"),
            ("from=2025-10-24", "to"),
            ("from=2024-01-01&to=2025-12-31", "to"),
            ("from=yesterday&to=2025-10-24", "from"),
        ):
            bad = await a.api.post(f"/api/v1/jobs/coupon-usage-stats?{query}", headers=bearer())
            assert bad.status == 400, query
            assert (await bad.json())["error"]["message"].startswith(f"{parameter}: "), query
    days = {row[3].isoformat() for row in await stats(pool)}
    assert days == {"2025-10-24", "2025-10-25", "2025-10-26"}


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_30_date_backlog_runs_within_the_connection_bound(
    pool: Pool, settings: Settings, db_proxy: FaultProxy
) -> None:
    """Before: 30 run dates launched at once held 49 connections (streams outside the
    pool) and took RSS from 47 to 284 MB. Now MAX_RUNNING_EXECUTIONS run at once, the rest
    wait STARTING, and the connections stay within MAX x READ_STREAMS + DB_POOL_SIZE."""
    bound = {"MAX_RUNNING_EXECUTIONS": 4, "READ_STREAMS": 2, "DB_POOL_SIZE": 8}
    async with AsyncExitStack() as stack:
        setup = await stats_setup(stack, pool, settings, 3000, CHUNK_SIZE=200, **bound)
        a = await replica(stack, through(setup.job, db=db_proxy), broker=False)
        idle = rss_mb()
        peak_connections, peak_rss = 0, idle
        resp = await a.api.post(
            "/api/v1/jobs/coupon-usage-stats?from=2025-10-01&to=2025-10-30", headers=bearer()
        )
        assert resp.status == 202, await resp.text()
        launched = (await resp.json())["executions"]
        assert "STARTING" in [e["status"] for e in launched]  # a backlog: some waited
        async with waiting(600, "the 30 dates' runs ended"):
            while a.launcher.running:
                peak_connections = max(peak_connections, db_proxy.open_connections)
                peak_rss = max(peak_rss, rss_mb())
                await asyncio.sleep(0.01)
        finished = [await a.launcher.repository.get_execution(e["executionId"]) for e in launched]
        after = rss_mb()
    assert [e.status for e in finished if e is not None] == ["COMPLETED"] * 30
    assert peak_connections <= 4 * 2 + 8, peak_connections
    print(
        f"\n30-date backlog: peak {peak_connections} database connections (bound 16);"
        f" RSS idle {idle:.0f} MB, peak {peak_rss:.0f} MB, after {after:.0f} MB"
    )


async def test_an_outcome_is_recorded_once_the_database_answers_again(
    pool: Pool, settings: Settings, db_proxy: FaultProxy
) -> None:
    """Before: after a database drop the run logged FAILED but its row stayed STARTED,
    and every launch was refused as running for minutes. Now the outcome is recorded with
    retries while the database is away (within the lease)."""
    async with AsyncExitStack() as stack:
        setup = await stats_setup(
            stack, pool, settings, 200, latency_ms=20, CHUNK_SIZE=20, RETRY_BUDGET_SECONDS=0.5
        )
        a = await replica(stack, through(setup.job, db=db_proxy), broker=False)
        run = await a.launcher.launch(STATS, {"runDate": STATS_RUN_DATE}, rerun=False)
        await after_commits(run, 2)
        async with db_proxy.outage():  # the database away: every connection reset, refused
            setup.store.control.update({"fail_status": 503, "fail_times": -1})  # the step fails
            await asyncio.sleep(3)  # the outage's length, and that the run does not end in it
            assert not run.task.done()  # still trying to record its outcome
        await run.task
    assert a.launcher.unrecorded == 0
    assert await status_of(pool, run.execution.id) == "FAILED"
