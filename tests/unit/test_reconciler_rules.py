"""The reconciler's pass (`app.runtime.reconciler`) over a job repository in memory: it
takes over each expired execution that no other replica took first, and a failing pass
never ends its loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.model import JobExecution, Status
from app.runtime.reconciler import Reconciler


class Repository:
    """Expired executions 1 (STARTED), 2 (STOPPING) and 3 (STARTED, renewed or taken by
    another replica before this one); `failures` passes fail first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.passes = 0
        self.third_pass = asyncio.Event()
        self.taken: list[int] = []

    async def expired_executions(self) -> list[JobExecution]:
        self.passes += 1
        if self.passes == 3:
            self.third_pass.set()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database away")
        return [
            JobExecution(id, 7, "job", status, {})
            for id, status in ((1, Status.STARTED), (2, Status.STOPPING), (3, Status.STARTED))
        ]

    async def take_over(self, execution_id: int) -> Status | None:
        self.taken.append(execution_id)
        return {1: Status.FAILED, 2: Status.STOPPED}.get(execution_id)


async def test_a_pass_takes_over_the_expired_executions_no_one_took_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repository = Repository()
    caplog.set_level(logging.WARNING, "app.runtime.reconciler")

    assert await Reconciler(repository, every=60).reconcile() == [1, 2]  # type: ignore[arg-type]

    assert repository.taken == [1, 2, 3]
    assert caplog.messages == [
        "reconciler: execution 1 of job (STARTED) had no heartbeat for JOB_ABANDON_AFTER_SECONDS:"
        " FAILED; the schedules' passes restart it if it is worth it",
        "reconciler: execution 2 of job (STOPPING) had no heartbeat for"
        " JOB_ABANDON_AFTER_SECONDS: STOPPED",
    ]


async def test_the_loop_passes_every_period_and_a_failed_pass_does_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repository = Repository(failures=1)
    reconciler = Reconciler(repository, every=0.01)  # type: ignore[arg-type]

    reconciler.start()
    await asyncio.wait_for(repository.third_pass.wait(), timeout=5)
    await reconciler.stop()

    assert repository.taken[:3] == [1, 2, 3]
    assert "reconciler: pass failed: ConnectionError('database away')" in caplog.messages
    passes = repository.passes
    await asyncio.sleep(0.05)
    assert repository.passes == passes  # stopped: no pass after


async def test_the_loop_runs_as_a_named_task_until_stopped() -> None:
    reconciler = Reconciler(Repository(), every=60)  # type: ignore[arg-type]
    await reconciler.stop()  # not started: nothing to stop

    reconciler.start()
    names = [task.get_name() for task in asyncio.all_tasks()]
    await reconciler.stop()

    assert "reconciler" in names
    assert "reconciler" not in [task.get_name() for task in asyncio.all_tasks()]
