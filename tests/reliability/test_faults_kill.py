"""Fault 1: `python -m app run` killed with SIGKILL at a chosen chunk of each job, then
run again: the dead execution is marked abandoned once its heartbeat is old, the new one
resumes from the checkpoint, and nothing is lost."""

from __future__ import annotations

import functools
import signal
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.model import AlreadyRunning, JobExecution
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.job import find_job
from tests.integration.test_usage_stats_job import job_settings, run_job, stats
from tests.reliability.support import (
    FANOUT_HOUR,
    FANOUT_PARAMETERS,
    FANOUT_RUN_DATE,
    STATS_RUN_DATE,
    CliProcess,
    cli,
    cli_environment,
    drain,
    fanout_world,
    heartbeat_age,
    stats_world,
    step_row,
    trace_ids_of,
    until,
)

pytestmark = pytest.mark.slow

CHUNK = 25
KILL_AT_COMMIT = 5
ABANDON_SECONDS = 2
RUN_ENV = {
    "CHUNK_SIZE": CHUNK,
    "ENRICH_WORKERS": 2,
    "QUEUE_SIZE": 2,
    "HEARTBEAT_SECONDS": 0.5,
    "JOB_ABANDON_AFTER_SECONDS": ABANDON_SECONDS,
}


async def _committed(pool: Pool, run: CliProcess, commits: int) -> dict | None:
    assert run.process.returncode is None, f"the run ended early:\n{run.log_text()}"
    step = await step_row(pool)
    return step if step is not None and step["commits"] >= commits else None


async def kill_after_commits(
    pool: Pool, run: CliProcess, commits: int, job: str, parameters: dict[str, str]
) -> JobExecution:
    """SIGKILL `run` once `commits` chunks are committed; its execution as left behind."""
    check = functools.partial(_committed, pool, run, commits)
    step = await until(check, within=60, what=f"{commits} commits")
    assert await run.kill() == -signal.SIGKILL
    repository = MariaDbJobRepository(pool, abandon_after_seconds=ABANDON_SECONDS)
    killed = await repository.get_execution(step["execution"])
    assert killed is not None
    # Nobody recorded an end: it looks running until its heartbeat is old.
    assert killed.status == "STARTED"
    assert killed.steps[0].status == "STARTED"
    assert killed.steps[0].commit_count >= commits
    # Its heartbeat is recent: a launch now is refused, as if it still ran.
    spec = find_job(JOBS, job)
    with pytest.raises(AlreadyRunning):
        await repository.start_execution(
            spec.name, spec.parse(parameters, datetime.now()), rerun_completed=False
        )
    return killed


async def until_abandoned(pool: Pool, execution_id: int) -> None:
    async def old() -> bool:
        return await heartbeat_age(pool, execution_id) > ABANDON_SECONDS + 0.3

    await until(old, within=30, every=0.1, what="an old heartbeat")


def assert_abandoned_then_completed(executions: list[JobExecution], killed: JobExecution) -> None:
    resumed, abandoned = executions
    assert abandoned.id == killed.id
    assert abandoned.status == "FAILED"
    assert abandoned.exit_message.startswith("abandoned: no heartbeat for ")
    assert abandoned.exit_message.endswith(f"(JOB_ABANDON_AFTER_SECONDS={ABANDON_SECONDS})")
    assert abandoned.steps[0].status == "FAILED"
    assert resumed.instance_id == abandoned.instance_id
    assert resumed.status == "COMPLETED", resumed.exit_message


async def test_sigkill_during_the_stats_job_then_a_restart_gives_the_uninterrupted_table(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    world = stats_world(1500)
    await world.load(pool)
    repository = MariaDbJobRepository(pool, abandon_after_seconds=ABANDON_SECONDS)
    args = ["run", "coupon-usage-stats", "--run-date", STATS_RUN_DATE, "--quiet"]
    async with run_fake_peers(world.peer_data()) as fake:
        fake.control.latency_ms = 40  # each chunk looks its 25 stores up: ~60 chunks, ~1.5 s
        env = cli_environment(
            settings,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
            **RUN_ENV,
        )
        async with cli(args, env, tmp_path / "killed.log") as first:
            killed = await kill_after_commits(
                pool, first, KILL_AT_COMMIT, "coupon-usage-stats", {"runDate": STATS_RUN_DATE}
            )
        (step,) = killed.steps
        checkpoint = step.checkpoint
        # A chunk ends at its CHUNK-th member with 5 uses or more (every 7th has 4)
        uses = Counter(member for member, _, _ in world.histories)
        candidates = [m for m in range(1, world.members + 1) if uses[m] >= 5]
        assert checkpoint == candidates[CHUNK * step.commit_count - 1] < world.members
        assert step.read_count == checkpoint  # members 1..checkpoint, all of them read
        # A chunk's rows commit with its checkpoint: exactly the rows up to it are there.
        assert await stats(pool) == world.expected_upto(checkpoint)

        await until_abandoned(pool, killed.id)
        fake.control.latency_ms = 0
        async with cli(args, env, tmp_path / "restarted.log") as second:
            assert await second.wait() == 0, second.log_text()
        assert f"checkpoint={checkpoint}" in second.log_text()
        executions = await repository.list_executions("couponUsageStatsJob")
        assert_abandoned_then_completed(executions, killed)
        resumed = executions[0].steps[0]
        assert resumed.read_count == world.members - checkpoint
        assert resumed.write_count == len(world.expected) - len(world.expected_upto(checkpoint))
        assert await stats(pool) == world.expected

        # The same table as an uninterrupted run of the same parameters.
        uninterrupted = await run_job(job_settings(settings, fake, **RUN_ENV), rerun=True)
    assert uninterrupted.status == "COMPLETED", uninterrupted.exit_message
    assert uninterrupted.steps[0].read_count == world.members
    assert await stats(pool) == world.expected


async def test_sigkill_during_the_fanout_job_then_a_restart_delivers_every_trace_id(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    world = fanout_world(2000)
    await world.load(pool)
    repository = MariaDbJobRepository(pool, abandon_after_seconds=ABANDON_SECONDS)
    args = [
        "run", "coupon-usage-stats-fcm-send",
        "--run-date", FANOUT_RUN_DATE, "--target-hour", str(FANOUT_HOUR), "--quiet",
    ]  # fmt: skip
    async with run_fake_peers(world.peers) as fake:
        fake.control.latency_ms = 40  # a token search per chunk: ~75 chunks, ~1.5 s
        env = cli_environment(
            settings,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
            RABBITMQ_VHOST=queue,
            PUBLISH_WINDOW=50,
            **RUN_ENV,
        )
        async with cli(args, env, tmp_path / "killed.log") as first:
            killed = await kill_after_commits(
                pool, first, KILL_AT_COMMIT, "coupon-usage-stats-fcm-send", FANOUT_PARAMETERS
            )
        (step,) = killed.steps
        checkpoint = step.checkpoint
        done = [m for m in world.bodies if m <= checkpoint]  # the members read, in order
        assert step.read_count == len(done) == CHUNK * step.commit_count
        assert checkpoint == done[-1]

        await until_abandoned(pool, killed.id)
        fake.control.latency_ms = 0
        async with cli(args, env, tmp_path / "restarted.log") as second:
            assert await second.wait() == 0, second.log_text()
    assert f"checkpoint={checkpoint}" in second.log_text()
    executions = await repository.list_executions("couponUsageStatsFcmSendJob")
    assert_abandoned_then_completed(executions, killed)
    resumed = executions[0].steps[0]
    assert resumed.read_count == world.read - len(done)
    assert resumed.skip_count == 0

    got = await drain(queue)
    # Every expected trace id at least once, nothing else; the killed run's chunks in
    # flight were published again (duplicates are the consumer's to drop).
    assert set(trace_ids_of(got)) == world.trace_ids()
    assert {m.body for m in got} == world.expected_bodies()
    assert len(got) >= len(world.expected_bodies())
