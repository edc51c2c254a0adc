"""The reconciler's rules on the in-memory job repository: an execution silent for
JOB_ABANDON_AFTER_SECONDS is taken over once, a live one never; its loop passes every
period, a failed pass does not end it, and it stops when told."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.model import JobExecution, JobParameter, Status
from app.repository.memory import MemoryJobRepository
from app.runtime.reconciler import Reconciler
from tests.waits import waiting


def day(value: str) -> list[JobParameter]:
    return [JobParameter("runDate", "java.time.LocalDate", value)]


async def test_silent_executions_are_taken_over_once(caplog: pytest.LogCaptureFixture) -> None:
    repository = MemoryJobRepository(abandon_after_seconds=120)
    silent = await repository.start_execution("toyJob", day("2025-10-29"), rerun_completed=False)
    stopping = await repository.start_execution("toyJob", day("2025-10-30"), rerun_completed=False)
    live = await repository.start_execution("toyJob", day("2025-10-31"), rerun_completed=False)
    await repository.request_stop(stopping.id)
    repository.clock.advance(120)
    assert await repository.heartbeat(live.id) == Status.STARTED
    reconciler = Reconciler(repository, every=60)
    assert await reconciler.reconcile() == []  # silent for exactly the limit: not yet
    repository.clock.advance(1)
    caplog.set_level(logging.WARNING, "app.runtime.reconciler")
    assert await reconciler.reconcile() == [stopping.id, silent.id]
    assert await reconciler.reconcile() == []
    statuses = [(await repository.get_execution(e.id)) for e in (silent, stopping, live)]
    assert [e.status for e in statuses if e is not None] == [
        Status.FAILED,
        Status.STOPPED,
        Status.STARTED,
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"reconciler: execution {stopping.id} of toyJob (STOPPING) had no heartbeat for"
        " JOB_ABANDON_AFTER_SECONDS: STOPPED",
        f"reconciler: execution {silent.id} of toyJob (STARTED) had no heartbeat for"
        " JOB_ABANDON_AFTER_SECONDS: FAILED; the schedules' passes restart it if it is worth"
        " it",
    ]


class FailingFirst:
    """A job repository whose first `failures` passes fail; then expired executions 1
    (renewed, or taken by another replica first), 2 (STARTED) and 3 (STOPPING)."""

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
            for id, status in ((1, Status.STARTED), (2, Status.STARTED), (3, Status.STOPPING))
        ]

    async def take_over(self, execution_id: int) -> Status | None:
        self.taken.append(execution_id)
        return {2: Status.FAILED, 3: Status.STOPPED}.get(execution_id)


async def test_the_loop_passes_every_period_and_a_failed_pass_does_not_end_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repository = FailingFirst(failures=1)
    reconciler = Reconciler(repository, every=0.01)

    reconciler.start()
    async with waiting(5, "the reconciler's third pass, after the failed one"):
        await repository.third_pass.wait()
    await reconciler.stop()

    assert repository.taken[:3] == [1, 2, 3]
    assert "reconciler: pass failed: ConnectionError('database away')" in caplog.messages
    passes = repository.passes
    await asyncio.sleep(0.05)
    assert repository.passes == passes  # stopped: no pass after


async def test_the_loop_runs_as_a_named_task_until_stopped() -> None:
    reconciler = Reconciler(FailingFirst(), every=60)
    await reconciler.stop()  # not started: nothing to stop

    reconciler.start()
    names = [task.get_name() for task in asyncio.all_tasks()]
    await reconciler.stop()
    await reconciler.stop()  # stopped already: nothing to stop

    assert "reconciler" in names
    assert "reconciler" not in [task.get_name() for task in asyncio.all_tasks()]


async def test_an_execution_another_replica_took_first_does_not_end_the_pass() -> None:
    repository = FailingFirst()
    assert await Reconciler(repository, every=60).reconcile() == [2, 3]
    assert repository.taken == [1, 2, 3]
