"""The operator's rules on the in-memory job repository: what stops, what is abandoned,
what restarts, and how each refusal is worded."""

from __future__ import annotations

import pytest

from app.model import JobExecution, Status
from app.runtime.launcher import ON_REQUEST, Launcher
from app.runtime.operator import (
    JobOperator,
    NoSuchExecution,
    NotAbandonable,
    NotRestartable,
    NotRunning,
    Stopped,
)
from tests.fakes import ToyJob, memory_launcher


async def failed_run(launcher: Launcher, job: ToyJob) -> JobExecution:
    """A run of `job` that fails at its bad item (SKIP_LIMIT=0)."""
    job.bad = {3}
    execution = await launcher.run(job.spec(), {}, rerun=False)
    assert execution.status == Status.FAILED
    job.bad = set()
    return execution


async def test_a_stop_reaches_the_run_of_this_process_at_once() -> None:
    job = ToyJob(count=1000, size=1, held={1})
    launcher = memory_launcher([job.spec()])
    operator = JobOperator.of(launcher)
    run = await operator.start("toy", {}, rerun=False)
    assert await operator.stop(run.execution.id) == Stopped(run.execution.id, Status.STARTED)
    assert run.stop.is_set()
    job.release.set()
    await run.task
    stopped = await operator.get(run.execution.id)
    assert (stopped.status, stopped.exit_message) == (Status.STOPPED, ON_REQUEST)
    with pytest.raises(NotRunning) as refused:
        await operator.stop(run.execution.id)
    assert (str(refused.value), refused.value.status) == (
        f"execution {run.execution.id} is STOPPED, not running",
        Status.STOPPED,
    )


async def test_a_stop_of_a_failed_run_holds_it_from_the_automatic_restarts() -> None:
    job = ToyJob(count=5, size=5)
    launcher = memory_launcher([job.spec()], SKIP_LIMIT=0)
    operator = JobOperator.of(launcher)
    failed = await failed_run(launcher, job)
    assert await operator.stop(failed.id) == Stopped(failed.id, Status.FAILED)
    assert (await operator.get(failed.id)).status == Status.STOPPED


async def test_a_stop_of_a_run_that_went_on_reaches_its_latest_execution() -> None:
    job = ToyJob(count=5, size=5)
    launcher = memory_launcher([job.spec()], SKIP_LIMIT=0)
    operator = JobOperator.of(launcher)
    failed = await failed_run(launcher, job)
    restarted = await operator.restart(failed.id)
    await restarted.task
    with pytest.raises(NotRunning) as refused:
        await operator.stop(failed.id)
    assert str(refused.value) == (
        f"execution {failed.id} is FAILED, not running; its run ended COMPLETED (execution"
        f" {restarted.execution.id} is its instance's latest)"
    )


async def test_only_a_stopped_failed_or_stopping_execution_is_abandoned() -> None:
    job = ToyJob(count=5, size=5)
    launcher = memory_launcher([job.spec()], SKIP_LIMIT=0)
    operator = JobOperator.of(launcher)
    done = await launcher.run(job.spec(), {"runDate": "2025-10-30"}, rerun=False)
    with pytest.raises(NotAbandonable) as refused:
        await operator.abandon(done.id)
    assert (str(refused.value), refused.value.status) == (
        f"execution {done.id} is COMPLETED: only a STOPPED, FAILED or STOPPING execution is"
        " abandoned",
        Status.COMPLETED,
    )
    failed = await failed_run(launcher, job)
    assert await operator.abandon(failed.id) == Status.FAILED
    assert (await operator.get(failed.id)).status == Status.ABANDONED
    with pytest.raises(NoSuchExecution, match="no job execution 999"):
        await operator.abandon(999)


async def test_only_an_instance_s_last_failed_or_stopped_execution_restarts() -> None:
    job = ToyJob(count=5, size=5)
    launcher = memory_launcher([job.spec()], SKIP_LIMIT=0)
    operator = JobOperator.of(launcher)
    first = await failed_run(launcher, job)
    second = await failed_run(launcher, job)
    with pytest.raises(NotRestartable) as older:
        await operator.restart(first.id)
    assert str(older.value) == (
        f"execution {first.id} is not its instance's last: execution {second.id} ran on"
        " after it and is FAILED; only the last one restarts"
    )
    restarted = await operator.restart(second.id)
    await restarted.task
    with pytest.raises(NotRestartable) as completed:
        await operator.restart(restarted.execution.id)
    assert str(completed.value) == (
        f"execution {restarted.execution.id} is COMPLETED: only a FAILED or STOPPED"
        " execution restarts"
    )
    with pytest.raises(NoSuchExecution):
        await operator.restart(999)
