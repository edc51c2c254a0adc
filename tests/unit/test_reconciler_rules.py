"""The reconciler's rules on the in-memory job repository: an execution silent for
JOB_ABANDON_AFTER_SECONDS is taken over once, a live one never."""

from __future__ import annotations

import logging

import pytest

from app.model import JobParameter, Status
from app.repository.memory import MemoryJobRepository
from app.runtime.reconciler import Reconciler


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
