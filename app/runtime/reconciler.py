"""The reconciler: each replica's periodic look for executions whose runner died.

An execution still recorded running (STARTING, STARTED, STOPPING) without a heartbeat
for JOB_ABANDON_AFTER_SECONDS (its lease expired, by the database clock) is taken over:
a STOPPING one ends STOPPED (the stop it was asked for), any other FAILED, "abandoned".
Every replica runs one, whether or not it runs the schedules; the execution's row lock
makes one of them take each over. Restarting what it took over is no business of the
reconciler's: the next pass of any replica that runs the schedules reads the FAILED
execution and restarts it under the automatic launches' rules, so a takeover by a
replica that runs no schedules never strands a run.
"""

from __future__ import annotations

import asyncio
import logging

from app.ports import JobRepository

log = logging.getLogger(__name__)


class Reconciler:
    """Takes over, every `every` seconds, the executions whose lease expired."""

    def __init__(self, repository: JobRepository, *, every: float) -> None:
        self._repository = repository
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as exc:  # the database away: the next pass tries again
                log.warning("reconciler: pass failed: %r", exc)
            await asyncio.sleep(self._every)

    async def reconcile(self) -> list[int]:
        """One pass; the ids of the executions this replica took over."""
        taken = []
        for execution in await self._repository.expired_executions():
            ended = await self._repository.take_over(execution.id)
            if ended is None:  # renewed, or another replica was first
                continue
            taken.append(execution.id)
            log.warning(
                "reconciler: execution %d of %s (%s) had no heartbeat for"
                " JOB_ABANDON_AFTER_SECONDS: %s%s",
                execution.id,
                execution.job_name,
                execution.status,
                ended,
                "; the schedules' passes restart it if it is worth it" if ended == "FAILED" else "",
            )
        return taken
