"""JobOperator's status rules, stated once for the CLI and the API: which statuses stop and
are abandoned, what each refusal names, and that a refused command changes nothing."""

from __future__ import annotations

import pytest
from asyncmy.pool import Pool

from app.model import ABANDONABLE, RUNNING, Status
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.operator import (
    JobOperator,
    NoSuchExecution,
    NotAbandonable,
    NotRunning,
    Stopped,
)
from tests.integration.test_restart_rules import executions_of_one_instance


def operator(pool: Pool) -> JobOperator:
    return JobOperator(MariaDbJobRepository(pool, abandon_after_seconds=120))


async def one_execution(pool: Pool, status: Status) -> int:
    """An execution of a stats instance, in `status`."""
    (execution_id,) = await executions_of_one_instance(pool, Status.FAILED)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET STATUS = %s, LAST_UPDATED = NOW(6)"
            " WHERE JOB_EXECUTION_ID = %s",
            (status.value, execution_id),
        )
    return execution_id


@pytest.mark.parametrize("status", list(Status))
async def test_stop_takes_a_running_execution_and_holds_a_failed_one(
    pool: Pool, status: Status
) -> None:
    """A running execution: STOPPING. A FAILED one (awaiting its automatic restart):
    STOPPED at once, the operator's word. Any other: refused."""
    execution_id = await one_execution(pool, status)
    if status in RUNNING:
        assert await operator(pool).stop(execution_id) == Stopped(execution_id, status)
        after = Status.STOPPING
    elif status == Status.FAILED:
        assert await operator(pool).stop(execution_id) == Stopped(execution_id, status)
        after = Status.STOPPED
    else:
        with pytest.raises(NotRunning, match=f"execution {execution_id} is {status}, not") as no:
            await operator(pool).stop(execution_id)
        assert no.value.status == status
        after = status
    assert (await operator(pool).get(execution_id)).status == after


@pytest.mark.parametrize("status", list(Status))
async def test_abandon_takes_stopped_failed_and_stopping_only(pool: Pool, status: Status) -> None:
    execution_id = await one_execution(pool, status)
    if status in ABANDONABLE:
        assert await operator(pool).abandon(execution_id) == status
        after = Status.ABANDONED
    else:
        with pytest.raises(NotAbandonable, match="only a STOPPED, FAILED or STOPPING") as no:
            await operator(pool).abandon(execution_id)
        assert no.value.status == status
        after = status
    assert (await operator(pool).get(execution_id)).status == after


async def test_a_stop_of_a_taken_over_execution_reaches_its_successor(pool: Pool) -> None:
    """The run goes on as a later execution of its instance (a restart after a takeover):
    the stop of the first reaches it. A run that ended COMPLETED is not stopped."""
    first, successor = await executions_of_one_instance(pool, Status.FAILED, Status.FAILED)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET STATUS = 'STARTED' WHERE JOB_EXECUTION_ID = %s",
            (successor,),
        )
    assert await operator(pool).stop(first) == Stopped(successor, Status.STARTED)
    statuses = [(await operator(pool).get(e)).status for e in (first, successor)]
    assert statuses == [Status.FAILED, Status.STOPPING]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE BATCH_JOB_EXECUTION SET STATUS = 'COMPLETED' WHERE JOB_EXECUTION_ID = %s",
            (successor,),
        )
    with pytest.raises(NotRunning) as no:
        await operator(pool).stop(first)
    assert str(no.value) == (
        f"execution {first} is FAILED, not running; its run ended COMPLETED (execution"
        f" {successor} is its instance's latest)"
    )
    assert no.value.status == Status.FAILED


async def test_an_unknown_execution_is_named(pool: Pool) -> None:
    for command in (operator(pool).stop, operator(pool).abandon, operator(pool).get):
        with pytest.raises(NoSuchExecution, match="no job execution 424242"):
            await command(424242)
