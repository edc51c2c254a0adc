"""Unattended means unattended (issue 26): every automatic decision is a rule over BATCH_*,
taken by whichever `serve` replica runs the schedules. A deploy's SIGTERM is resumed, a
restart promised during a backoff survives its replica, ABANDONED is final, a stop holds
across owners, and replicas agree on APP_TIMEZONE. Two or three `serve` processes each,
over fake peers whose latency stretches a run."""

from __future__ import annotations

import json
import signal
import time
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.model import Status
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.automation import last_due
from app.runtime.job import find_job
from tests.integration.test_daemon_serve import Daemon, admin_headers, serve
from tests.reliability.support import FanoutWorld, drain, fanout_world, trace_ids_of, until
from tests.waits import waiting

pytestmark = pytest.mark.slow

FANOUT = find_job(JOBS, "coupon-usage-stats-fcm-send")
STATS = find_job(JOBS, "coupon-usage-stats")
ABANDON_SECONDS = 6
IN_FLIGHT = 200  # members a runner may have published but not committed: 2 chunks of 100
ENV = {  # short, to keep the tests short: a dead runner's lease expires in 6 s
    "HEARTBEAT_SECONDS": "0.5",
    "JOB_ABANDON_AFTER_SECONDS": str(ABANDON_SECONDS),
    "AUTO_RESTART_BACKOFF_SECONDS": "1",
    "CHUNK_SIZE": "100",
    "ENRICH_WORKERS": "1",
    "SHUTDOWN_GRACE_SECONDS": "20",
    "FANOUT_MISFIRE_GRACE_MINUTES": "60",  # the hour's run whenever the test runs in it
}


async def hour_world(pool: Pool, settings: Settings, members: int) -> FanoutWorld:
    """A fan-out world of the current hour in APP_TIMEZONE: what the schedules launch."""
    now = datetime.now(settings.timezone)
    world = fanout_world(members, now.date().isoformat(), now.hour)
    await world.load(pool)
    return world


Row = tuple[int, str, str, str]  # id, status, exit code, exit message


async def runs_of(pool: Pool, world: FanoutWorld) -> list[Row]:
    """The executions of the world's fan-out instance (its date and hour), oldest first."""
    day, hour = next(iter(world.stats_rows))[3], next(iter(world.stats_rows))[2]
    rows = await fetch_all(
        pool,
        "SELECT e.JOB_EXECUTION_ID, e.STATUS, e.EXIT_CODE, e.EXIT_MESSAGE"
        " FROM BATCH_JOB_EXECUTION e"
        " JOIN BATCH_JOB_EXECUTION_PARAMS d ON d.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
        " AND d.PARAMETER_NAME = 'runDate' AND d.PARAMETER_VALUE = %s"
        " JOIN BATCH_JOB_EXECUTION_PARAMS h ON h.JOB_EXECUTION_ID = e.JOB_EXECUTION_ID"
        " AND h.PARAMETER_NAME = 'targetHour' AND h.PARAMETER_VALUE = %s"
        " ORDER BY e.JOB_EXECUTION_ID",
        (day, str(hour)),
    )
    return [(int(i), str(s), str(c), str(m)) for i, s, c, m in rows]


async def committed(pool: Pool, execution_id: int) -> int:
    [(commits,)] = await fetch_all(
        pool,
        "SELECT COALESCE(SUM(COMMIT_COUNT), 0) FROM BATCH_STEP_EXECUTION"
        " WHERE JOB_EXECUTION_ID = %s",
        (execution_id,),
    )
    return int(commits)


async def first_run(pool: Pool, world: FanoutWorld, *daemons: Daemon) -> int:
    """The id of the instance's first execution once it has committed a chunk."""

    async def check() -> int | None:
        for daemon in daemons:
            assert daemon.process.returncode is None, daemon.log_text()
        runs = await runs_of(pool, world)
        return runs[0][0] if runs and await committed(pool, runs[0][0]) else None

    return int(await until(check, within=60, every=0.1, what="the fan-out's first commit"))


def runner_of(execution_id: int, *daemons: Daemon) -> tuple[Daemon, list[Daemon]]:
    """The replica that launched the execution, and the others."""
    said = f"job launched: job={FANOUT.name} execution={execution_id} "
    [runner] = [d for d in daemons if said in d.log_text()]
    return runner, [d for d in daemons if d is not runner]


async def until_ended(pool: Pool, world: FanoutWorld, status: str, *alive: Daemon) -> list[Row]:
    """Until the instance's latest execution is `status`, `alive` living meanwhile."""

    async def check() -> list[Row] | None:
        for daemon in alive:
            assert daemon.process.returncode is None, daemon.log_text()
        runs = await runs_of(pool, world)
        return runs if runs and runs[-1][1] == status else None

    found: list[Row] = await until(check, within=180, every=0.2, what=f"the run {status}")
    return found


async def kill(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    async with waiting(30, "the killed daemon's exit"):
        assert await daemon.process.wait() == -signal.SIGKILL


async def started(
    stack: AsyncExitStack,
    settings: Settings,
    fake: FakePeers,
    queue: str,
    folder: Path,
    names: str,
    **env: str,
) -> list[Daemon]:
    """A `serve` per letter of `names`, one after the other, each healthy."""
    return [
        await stack.enter_async_context(
            serve(settings, fake, queue, folder / f"{name}.log", **{**ENV, **env})
        )
        for name in names
    ]


async def test_sigterm_to_the_runner_with_a_second_replica_alive_delivers_every_trace_id(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """A rolling deploy: the runner's SIGTERM ends its run FAILED, INTERRUPTED (not an
    operator's STOPPED); the other replica's next pass resumes it from its checkpoint, at
    once, with no hand. Before: STOPPED, and the rest never sent."""
    world = await hour_world(pool, settings, 3000)
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(run_fake_peers(world.peers))
        fake.control.latency_ms = 1000  # the run lasts until both replicas serve
        daemons = await started(stack, settings, fake, queue, tmp_path, "ab")
        first = await first_run(pool, world, *daemons)
        runner, [survivor] = runner_of(first, *daemons)
        assert await runner.stop() == 0  # SIGTERM: its chunks in flight, then it exits
        fake.control.latency_ms = 0
        [cut, *_] = await runs_of(pool, world)
        assert cut[:3] == (first, "FAILED", "INTERRUPTED")
        resumed = time.monotonic()
        runs = await until_ended(pool, world, "COMPLETED", survivor)
        print(f"\nresumed and COMPLETED {time.monotonic() - resumed:.1f} s after the SIGTERM")
    assert [status for _, status, _, _ in runs] == ["FAILED", "COMPLETED"]
    assert cut[3] == (
        "interrupted by a shutdown; the schedules' next pass resumes it from its checkpoint"
    )
    assert f"execution {first} was interrupted by a shutdown" in survivor.log_text()
    got = await drain(queue, within=60)
    assert set(trace_ids_of(got)) == world.trace_ids()


async def test_the_runner_killed_during_its_backoff_is_restarted_by_another_replica(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """The run FAILED (the notification service answering 503 past the retry budget); its
    replica is killed during the 5 s backoff. The other replica restarts it once the
    backoff is over, by the database clock. Before: the promise lived in the dead
    replica's memory, and the run stayed FAILED."""
    world = await hour_world(pool, settings, 1000)
    env = {"AUTO_RESTART_BACKOFF_SECONDS": "5", "RETRY_BUDGET_SECONDS": "0.5"}
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(run_fake_peers(world.peers))
        fake.control.latency_ms = 500  # running while both replicas start
        daemons = await started(stack, settings, fake, queue, tmp_path, "ab", **env)
        first = await first_run(pool, world, *daemons)
        fake.control.update({"fail_status": 503, "fail_times": -1, "latency_ms": 0})
        [(failed, _, _, message)] = await until_ended(pool, world, "FAILED", *daemons)
        runner, [survivor] = runner_of(first, *daemons)
        [(since_end,)] = await fetch_all(
            pool,
            "SELECT TIMESTAMPDIFF(MICROSECOND, END_TIME, NOW(6)) / 1e6 FROM BATCH_JOB_EXECUTION"
            " WHERE JOB_EXECUTION_ID = %s",
            (failed,),
        )
        await kill(runner)
        assert since_end < 5, f"killed {since_end} s after the end: not during the backoff"
        fake.control.update({"fail_status": None})
        runs = await until_ended(pool, world, "COMPLETED", survivor)
    assert failed == first and "503" in message, message
    assert [s for _, s, _, _ in runs] == ["FAILED", "COMPLETED"]
    [(waited,)] = await fetch_all(
        pool,
        "SELECT TIMESTAMPDIFF(MICROSECOND, f.END_TIME, r.START_TIME) / 1e6"
        " FROM BATCH_JOB_EXECUTION f, BATCH_JOB_EXECUTION r"
        " WHERE f.JOB_EXECUTION_ID = %s AND r.JOB_EXECUTION_ID = %s",
        (failed, runs[1][0]),
    )
    assert waited >= 5, waited  # the backoff, from END_TIME
    got = await drain(queue, within=60)
    assert set(trace_ids_of(got)) == world.trace_ids()


async def test_an_abandoned_instance_is_never_relaunched_by_the_catch_up(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """Last night's stats instance, FAILED then ABANDONED by an operator: a `serve` starting
    says so and never runs it again (only an operator's launch starts it over). Before:
    the catch-up ran it again from scratch."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=ABANDON_SECONDS)
    now = datetime.now(settings.timezone)
    night = last_due(STATS.schedule.cron if STATS.schedule else "", now)
    parameters = STATS.parse({"runDate": (night.date() - timedelta(days=1)).isoformat()}, now)
    execution = await repository.start_execution(STATS.name, parameters, rerun_completed=False)
    await repository.finish_execution(execution.id, Status.FAILED, "the store service was down")
    assert await repository.abandon(execution.id) == Status.FAILED
    async with (
        run_fake_peers({"stores": {}, "tokens": {}}) as fake,
        serve(settings, fake, queue, tmp_path / "serve.log", **ENV) as daemon,
    ):

        async def instance_rows() -> list[tuple]:
            rows = await fetch_all(
                pool,
                "SELECT JOB_EXECUTION_ID, STATUS FROM BATCH_JOB_EXECUTION"
                " WHERE JOB_INSTANCE_ID = %s",
                (execution.instance_id,),
            )
            return [tuple(row) for row in rows]

        async def said() -> bool:
            assert daemon.process.returncode is None, daemon.log_text()
            assert await instance_rows() == [(execution.id, "ABANDONED")]  # never relaunched
            return "is ABANDONED, final for the automatic launches" in daemon.log_text()

        await until(said, within=30, what="the pass's word on the abandoned instance")
    assert await instance_rows() == [(execution.id, "ABANDONED")]


async def successor_started(pool: Pool, world: FanoutWorld, survivor: Daemon) -> bool:
    """Whether the dead runner's execution was taken over and its successor runs."""
    assert survivor.process.returncode is None, survivor.log_text()
    return [s for _, s, _, _ in await runs_of(pool, world)] == ["FAILED", "STARTED"]


@pytest.mark.parametrize("takeover", [False, True], ids=["before_takeover", "after_takeover"])
async def test_a_stop_holds_across_a_takeover(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path, takeover: bool
) -> None:
    """The runner is killed; an operator stops its execution through the other replica.
    At once, before the takeover (lease 6 s): STOPPING, then STOPPED by the taker, never
    restarted. Once the successor runs (6 s and more after the death): the stop reaches
    the successor (202, its id), which ends STOPPED. Either way nothing is published
    past the checkpoint and no pass restarts it. Before: after the takeover, 409
    JOB_NOT_RUNNING while the successor published everything."""
    world = await hour_world(pool, settings, 3000)
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(run_fake_peers(world.peers))
        fake.control.latency_ms = 300  # a run of some 25 s
        daemons = await started(stack, settings, fake, queue, tmp_path, "ab")
        first = await first_run(pool, world, *daemons)
        runner, [survivor] = runner_of(first, *daemons)
        await kill(runner)
        dead = time.monotonic()
        if takeover:  # the operator's stop comes once the successor runs
            await until(
                lambda: successor_started(pool, world, survivor),
                within=60,
                every=0.1,
                what="the successor of the killed runner's execution STARTED",
            )
        runs = await runs_of(pool, world)
        if not takeover:
            assert runs == [(first, "STARTED", "UNKNOWN", "")]  # before the takeover
        else:
            assert [s for _, s, _, _ in runs] == ["FAILED", "STARTED"]  # the successor runs
        async with (
            aiohttp.ClientSession(survivor.url, headers=admin_headers()) as http,
            http.post(f"/api/v1/jobs/executions/{first}/stop") as resp,
        ):
            body = await resp.json()
            assert resp.status == 202, body
        print(f"\nstop {time.monotonic() - dead:.1f} s after the death: {json.dumps(body)}")
        target = runs[-1][0]
        assert (body["executionId"], body["status"]) == (target, "STOPPING")
        assert resp.headers["Location"] == f"/api/v1/jobs/executions/{target}"
        stopped = await until_ended(pool, world, "STOPPED", survivor)

        async def passed_over() -> bool:  # the pass has read it and left it
            return f"execution {target} was STOPPED by an operator" in survivor.log_text()

        await until(passed_over, within=30, what="a pass over the stopped instance")
    assert [s for _, s, _, _ in stopped] == (["FAILED", "STOPPED"] if takeover else ["STOPPED"])
    final = await MariaDbJobRepository(pool, abandon_after_seconds=ABANDON_SECONDS).get_execution(
        target
    )
    assert final is not None
    checkpoint = final.steps[0].checkpoint
    assert checkpoint < world.members - IN_FLIGHT  # stopped well before the end
    got = set(trace_ids_of(await drain(queue, within=60)))
    # every member up to the checkpoint; past it, only what the killed runner had in flight
    assert world.trace_ids(range(1, checkpoint + 1)) <= got
    assert got <= world.trace_ids(range(1, checkpoint + IN_FLIGHT + 1))


async def gauge(daemon: Daemon) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{daemon.url}/actuator/prometheus") as resp,
    ):
        text = await resp.text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("batch_scheduler_enabled")]
    return float(line.rsplit(" ", 1)[1])


async def test_a_replica_in_another_zone_runs_no_schedules(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """A Seoul replica runs the schedules; a UTC one starting beside it logs an ERROR naming
    both zones and launches nothing (its hour's fan-out would push at the wrong hour).
    Once the Seoul replica has stopped, the UTC one runs them (a change of zone rolled out).
    Before: each ran the schedules of its own zone."""
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(run_fake_peers({"stores": {}, "tokens": {}}))
        [seoul] = await started(stack, settings, fake, queue, tmp_path, "s")

        async def seoul_runs() -> bool:
            return await gauge(seoul) == 1

        await until(seoul_runs, within=30, what="the Seoul replica running the schedules")
        [utc] = await started(stack, settings, fake, queue, tmp_path, "u", APP_TIMEZONE="UTC")

        async def refused() -> bool:
            return "APP_TIMEZONE is UTC, but the replicas already running" in utc.log_text()

        await until(refused, within=30, what="the UTC replica's ERROR")
        assert await gauge(utc) == 0
        assert "Asia/Seoul" in next(
            line for line in utc.log_text().splitlines() if "APP_TIMEZONE is UTC" in line
        )
        assert await seoul.stop() == 0
        [(seoul_seen,)] = await fetch_all(  # its last renewal: the row outlives the process
            pool,
            "SELECT last_seen FROM batch_service_replicas WHERE name LIKE %s",
            (f"%:{seoul.process.pid}",),
        )

        async def utc_took_them() -> datetime | None:
            """The UTC row's last_seen once it says it runs the schedules: the renewal
            that took them up (polled more often than the 0.5 s renewals)."""
            rows = await fetch_all(
                pool,
                "SELECT last_seen FROM batch_service_replicas"
                " WHERE app_timezone = 'UTC' AND runs_schedules",
            )
            return rows[0][0] if rows else None

        taken = await until(utc_took_them, within=30, what="the UTC replica's row running them")

        async def utc_runs() -> bool:
            return "this replica runs the schedules now, in UTC" in utc.log_text()

        await until(utc_runs, within=30, what="the UTC replica taking the schedules up")
        assert await gauge(utc) == 1
        # not before the stopped replica's row expired (a restart would have come back), by
        # the database's clock: the test's own clock at the exit is later than the last
        # renewal by however long the shutdown took (3.9 s after the exit, under load)
        assert (taken - seoul_seen).total_seconds() >= ABANDON_SECONDS, (seoul_seen, taken)
    log = (tmp_path / "u.log").read_text(encoding="utf-8")
    before = log.split("this replica runs the schedules now")[0]
    assert "job launched" not in before  # nothing while the Seoul replica ran them


async def test_a_rolling_restart_keeps_the_schedules_in_their_zone(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    """The Seoul replica that runs the schedules is restarted (a rolling deploy) beside a
    UTC one: its row counts until its lease expires, so the UTC replica never takes the
    schedules up in the moment between the stop and the next start. Before: it took them
    up at its next pass, and pushed the hour's fan-out at the wrong hour."""
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(run_fake_peers({"stores": {}, "tokens": {}}))
        [seoul] = await started(stack, settings, fake, queue, tmp_path, "s")

        async def seoul_runs() -> bool:
            return await gauge(seoul) == 1

        await until(seoul_runs, within=30, what="the Seoul replica running the schedules")
        # its row says so as soon as it runs them, not at its next pass (CI stopped it first)
        [(says,)] = await fetch_all(
            pool,
            "SELECT runs_schedules FROM batch_service_replicas WHERE name LIKE %s",
            (f"%:{seoul.process.pid}",),
        )
        assert says == 1
        [utc] = await started(stack, settings, fake, queue, tmp_path, "u", APP_TIMEZONE="UTC")

        async def refused() -> bool:
            return "APP_TIMEZONE is UTC, but the replicas already running" in utc.log_text()

        await until(refused, within=30, what="the UTC replica's ERROR")
        assert await seoul.stop() == 0
        [again] = await started(stack, settings, fake, queue, tmp_path, "t")

        async def again_runs() -> bool:
            return await gauge(again) == 1

        await until(again_runs, within=30, what="the restarted Seoul replica running them")

        async def expired() -> bool:
            [(live,)] = await fetch_all(
                pool,
                "SELECT COUNT(*) FROM batch_service_replicas WHERE name LIKE %s"
                " AND last_seen >= UTC_TIMESTAMP(6) - INTERVAL %s SECOND",
                (f"%:{seoul.process.pid}", ABANDON_SECONDS),
            )
            return live == 0

        await until(expired, within=30, what="the stopped replica's row out of its lease")
        [(mark,)] = await fetch_all(pool, "SELECT UTC_TIMESTAMP(6)")

        async def utc_passed() -> bool:
            [(seen,)] = await fetch_all(
                pool,
                "SELECT COUNT(*) FROM batch_service_replicas"
                " WHERE app_timezone = 'UTC' AND last_seen > %s",
                (mark,),
            )
            return seen > 0

        await until(utc_passed, within=30, what="a pass of the UTC replica after that")
        assert "runs the schedules now" not in utc.log_text()
        assert await gauge(utc) == 0
        assert await gauge(again) == 1
