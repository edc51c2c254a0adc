"""Recovery without a human (issue 18): a scheduled run killed, queued runs killed, a lost
lease, a stop on the runner's own replica. Every scheduled run ends COMPLETED (or FAILED,
which alerts), with no launch by hand."""

from __future__ import annotations

import signal
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.db import fetch_all
from app.model import RUNNING
from tests.integration.test_daemon_serve import Daemon, admin_headers, serve
from tests.integration.test_fcm_send_job import job_settings as fanout_settings
from tests.integration.test_fcm_send_job import queue_depth
from tests.integration.test_web_api import bearer
from tests.proxy import FaultProxy, through
from tests.reliability.support import (
    FANOUT_PARAMETERS,
    FanoutWorld,
    after_commits,
    drain,
    fanout_world,
    stats_world,
    trace_ids_of,
    until,
)
from tests.reliability.test_operator import FANOUT, QUICK, replica
from tests.waits import waiting

pytestmark = pytest.mark.slow

FANOUT_JOB = "couponUsageStatsFcmSendJob"
STATS_JOB = "couponUsageStatsJob"
MEMBERS = 23_000  # 20,050 messages: 22 chunks of CHUNK_SIZE
SLOW_LOOKUP_MS = 2000  # the fake token lookups while the test interrupts a run: it lasts
ABANDON_SECONDS = 8
LEASE = {  # short, to keep the tests short: a dead runner's lease expires in 8 s
    "HEARTBEAT_SECONDS": "0.5",
    "JOB_ABANDON_AFTER_SECONDS": str(ABANDON_SECONDS),
    "AUTO_RESTART_BACKOFF_SECONDS": "1",
    "CHUNK_SIZE": "1000",
    "FANOUT_MISFIRE_GRACE_MINUTES": "60",  # the hour's run whenever the test runs in it
}


async def this_hours_world(pool: Pool, settings: Settings) -> FanoutWorld:
    """A fan-out world of the current hour in APP_TIMEZONE: what the scheduler launches."""
    now = datetime.now(settings.timezone)
    world = fanout_world(MEMBERS, now.date().isoformat(), now.hour)
    assert sum(map(len, world.bodies.values())) >= 20_000
    await world.load(pool)
    return world


async def executions_of(pool: Pool, job: str) -> list[tuple[int, str, str]]:
    """(id, status, exit message) of the job's executions, oldest first."""
    rows = await fetch_all(
        pool,
        "SELECT e.JOB_EXECUTION_ID, e.STATUS, e.EXIT_MESSAGE FROM BATCH_JOB_EXECUTION e"
        " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
        " WHERE i.JOB_NAME = %s ORDER BY e.JOB_EXECUTION_ID",
        (job,),
    )
    return [(int(i), str(s), str(m)) for i, s, m in rows]


async def committed_fanout(pool: Pool) -> int | None:
    """The first fan-out execution that has committed a chunk: the id of the run the
    test interrupts (None before any commit)."""
    rows = await fetch_all(
        pool,
        "SELECT MIN(e.JOB_EXECUTION_ID) FROM BATCH_STEP_EXECUTION s"
        " JOIN BATCH_JOB_EXECUTION e ON e.JOB_EXECUTION_ID = s.JOB_EXECUTION_ID"
        " JOIN BATCH_JOB_INSTANCE i ON i.JOB_INSTANCE_ID = e.JOB_INSTANCE_ID"
        " WHERE i.JOB_NAME = %s AND s.COMMIT_COUNT > 0",
        (FANOUT_JOB,),
    )
    return None if rows[0][0] is None else int(rows[0][0])


async def executions_of_instance(pool: Pool, execution_id: int) -> list[tuple[int, str, str]]:
    """(id, status, exit message) of the executions of `execution_id`'s instance, oldest
    first: its restarts, never another hour's fan-out."""
    rows = await fetch_all(
        pool,
        "SELECT e.JOB_EXECUTION_ID, e.STATUS, e.EXIT_MESSAGE FROM BATCH_JOB_EXECUTION e"
        " WHERE e.JOB_INSTANCE_ID ="
        " (SELECT JOB_INSTANCE_ID FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s)"
        " ORDER BY e.JOB_EXECUTION_ID",
        (execution_id,),
    )
    return [(int(i), str(s), str(m)) for i, s, m in rows]


async def until_completed(pool: Pool, daemon: Daemon, execution_id: int, within: float) -> None:
    """Until the instance of `execution_id` has a COMPLETED execution. Not any fan-out: a
    test that crosses the top of an hour sees that hour's own (empty) fan-out complete."""

    async def completed() -> bool:
        assert daemon.process.returncode is None, daemon.log_text()
        executions = await executions_of_instance(pool, execution_id)
        return any(s == "COMPLETED" for _, s, _ in executions)

    what = f"the fan-out instance of execution {execution_id} COMPLETED"
    await until(completed, within=within, every=0.2, what=what)


async def kill(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    async with waiting(30, "the killed daemon's exit"):
        assert await daemon.process.wait() == -signal.SIGKILL


async def test_serve_killed_mid_fanout_and_restarted_at_once_delivers_every_trace_id(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """SIGKILL mid fan-out of the current hour, a new `serve` within 5 s: its catch-up is
    refused (the dead execution's lease still runs), then its reconciler takes the dead
    execution over once the lease expires and restarts it from its checkpoint. The first
    run's token lookups take 2 s each: the kill after its first commit finds most of its
    22 chunks unread."""
    world = await this_hours_world(pool, settings)
    async with run_fake_peers(world.peers) as fake:
        fake.control.latency_ms = SLOW_LOOKUP_MS
        async with serve(settings, fake, queue, tmp_path / "killed.log", **LEASE) as first:
            killed = await until(
                lambda: committed_fanout(pool), within=60, what="a committed fan-out chunk"
            )
            await kill(first)
        fake.control.latency_ms = 0
        [(_, status, _)] = await executions_of_instance(pool, killed)
        assert status == "STARTED"  # nobody recorded an end
        restarted = time.monotonic()
        async with serve(settings, fake, queue, tmp_path / "restarted.log", **LEASE) as second:
            # the lease (8 s) and the rest of the run
            await until_completed(pool, second, killed, within=ABANDON_SECONDS + 180)
        print(f"\nevery trace id delivered {time.monotonic() - restarted:.0f} s after the restart")
    (first_id, status, message), *restarts = await executions_of_instance(pool, killed)
    assert (first_id, status) == (killed, "FAILED")
    assert message.startswith("abandoned: no heartbeat for ")
    # restarted by the reconciler; on a loaded machine a restart may lose its lease too,
    # and the schedule restarts it again (each FAILED), within AUTO_RESTART_ATTEMPTS
    assert [s for _, s, _ in restarts][-1:] == ["COMPLETED"]
    assert {s for _, s, _ in restarts[:-1]} <= {"FAILED"} and len(restarts) <= 3
    assert "restarting it from its checkpoint" in second.log_text()
    got = await drain(queue, within=60)  # 20,050 and the killed run's chunks in flight
    assert set(trace_ids_of(got)) == world.trace_ids()
    assert {m.body for m in got} == world.expected_bodies()


async def lease_lost(daemon: Daemon) -> bool:
    return "lease lost: execution=" in daemon.log_text()


async def test_a_lost_lease_fails_the_run_and_the_schedule_restarts_it(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path, db_proxy: FaultProxy
) -> None:
    """The database link stalls longer than half the lease (4 s): the runner loses its
    lease, the execution ends FAILED (a fault, not an operator's stop), and the schedule
    restarts it from its checkpoint: every trace id delivered."""
    world = await this_hours_world(pool, settings)
    env = {**LEASE, "DB_STALL_SECONDS": "1", "RETRY_BUDGET_SECONDS": "30"}
    async with (
        run_fake_peers(world.peers) as fake,
        serve(through(settings, db=db_proxy), fake, queue, tmp_path / "serve.log", **env) as d,
    ):
        stalled = await until(
            lambda: committed_fanout(pool), within=60, what="a committed fan-out chunk"
        )
        db_proxy.stall()
        await until(lambda: lease_lost(d), within=30, what="the runner's lease lost")
        db_proxy.resume()
        await until_completed(pool, d, stalled, within=180)
    (first_id, status, message), *restarts = await executions_of_instance(pool, stalled)
    assert first_id == stalled
    assert (status, message) == ("FAILED", "lease lost: the heartbeat could not be renewed")
    assert [s for _, s, _ in restarts][-1:] == ["COMPLETED"]
    assert {s for _, s, _ in restarts[:-1]} <= {"FAILED"} and len(restarts) <= 3
    got = await drain(queue, within=60)  # 20,050 and the stalled run's chunks in flight
    assert set(trace_ids_of(got)) == world.trace_ids()


async def test_queued_runs_killed_with_the_daemon_all_complete_after_a_restart(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """MAX_RUNNING_EXECUTIONS=2 and 10 stats dates launched: 2 STARTED, 8 STARTING when
    `serve` is killed. The next `serve` takes them all over and completes every one."""
    world = stats_world(400)
    await world.load(pool)
    days = [f"2025-10-{d}" for d in range(17, 27)]
    env = {**LEASE, "MAX_RUNNING_EXECUTIONS": "2", "CHUNK_SIZE": "20", "SCHEDULER_ENABLED": "true"}
    async with run_fake_peers(world.peer_data()) as fake:
        # each run lasts 15 s and more (20 chunks, 4 workers, 3 s a store lookup): the queue
        # stays full however long the 10 launches take (at 0.2 s a lookup, 2 dates had
        # completed before the kill under load)
        fake.control.latency_ms = 3000
        async with (
            serve(settings, fake, queue, tmp_path / "killed.log", **env) as first,
            aiohttp.ClientSession(first.url, headers=admin_headers()) as http,
        ):
            for day in days:
                async with http.post(f"/api/v1/jobs/coupon-usage-stats?runDate={day}") as resp:
                    assert resp.status == 202, await resp.text()
            statuses = [s for _, s, _ in await executions_of(pool, STATS_JOB)]
            assert statuses.count("STARTING") >= 8  # (the catch-up's date may run too)
            await kill(first)
        fake.control.latency_ms = 0
        left = await executions_of(pool, STATS_JOB)
        assert {s for _, s, _ in left} <= set(RUNNING) | {"COMPLETED"}

        async def all_completed() -> bool:
            assert second.process.returncode is None, second.log_text()
            rows = await fetch_all(
                pool,
                "SELECT p.PARAMETER_VALUE, e.STATUS FROM BATCH_JOB_EXECUTION e"
                " JOIN BATCH_JOB_EXECUTION_PARAMS p ON p.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
                " AND p.PARAMETER_NAME = 'runDate' ORDER BY e.JOB_EXECUTION_ID",
            )
            latest = {str(day): str(status) for day, status in rows}
            return all(latest.get(day) == "COMPLETED" for day in days)

        async with serve(settings, fake, queue, tmp_path / "restarted.log", **env) as second:
            await until(
                all_completed, within=ABANDON_SECONDS + 60, every=0.2, what="all 10 COMPLETED"
            )
    rows = await executions_of(pool, STATS_JOB)
    assert not [r for r in rows if r[1] in RUNNING]  # none left STARTED, STARTING, STOPPING


async def test_a_stop_on_the_running_replica_takes_effect_at_once(
    pool: Pool, settings: Settings, queue: str
) -> None:
    """The API stop on the replica that runs the step: no chunk starts after it, so at
    most one chunk per worker is published after the response; it ends STOPPED well
    before a heartbeat (30 s) could have carried the request. From the 5th commit on, the
    token lookups take 2 s each: the stop finds most of the 22 chunks unread."""
    world = fanout_world(MEMBERS)
    await world.load(pool)
    workers, chunk = 2, 1000
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(run_fake_peers(world.peers))
        overrides = {**QUICK, "CHUNK_SIZE": chunk, "ENRICH_WORKERS": workers}
        job = fanout_settings(settings, queue, store, **{**overrides, "HEARTBEAT_SECONDS": 30})
        a = await replica(stack, job, broker=True)
        run = await a.launcher.launch(FANOUT, FANOUT_PARAMETERS, rerun=False)
        await after_commits(run, 5)
        store.control.latency_ms = SLOW_LOOKUP_MS
        url = f"/api/v1/jobs/executions/{run.execution.id}"
        resp = await a.api.post(f"{url}/stop", headers=bearer())
        answered = time.monotonic()
        assert resp.status == 202, await resp.text()
        published_before = await queue_depth(queue)  # every message confirmed by now
        async with waiting(20, "the stopped run's end"):
            await run.task
        took = time.monotonic() - answered
        stopped = await a.launcher.repository.get_execution(run.execution.id)
    assert stopped is not None
    assert (stopped.status, stopped.exit_message) == (
        "STOPPED",
        "stopped on request; restartable from the checkpoint",
    )
    checkpoint = stopped.steps[0].checkpoint
    got = trace_ids_of(await drain(queue))
    after = len(got) - published_before
    print(f"\nSTOPPED {took:.2f} s after the response; {after} messages published after it")
    assert took < 30  # no heartbeat carried it
    assert 0 <= after <= workers * chunk * 2  # at most 2 tokens a member
    assert set(got) == world.trace_ids(range(1, checkpoint + 1))  # all committed, no more
