"""The job repository's launch rules, against the real MariaDB."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.edges.db import fetch_all, open_pool, transaction
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
from app.repository.mariadb import MariaDbJobRepository
from app.repository.rules import AlreadyCommitted, LeaseLost
from app.spring_format import decode_context, job_key
from tests.reliability.support import age_execution

JOB = "couponUsageStatsJob"
PARAMS = [JobParameter("runDate", "java.time.LocalDate", "2025-10-31")]


def repo(pool: Pool, abandon_after: int = 120) -> MariaDbJobRepository:
    return MariaDbJobRepository(pool, abandon_after_seconds=abandon_after)


async def test_first_launch_records_instance_execution_and_parameters(pool: Pool) -> None:
    execution = await repo(pool).start_execution(JOB, PARAMS, rerun_completed=False)
    assert execution.status == Status.STARTED
    assert execution.parameters == {"runDate": "2025-10-31"}
    rows = await fetch_all(
        pool,
        "SELECT PARAMETER_NAME, PARAMETER_TYPE, PARAMETER_VALUE, IDENTIFYING"
        " FROM BATCH_JOB_EXECUTION_PARAMS WHERE JOB_EXECUTION_ID = %s",
        (execution.id,),
    )
    assert rows == [("runDate", "java.time.LocalDate", "2025-10-31", "Y")]
    instances = await fetch_all(pool, "SELECT JOB_NAME, JOB_KEY FROM BATCH_JOB_INSTANCE")
    assert instances == [(JOB, job_key(PARAMS))]
    assert job_key(PARAMS) == "85e04c2961a946d5d9c8b33fd48a65ab"  # Spring Batch 5.2's


async def test_live_execution_blocks_a_second_launch(pool: Pool) -> None:
    first = await repo(pool).start_execution(JOB, PARAMS, rerun_completed=True)
    with pytest.raises(AlreadyRunning) as refused:
        await repo(pool).start_execution(JOB, PARAMS, rerun_completed=True)
    assert refused.value.execution_id == first.id


async def test_completed_instance_reruns_only_on_request(pool: Pool) -> None:
    repository = repo(pool)
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await repository.finish_execution(first.id, Status.COMPLETED)
    with pytest.raises(AlreadyComplete):
        await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    again = await repository.start_execution(JOB, PARAMS, rerun_completed=True)
    assert again.instance_id == first.instance_id and again.id > first.id


async def test_failed_execution_restarts_from_the_step_checkpoint(pool: Pool) -> None:
    repository = repo(pool)
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, "couponUsageStatsStep")
    assert step.checkpoint is None
    async with pool.acquire() as conn:
        await repository.commit_chunk(
            conn, step.id, ChunkCounts(10, 7, 2, 1), {"checkpoint": 4242}, 0
        )
    await repository.finish_step(step.id, Status.FAILED, "boom")
    await repository.finish_execution(first.id, Status.FAILED, "boom")

    second = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    resumed = await repository.start_step(second, "couponUsageStatsStep")
    assert resumed.checkpoint == 4242

    recorded = await repository.get_execution(first.id)
    assert recorded is not None
    (old_step,) = recorded.steps
    assert (old_step.read_count, old_step.write_count, old_step.filter_count) == (10, 7, 2)
    assert (old_step.skip_count, old_step.commit_count, old_step.status) == (1, 1, "FAILED")
    [(short, serialized)] = await fetch_all(
        pool,
        "SELECT SHORT_CONTEXT, SERIALIZED_CONTEXT FROM BATCH_STEP_EXECUTION_CONTEXT"
        " WHERE STEP_EXECUTION_ID = %s",
        (step.id,),
    )
    assert short.startswith("rO0AB") and serialized is None  # a Java-serialized HashMap
    # the checkpoint, and the step execution that wrote it (its owner)
    assert decode_context(short, serialized) == {
        "checkpoint": 4242,
        "checkpoint.stepExecutionId": step.id,
    }


async def test_rerun_after_completion_starts_from_scratch(pool: Pool) -> None:
    repository = repo(pool)
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, "couponUsageStatsStep")
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, step.id, ChunkCounts(1, 1, 0, 0), {"checkpoint": 99}, 0)
    await repository.finish_step(step.id, Status.COMPLETED)
    await repository.finish_execution(first.id, Status.COMPLETED)

    again = await repository.start_execution(JOB, PARAMS, rerun_completed=True)
    assert (await repository.start_step(again, "couponUsageStatsStep")).checkpoint is None


async def test_stale_heartbeat_is_abandoned_then_restarted(pool: Pool) -> None:
    repository = repo(pool, abandon_after=120)
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, "couponUsageStatsStep")
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, step.id, ChunkCounts(5, 5, 0, 0), {"checkpoint": 17}, 0)
    await age_execution(pool, first.id, 121)  # its row and its step's: no sign of life

    second = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    assert second.id != first.id
    abandoned = await repository.get_execution(first.id)
    assert abandoned is not None
    assert abandoned.status == "FAILED"
    assert abandoned.exit_message.startswith("abandoned: no heartbeat for 121 s")
    assert abandoned.steps[0].status == "FAILED"
    assert (await repository.start_step(second, "couponUsageStatsStep")).checkpoint == 17


async def test_fresh_heartbeat_is_not_abandoned(pool: Pool) -> None:
    repository = repo(pool, abandon_after=120)
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET LAST_UPDATED = NOW(6) - INTERVAL 100 SECOND"
            " WHERE JOB_EXECUTION_ID = %s",
            (first.id,),
        )
    with pytest.raises(AlreadyRunning):
        await repository.start_execution(JOB, PARAMS, rerun_completed=False)


async def test_concurrent_launches_from_separate_processes_run_exactly_one(
    pool: Pool, settings: Settings
) -> None:
    """Each launcher on its own pool, as two replicas would be; new instance and old."""
    for _ in range(2):  # first: the instance does not exist yet; then: it does
        async with open_pool(settings.database) as a, open_pool(settings.database) as b:
            results = await asyncio.gather(
                *(repo(p).start_execution(JOB, PARAMS, rerun_completed=True) for p in (a, b, a, b)),
                return_exceptions=True,
            )
        started = [r for r in results if not isinstance(r, Exception)]
        refused = [r for r in results if isinstance(r, AlreadyRunning)]
        assert len(started) == 1 and len(refused) == 3, results
        await repo(pool).finish_execution(started[0].id, Status.COMPLETED)
    rows = await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_INSTANCE")
    assert rows == [(1,)]
    rows = await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION")
    assert rows == [(2,)]


async def test_concurrent_launches_of_different_instances_all_start(pool: Pool) -> None:
    """Under REPEATABLE READ, two of these deadlocked on each other's gap locks in
    BATCH_JOB_EXECUTION (MariaDB error 1213); every launch must start."""
    days = [f"2025-10-{day:02d}" for day in range(1, 21)]
    for rerun in (False, True):  # new instances; then instances with executions
        launches = [
            repo(pool).start_execution(
                JOB, [JobParameter("runDate", "java.time.LocalDate", day)], rerun_completed=rerun
            )
            for day in days
        ]
        started = await asyncio.gather(*launches)
        for execution in started:
            await repo(pool).finish_execution(execution.id, Status.COMPLETED)
    rows = await fetch_all(
        pool, "SELECT COUNT(*), COUNT(DISTINCT JOB_INSTANCE_ID) FROM BATCH_JOB_EXECUTION"
    )
    assert rows == [(40, 20)]


async def test_a_chunk_whose_commit_applied_unseen_is_not_committed_twice(pool: Pool) -> None:
    """A COMMIT whose answer a stall swallowed may still have applied: the retry finds
    COMMIT_COUNT past what it expects, and its transaction (its writes too) rolls back."""
    repository = repo(pool)
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(execution, "couponUsageStatsStep")
    insert = (
        "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
        " VALUES (1, 'x', 1, '2025-10-31')"
    )
    for attempt in range(2):
        try:
            async with transaction(pool) as conn, conn.cursor() as cur:
                await cur.execute(insert)
                await repository.commit_chunk(
                    conn, step.id, ChunkCounts(3, 1, 2, 0), {"checkpoint": 3}, 0
                )
        except AlreadyCommitted:
            assert attempt == 1
    [(rows,)] = await fetch_all(pool, "SELECT COUNT(*) FROM coupon_usage_stats")
    assert rows == 1
    [recorded] = (await repository.get_execution(execution.id)).steps  # type: ignore[union-attr]
    assert (recorded.read_count, recorded.commit_count, recorded.checkpoint) == (3, 1, 3)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (Status.STOPPED, "stopped on request; restartable from the checkpoint"),
        (Status.FAILED, "PeerUnavailable: store service answered 503"),
    ],
)
async def test_abandon_is_written_as_spring_writes_it(
    pool: Pool, status: Status, message: str
) -> None:
    """As SimpleJobOperator.abandon (SimpleJobOperator.java:373-389): upgradeStatus(ABANDONED),
    setEndTime(now), then SimpleJobRepository.update (SimpleJobRepository.java:187-203), which
    sets LAST_UPDATED and writes the job row alone: EXIT_CODE and EXIT_MESSAGE kept, the
    step rows untouched. The instance's next launch here starts from scratch although its
    step is FAILED or STOPPED with a checkpoint of its own."""
    repository = repo(pool)
    first = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(first, "couponUsageStatsStep")
    async with pool.acquire() as conn:
        await repository.commit_chunk(conn, step.id, ChunkCounts(5, 5, 0, 0), {"checkpoint": 9}, 0)
    await repository.finish_step(step.id, status, message)
    await repository.finish_execution(first.id, status, message)
    await age_execution(pool, first.id, 3600)
    columns = "STATUS, EXIT_CODE, EXIT_MESSAGE, VERSION, TIMESTAMPDIFF(SECOND, END_TIME, NOW(6))"
    step_row = f"SELECT {columns} FROM BATCH_STEP_EXECUTION WHERE STEP_EXECUTION_ID = %s"
    [step_before] = await fetch_all(pool, step_row, (step.id,))

    assert await repository.abandon(first.id) == status
    [job_after] = await fetch_all(
        pool,
        f"SELECT {columns}, TIMESTAMPDIFF(SECOND, LAST_UPDATED, NOW(6))"
        " FROM BATCH_JOB_EXECUTION WHERE JOB_EXECUTION_ID = %s",
        (first.id,),
    )
    # ABANDONED, exit code and message kept, VERSION + 1 (0 at insert, 1 at its end), ended now
    assert job_after == ("ABANDONED", status.value, message, 2, 0, 0)
    assert await fetch_all(pool, step_row, (step.id,)) == [step_before]
    assert step_before[:2] == (status.value, status.value)

    again = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    assert (await repository.start_step(again, "couponUsageStatsStep")).checkpoint is None


async def _row(pool: Pool, execution_id: int) -> tuple:
    [row] = await fetch_all(
        pool,
        "SELECT STATUS, EXIT_CODE, EXIT_MESSAGE, END_TIME IS NOT NULL,"
        " TIMESTAMPDIFF(SECOND, LAST_UPDATED, NOW(6)) FROM BATCH_JOB_EXECUTION"
        " WHERE JOB_EXECUTION_ID = %s",
        (execution_id,),
    )
    return tuple(row)


async def test_the_expired_executions_are_taken_over_once(pool: Pool) -> None:
    """STARTED and STARTING rows without a heartbeat end FAILED (restartable), a STOPPING
    one STOPPED; a live one and a second taker are left alone."""
    repository = repo(pool, abandon_after=120)
    days = ["2025-10-27", "2025-10-28", "2025-10-29", "2025-10-30"]
    started, starting, stopping, live = [
        await repository.start_execution(
            JOB,
            [JobParameter("runDate", "java.time.LocalDate", day)],
            rerun_completed=False,
            queued=day == "2025-10-28",
        )
        for day in days
    ]
    assert await repository.request_stop(stopping.id) == Status.STARTED
    for execution in (started, starting, stopping):
        await age_execution(pool, execution.id, 121)
    expired = await repository.expired_executions()
    assert sorted(e.id for e in expired) == [started.id, starting.id, stopping.id]

    results = await asyncio.gather(
        *(repository.take_over(e.id, "a note") for e in expired for _ in range(2))
    )
    assert sorted(r for r in results if r is not None) == ["FAILED", "FAILED", "STOPPED"]
    assert results.count(None) == 3  # the second taker of each finds it taken
    message = "no heartbeat for 121 s (JOB_ABANDON_AFTER_SECONDS=120); a note"
    assert await _row(pool, started.id) == ("FAILED", "FAILED", f"abandoned: {message}", 1, 0)
    assert await _row(pool, starting.id) == ("FAILED", "FAILED", f"abandoned: {message}", 1, 0)
    assert await _row(pool, stopping.id) == (
        "STOPPED",
        "STOPPED",
        f"stopped on request, its runner gone: {message}",
        1,
        0,
    )
    assert await repository.take_over(live.id) is None
    assert (await _row(pool, live.id))[0] == "STARTED"
    assert await repository.expired_executions() == []


async def test_a_stop_keeps_the_lease_and_abandon_takes_a_stopping_execution(pool: Pool) -> None:
    """Asking a dead execution to stop does not renew it: it still expires."""
    repository = repo(pool, abandon_after=120)
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await age_execution(pool, execution.id, 121)
    assert await repository.request_stop(execution.id) == Status.STARTED
    assert await _row(pool, execution.id) == ("STOPPING", "UNKNOWN", "", 0, 121)
    assert [e.id for e in await repository.expired_executions()] == [execution.id]
    assert await repository.abandon(execution.id) == Status.STOPPING
    # Spring's abandon: the exit code kept (a running execution's UNKNOWN), ended now
    assert (await _row(pool, execution.id))[:2] == ("ABANDONED", "UNKNOWN")
    assert (await _row(pool, execution.id))[3] == 1


async def test_a_runner_s_commit_after_an_abandon_is_fenced(pool: Pool) -> None:
    """Spring's abandon leaves the step rows alone (STARTED here): the job execution's
    status fences a runner still alive, and its chunk rolls back."""
    repository = repo(pool)
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(execution, "couponUsageStatsStep")
    assert await repository.request_stop(execution.id) == Status.STARTED
    assert await repository.abandon(execution.id) == Status.STOPPING
    with pytest.raises(LeaseLost):
        async with transaction(pool) as conn:
            await repository.commit_chunk(
                conn, step.id, ChunkCounts(1, 1, 0, 0), {"checkpoint": 1}, 0
            )
    assert await fetch_all(
        pool,
        "SELECT STATUS, COMMIT_COUNT FROM BATCH_STEP_EXECUTION WHERE STEP_EXECUTION_ID = %s",
        (step.id,),
    ) == [("STARTED", 0)]


async def test_automatic_launches_stop_at_the_instance_s_execution_count(pool: Pool) -> None:
    """Counted under the instance's lock, the interrupted executions left out: a rolling
    deploy does not use the attempts up."""
    repository = repo(pool)
    latest = None
    for exit_code in ("FAILED", INTERRUPTED, "FAILED", "FAILED"):
        execution = await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(latest, 3)
        )
        status = Status.FAILED
        await repository.finish_execution(execution.id, status, "boom", exit_code)
        latest = execution.id
    with pytest.raises(RestartLimitReached) as refused:
        await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(latest, 3)
        )
    assert str(refused.value) == (
        f"{JOB} has run 3 executions of this instance already (at most 3 automatically);"
        " not restarted"
    )
    # the resume of an interrupted run is not bounded; an operator's launch is not counted
    fifth = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    [(count,)] = await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION")
    assert count == 5 and fifth.status == Status.STARTED


async def test_an_automatic_launch_decided_from_an_older_read_is_refused(pool: Pool) -> None:
    """Two replicas decide from the same read: the first launches, the second is
    Superseded, whatever became of the first's execution; and none relaunches an
    instance stopped or abandoned since its read."""
    repository = repo(pool)
    first = await repository.start_execution(
        JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(None, 4)
    )
    await repository.finish_execution(first.id, Status.FAILED, "boom")  # a quick failure
    with pytest.raises(Superseded) as late:
        await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(None, 4)
        )
    assert str(late.value) == (
        f"{JOB}: the instance changed since the automatic launch was decided (its latest"
        f" execution: execution {first.id} is FAILED)"
    )
    assert await repository.stop_failed(first.id)  # an operator's stop meanwhile
    with pytest.raises(Superseded):
        await repository.start_execution(
            JOB, PARAMS, rerun_completed=False, automatic=AutomaticLaunch(first.id, 4)
        )
    [(count,)] = await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION")
    assert count == 1


async def test_a_stop_of_a_failed_run_makes_it_the_operator_s_stopped(pool: Pool) -> None:
    """Only the instance's latest execution, only FAILED: its job and step rows become
    STOPPED, the message keeping what it had ended as."""
    repository = repo(pool)
    older = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    await repository.finish_execution(older.id, Status.FAILED, "first")
    latest = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(latest, "couponUsageStatsStep")
    await repository.finish_step(step.id, Status.FAILED, "cut", INTERRUPTED)
    await repository.finish_execution(latest.id, Status.FAILED, "cut", INTERRUPTED)
    assert not await repository.stop_failed(older.id)  # not the latest
    assert await repository.stop_failed(latest.id)
    assert not await repository.stop_failed(latest.id)  # STOPPED already
    message = (
        "stopped on request after it ended INTERRUPTED: cut; restartable from the"
        " checkpoint, never automatically"
    )
    assert (await _row(pool, latest.id))[:3] == ("STOPPED", "STOPPED", message)
    stopped = await repository.get_execution(latest.id)
    assert stopped is not None
    assert [(s.status, s.exit_message) for s in stopped.steps] == [("STOPPED", message)]
    assert await repository.executions_since(older.id) == [
        (older.id, Status.FAILED),
        (latest.id, Status.STOPPED),
    ]
    assert await repository.executions_since(latest.id) == [(latest.id, Status.STOPPED)]
    assert await repository.executions_since(999) == []


async def test_an_interrupted_run_ends_failed_unless_a_stop_came_first(pool: Pool) -> None:
    repository = repo(pool)
    runs = []
    for day in ("2025-10-30", "2025-10-31"):
        parameters = [JobParameter("runDate", "java.time.LocalDate", day)]
        execution = await repository.start_execution(JOB, parameters, rerun_completed=False)
        runs.append((execution, await repository.start_step(execution, "couponUsageStatsStep")))
    (cut, cut_step), (asked, _) = runs
    await repository.request_stop(asked.id)  # the runner had not read it yet
    for execution, step in runs:
        await repository.finish_interrupted(execution.id, step.id, "cut", "stopped")
    for execution, expected in (
        (cut, ("FAILED", INTERRUPTED, "cut")),
        (asked, ("STOPPED",) * 2 + ("stopped",)),
    ):
        found = await repository.get_execution(execution.id)
        assert found is not None
        assert (found.status, found.exit_code, found.exit_message) == expected
        [step] = found.steps
        assert (step.status, step.exit_message) == (expected[0], expected[2])
    # taken over meanwhile: nothing recorded over the taker's end
    assert await repository.finish_interrupted(cut.id, cut_step.id, "again", "again") is None


async def test_instance_summaries_read_the_latest_execution_and_the_counted_ones(
    pool: Pool,
) -> None:
    repository = repo(pool)
    assert await repository.instance_summary(JOB, PARAMS) is None
    ids = []
    for status, exit_code in (("FAILED", "FAILED"), ("FAILED", INTERRUPTED)):
        execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
        await repository.finish_execution(execution.id, Status(status), "x", exit_code)
        ids.append(execution.id)
    other = [JobParameter("runDate", "java.time.LocalDate", "2025-10-30")]
    done = await repository.start_execution(JOB, other, rerun_completed=False)
    await repository.finish_execution(done.id, Status.COMPLETED)
    summary = await repository.instance_summary(JOB, PARAMS)
    assert summary is not None
    now = await repository.database_now()
    assert summary.end_time is not None and now - summary.end_time < timedelta(seconds=5)
    assert (summary.latest, summary.status, summary.exit_code, summary.counted) == (
        ids[1],
        Status.FAILED,
        INTERRUPTED,
        1,
    )
    assert summary.interrupted and summary.parameters == {"runDate": "2025-10-31"}
    resumable = await repository.resumable_instances([JOB, "otherJob"], timedelta(hours=1))
    assert resumable == [summary]  # not the COMPLETED one
    assert await repository.resumable_instances(["otherJob"], timedelta(hours=1)) == []


async def test_a_chunk_commit_reads_a_stop_requested_elsewhere(pool: Pool) -> None:
    repository = repo(pool)
    execution = await repository.start_execution(JOB, PARAMS, rerun_completed=False)
    step = await repository.start_step(execution, "couponUsageStatsStep")
    statuses = []
    for commits in range(2):
        if commits:
            await repository.request_stop(execution.id)
        async with transaction(pool) as conn:
            statuses.append(
                await repository.commit_chunk(
                    conn, step.id, ChunkCounts(1, 1, 0, 0), {"checkpoint": commits}, commits
                )
            )
    assert statuses == ["STARTED", "STOPPING"]
