"""The job repository's contract, run against both implementations: MariaDB's and the one
in memory keep the same rules (launch refusals, restarts, stop and abandon, the lease,
the chunk commit), so the engine's unit tests on the memory one hold for the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from app.model import (
    INTERRUPTED,
    AlreadyComplete,
    AlreadyRunning,
    AutomaticLaunch,
    ChunkCounts,
    JobParameter,
    RestartLimitReached,
    Status,
    Superseded,
)
from app.ports import JobRepository
from app.repository.mariadb import MariaDbJobRepository
from app.repository.memory import ManualClock, MemoryJobRepository
from app.repository.rules import AlreadyCommitted, LeaseLost

JOB = "couponUsageStatsJob"
STEP = "couponUsageStatsStep"
ABANDON_AFTER = 120


def day(value: str) -> list[JobParameter]:
    return [JobParameter("runDate", "java.time.LocalDate", value)]


PARAMS = day("2025-10-31")


@dataclass
class Subject:
    repository: JobRepository
    # Let `seconds` pass without a sign of life from any execution.
    silence: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["mariadb", "memory"])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "memory":
        clock = ManualClock()

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        return Subject(
            MemoryJobRepository(abandon_after_seconds=ABANDON_AFTER, clock=clock), advance
        )
    pool = request.getfixturevalue("pool")

    async def age(seconds: float) -> None:
        async with pool.acquire() as conn, conn.cursor() as cur:
            for table in ("BATCH_JOB_EXECUTION", "BATCH_STEP_EXECUTION"):
                await cur.execute(
                    f"UPDATE {table} SET LAST_UPDATED = LAST_UPDATED - INTERVAL %s SECOND",
                    (seconds,),
                )

    return Subject(MariaDbJobRepository(pool, abandon_after_seconds=ABANDON_AFTER), age)


async def commit(
    repository: JobRepository, step_id: int, checkpoint: object, commits_before: int
) -> Status:
    async with repository.chunk_transaction() as unit:
        return await unit.commit_chunk(
            step_id, ChunkCounts(3, 2, 1, 0), {"checkpoint": checkpoint}, commits_before
        )


# Launch refusals


async def test_a_live_execution_refuses_a_second_launch(subject: Subject) -> None:
    repository = subject.repository
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=True)
    assert (first.status, first.parameters, first.exit_code) == (
        Status.STARTED,
        {"runDate": "2025-10-31"},
        "UNKNOWN",
    )
    with pytest.raises(AlreadyRunning) as refused:
        await repository.start_execution(JOB, PARAMS, rerun_completed=True)
    assert refused.value.execution_id == first.id
    assert str(refused.value) == f"{JOB} is already running as execution {first.id}"
    other = await repository.start_execution(JOB, day("2025-10-30"), rerun_completed=False)
    assert other.instance_id != first.instance_id


async def test_a_completed_instance_runs_again_only_on_a_rerun(subject: Subject) -> None:
    repository = subject.repository
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await repository.finish_execution(first.id, Status.COMPLETED)
    with pytest.raises(AlreadyComplete) as refused:
        await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    assert (refused.value.execution_id, str(refused.value)) == (
        first.id,
        f"{JOB} already completed as execution {first.id}",
    )
    again = await repository.start_execution(JOB, PARAMS, rerun_completed=True)
    assert (again.instance_id, again.id > first.id) == (first.instance_id, True)
    assert (await repository.start_step(again, STEP)).checkpoint is None


# Restarts


async def test_a_failed_run_restarts_from_its_checkpoint(subject: Subject) -> None:
    repository = subject.repository
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, STEP)
    assert await commit(repository, step.id, 4242, 0) == Status.STARTED
    await repository.finish_step(step.id, Status.FAILED, "boom")
    await repository.finish_execution(first.id, Status.FAILED, "boom")
    found = await repository.get_execution(first.id)
    assert found is not None
    [recorded] = found.steps
    assert (recorded.read_count, recorded.write_count, recorded.filter_count) == (3, 2, 1)
    assert (recorded.commit_count, recorded.status, recorded.exit_message) == (1, "FAILED", "boom")
    second = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    assert (await repository.start_step(second, STEP)).checkpoint == 4242
    assert (await repository.last_execution(first.instance_id)).id == second.id


async def test_an_abandoned_run_is_never_resumed(subject: Subject) -> None:
    repository = subject.repository
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, STEP)
    await commit(repository, step.id, 17, 0)
    await repository.finish_step(step.id, Status.FAILED)
    await repository.finish_execution(first.id, Status.FAILED)
    assert await repository.abandon(first.id) == Status.FAILED
    second = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    assert (await repository.start_step(second, STEP)).checkpoint is None


async def test_automatic_launches_stop_at_their_bound(subject: Subject) -> None:
    """The interrupted executions are not counted."""
    repository = subject.repository
    latest = None
    for exit_code in ("FAILED", INTERRUPTED, "FAILED", "FAILED"):
        execution = await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(latest, 3)
        )
        await repository.finish_execution(execution.id, Status.FAILED, "boom", exit_code)
        latest = execution.id
    with pytest.raises(RestartLimitReached) as refused:
        await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(latest, 3)
        )
    assert (refused.value.execution_id, str(refused.value)) == (
        latest,
        f"{JOB} has run 3 executions of this instance already (at most 3 automatically);"
        " not restarted",
    )
    summary = await repository.instance_summary(JOB, PARAMS)
    assert summary is not None
    assert (summary.latest, summary.status, summary.counted) == (latest, Status.FAILED, 3)


async def test_an_automatic_launch_decided_from_an_older_read_is_superseded(
    subject: Subject,
) -> None:
    repository = subject.repository
    first = await repository.start_execution(
        JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(None, 4)
    )
    await repository.finish_execution(first.id, Status.FAILED, "boom")
    with pytest.raises(Superseded) as late:
        await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(None, 4)
        )
    assert str(late.value) == (
        f"{JOB}: the instance changed since the automatic launch was decided (its latest"
        f" execution: execution {first.id} is FAILED)"
    )
    assert await repository.stop_failed(first.id)
    with pytest.raises(Superseded):
        await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(first.id, 4)
        )
    assert await repository.executions_since(first.id) == [(first.id, Status.STOPPED)]


# Stop and abandon


async def test_stop_and_abandon_change_only_the_statuses_they_take(subject: Subject) -> None:
    repository = subject.repository
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    assert await repository.abandon(execution.id) == Status.STARTED  # not abandonable
    assert await repository.request_stop(execution.id) == Status.STARTED
    assert await repository.request_stop(execution.id) == Status.STOPPING
    assert await repository.heartbeat(execution.id) == Status.STOPPING
    assert await repository.abandon(execution.id) == Status.STOPPING
    assert await repository.request_stop(execution.id) == Status.ABANDONED
    found = await repository.get_execution(execution.id)
    assert found is not None
    assert (found.status, found.exit_code, found.end_time is not None) == (
        Status.ABANDONED,
        "UNKNOWN",
        True,
    )
    assert await repository.request_stop(999_999) is None
    assert await repository.abandon(999_999) is None


async def test_a_stop_of_a_failed_run_takes_only_the_latest(subject: Subject) -> None:
    repository = subject.repository
    older = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await repository.finish_execution(older.id, Status.FAILED, "first")
    latest = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(latest, STEP)
    await repository.finish_step(step.id, Status.FAILED, "cut", INTERRUPTED)
    await repository.finish_execution(latest.id, Status.FAILED, "cut", INTERRUPTED)
    assert not await repository.stop_failed(older.id)
    assert await repository.stop_failed(latest.id)
    assert not await repository.stop_failed(latest.id)
    message = (
        "stopped on request after it ended INTERRUPTED: cut; restartable from the"
        " checkpoint, never automatically"
    )
    found = await repository.get_execution(latest.id)
    assert found is not None
    assert (found.status, found.exit_code, found.exit_message) == ("STOPPED", "STOPPED", message)
    assert [(s.status, s.exit_message) for s in found.steps] == [("STOPPED", message)]
    assert await repository.executions_since(older.id) == [
        (older.id, Status.FAILED),
        (latest.id, Status.STOPPED),
    ]


async def test_a_queued_execution_asked_to_stop_never_starts(subject: Subject) -> None:
    repository = subject.repository
    queued = await repository.start_execution(JOB, PARAMS, rerun_completed=False, queued=True)
    assert (queued.status, queued.start_time) == (Status.STARTING, None)
    other = await repository.start_execution(
        JOB, day("2025-10-30"), rerun_completed=False, queued=True
    )
    assert await repository.request_stop(queued.id) == Status.STARTING
    assert not await repository.mark_started(queued.id)
    assert await repository.mark_started(other.id)
    started = await repository.get_execution(other.id)
    assert started is not None
    assert (started.status, started.start_time is not None) == (Status.STARTED, True)


async def test_an_interrupted_run_ends_failed_unless_a_stop_came_first(subject: Subject) -> None:
    repository = subject.repository
    runs = []
    for value in ("2025-10-30", "2025-10-31"):
        execution = await repository.start_execution(JOB, day(value), rerun_completed=False)
        runs.append((execution, await repository.start_step(execution, STEP)))
    (cut, cut_step), (asked, asked_step) = runs
    await repository.request_stop(asked.id)
    assert await repository.finish_interrupted(cut.id, cut_step.id, "cut", "stopped") == "FAILED"
    assert await repository.finish_interrupted(asked.id, asked_step.id, "cut", "stopped") == (
        "STOPPED"
    )
    for execution, expected in (
        (cut, ("FAILED", INTERRUPTED, "cut")),
        (asked, ("STOPPED", "STOPPED", "stopped")),
    ):
        found = await repository.get_execution(execution.id)
        assert found is not None
        assert (found.status, found.exit_code, found.exit_message) == expected
        assert [(s.status, s.exit_message) for s in found.steps] == [(expected[0], expected[2])]
    assert await repository.finish_interrupted(cut.id, cut_step.id, "again", "again") is None


# The lease


async def test_a_silent_execution_is_taken_over_by_the_next_launch(subject: Subject) -> None:
    repository = subject.repository
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, STEP)
    await commit(repository, step.id, 17, 0)
    await subject.silence(100)
    with pytest.raises(AlreadyRunning):  # within the lease
        await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await subject.silence(21)
    second = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    taken = await repository.get_execution(first.id)
    assert taken is not None
    message = "abandoned: no heartbeat for 121 s (JOB_ABANDON_AFTER_SECONDS=120)"
    assert (taken.status, taken.exit_code, taken.exit_message) == ("FAILED", "FAILED", message)
    assert [s.status for s in taken.steps] == ["FAILED"]
    assert (await repository.start_step(second, STEP)).checkpoint == 17


async def test_a_heartbeat_renews_the_lease(subject: Subject) -> None:
    repository = subject.repository
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await subject.silence(121)
    assert await repository.heartbeat(execution.id) == Status.STARTED
    assert await repository.expired_executions() == []
    assert await repository.take_over(execution.id) is None


async def test_expired_executions_are_taken_over_once(subject: Subject) -> None:
    """A STOPPING one ends STOPPED, the stop it was asked for; a second taker finds none."""
    repository = subject.repository
    started = await repository.start_execution(JOB, day("2025-10-29"), rerun_completed=False)
    stopping = await repository.start_execution(JOB, day("2025-10-30"), rerun_completed=False)
    await repository.request_stop(stopping.id)
    await subject.silence(121)
    live = await repository.start_execution(JOB, day("2025-10-31"), rerun_completed=False)
    expired = await repository.expired_executions()
    assert [e.id for e in expired] == [stopping.id, started.id]
    assert await repository.take_over(started.id, "a note") == Status.FAILED
    assert await repository.take_over(started.id, "a note") is None
    assert await repository.take_over(stopping.id) == Status.STOPPED
    assert await repository.take_over(live.id) is None
    found = await repository.get_execution(stopping.id)
    assert found is not None
    assert found.exit_message == (
        "stopped on request, its runner gone: no heartbeat for 121 s"
        " (JOB_ABANDON_AFTER_SECONDS=120)"
    )
    assert await repository.expired_executions() == []


# The chunk commit


async def test_a_chunk_commits_once(subject: Subject) -> None:
    repository = subject.repository
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(execution, STEP)
    assert await commit(repository, step.id, 1, 0) == Status.STARTED
    with pytest.raises(AlreadyCommitted, match=f"step execution {step.id}: commit 1 exists"):
        await commit(repository, step.id, 1, 0)
    assert await repository.request_stop(execution.id) == Status.STARTED
    assert await commit(repository, step.id, 2, 1) == Status.STOPPING
    found = await repository.get_execution(execution.id)
    assert found is not None
    assert [(s.read_count, s.commit_count, s.checkpoint) for s in found.steps] == [(6, 2, 2)]


async def test_a_commit_after_an_abandon_or_a_takeover_is_fenced(subject: Subject) -> None:
    repository = subject.repository
    abandoned = await repository.start_execution(JOB, day("2025-10-30"), rerun_completed=False)
    step = await repository.start_step(abandoned, STEP)
    await repository.request_stop(abandoned.id)
    await repository.abandon(abandoned.id)
    with pytest.raises(LeaseLost, match="its job execution is ABANDONED"):
        await commit(repository, step.id, 1, 0)
    taken = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    taken_step = await repository.start_step(taken, STEP)
    await subject.silence(121)
    assert await repository.take_over(taken.id) == Status.FAILED
    with pytest.raises(LeaseLost, match="is no longer STARTED here"):
        await commit(repository, taken_step.id, 1, 0)
    found = await repository.get_execution(abandoned.id)
    assert found is not None
    assert [(s.status, s.commit_count) for s in found.steps] == [("STARTED", 0)]
