"""Preparing a roll-back to the old Spring Batch 5.2 service (docs/rollback.md): what Spring
would trip on in the job repository, and, on the operator's word, the stop or abandon of
the executions still running.

Spring trips on three things this service may leave. An execution recorded running
(STARTING, STARTED, STOPPING): `SimpleJobRepository.createJobExecution` refuses its
instance (JobExecutionAlreadyRunningException), and `SimpleJobOperator.abandon` refuses a
running execution, so one left STARTED by a crash blocks Spring for good. An instance
with a COMPLETED, ABANDONED or UNKNOWN execution among its executions, which this service
runs again (a rerun, a start over) but Spring never does. And a second clock: Spring writes
BATCH_* times in its JDBC URL's zone, which must be this service's clock's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from app.config import RepositoryClock
from app.model import RUNNING, JobExecution, Status
from app.repository.clock import zone_label
from app.repository.mariadb import MariaDbJobRepository
from app.repository.rules import SpringRefusal

# A question for the operator; the answer ("" for none).
Ask = Callable[[str], Awaitable[str]]
Say = Callable[[str], None]

STOP, ABANDON = "stop", "abandon"
_ROLLBACK_NOTE = "stopped for a roll-back to Spring Batch"


@dataclass(frozen=True)
class SpringZone:
    """The zone the old service writes BATCH_* times in, as the operator names it: its
    JDBC URL's serverTimezone or connectionTimeZone, else its JVM's zone. `zone` None:
    the database session's."""

    zone: tzinfo | None
    name: str


@dataclass(frozen=True)
class Survey:
    """What Spring would trip on in the job repository."""

    clock: str  # this service's clock for BATCH_* times, and where it is declared
    zone_notes: list[str]  # how the old service's zone compares: not trips
    zone_mismatches: list[str]
    running: list[tuple[JobExecution, float]]  # with the seconds since a sign of life
    refused: list[tuple[JobExecution, SpringRefusal]]  # an instance's last execution

    @property
    def trips(self) -> int:
        return len(self.zone_mismatches) + len(self.running) + len(self.refused)


async def survey(
    repository: MariaDbJobRepository, clock: RepositoryClock, spring: SpringZone | None
) -> Survey:
    ours = await repository.clock_zone()
    notes, mismatches = [], await repository.second_clock_warnings(clock.source)
    if spring is None:
        notes.append(
            "the old service must write BATCH_* times in this zone: its JDBC URL's"
            " serverTimezone (or connectionTimeZone), else its JVM's zone; check it with"
            " --spring-timezone ZONE"
        )
    else:
        theirs = spring.zone or await repository.session_zone()
        if _same_offsets(ours, theirs):
            notes.append(f"the old service's zone, {spring.name}, is this clock's")
        else:
            mismatches.append(
                f"the old service writes BATCH_* times in {zone_label(theirs)} (--spring-timezone"
                f" {spring.name}), this service in {zone_label(ours)}: each would take the"
                " other's live runs for dead ones, or never take its dead ones over. Give both"
                " the same zone (serverTimezone in both URLs, or DB_TIMEZONE here)"
            )
    session = zone_label(await repository.session_zone())
    return Survey(
        clock=f"{zone_label(ours)}, from {clock.source} (the database session's: {session})",
        zone_notes=notes,
        zone_mismatches=mismatches,
        running=await repository.running_executions(),
        refused=await repository.spring_refusals(),
    )


def _same_offsets(ours: tzinfo, theirs: tzinfo) -> bool:
    """The same UTC offset now and half a year from now (either side of a DST change)."""
    now = datetime.now(UTC)
    return all(
        at.astimezone(ours).utcoffset() == at.astimezone(theirs).utcoffset()
        for at in (now, now + timedelta(days=182))
    )


def report(found: Survey, say: Say) -> None:
    say(f"BATCH_* times: {found.clock}")
    for line in found.zone_notes:
        say(f"  {line}")
    for line in found.zone_mismatches:
        say(f"  ZONE MISMATCH: {line}")
    say(
        f"running executions: {len(found.running)} (Spring refuses to launch their instances"
        " and cannot abandon them)"
    )
    for execution, silent in found.running:
        say(f"  {_describe(execution)}, last sign of life {silent:.0f} s ago")
    say(f"instances Spring would refuse: {len(found.refused)}")
    for last, refusal in found.refused:
        say(
            f"  {_describe(last)}: {refusal.exception} (execution {refusal.execution_id} is"
            f" {refusal.status}); complete it here before the roll-back, or abandon it"
            " (then Spring never runs it either)"
        )


def _describe(execution: JobExecution) -> str:
    parameters = " ".join(f"{k}={v}" for k, v in execution.parameters.items())
    return f"execution {execution.id} {execution.job_name} {parameters} {execution.status}"


async def stop_and_wait(repository: MariaDbJobRepository, execution_id: int, wait: float) -> Status:
    """Ask a running execution to stop and wait until it has ended: its runner, alive,
    records STOPPED after its chunks in flight; a runner gone leaves it silent, and once
    its lease expires it is taken over here (STOPPED, as the reconciler would). The status
    it ended with, or the one it still has after `wait` seconds."""
    await repository.request_stop(execution_id)
    deadline = time.monotonic() + wait
    while True:
        await repository.take_over(execution_id, _ROLLBACK_NOTE)
        execution = await repository.get_execution(execution_id)
        assert execution is not None
        if execution.status not in RUNNING or time.monotonic() >= deadline:
            return execution.status
        await asyncio.sleep(0.5)


async def stop_then_abandon(repository: MariaDbJobRepository, execution_id: int) -> Status:
    """STOPPING, then ABANDONED at once (Spring's JobOperator abandons a STOPPING
    execution too); a runner still alive reads it as a lost lease."""
    await repository.request_stop(execution_id)
    await repository.abandon(execution_id)
    execution = await repository.get_execution(execution_id)
    assert execution is not None
    return execution.status


async def prepare_rollback(
    repository: MariaDbJobRepository,
    clock: RepositoryClock,
    spring: SpringZone | None,
    *,
    action: str | None,
    ask: Ask,
    say: Say,
    wait: float,
) -> bool:
    """Report what Spring would trip on; then stop or abandon each running execution, as
    `action` says for all (the operator's word on the command line), else as the operator
    answers `ask` for each; report again after any. Whether nothing is left to trip on."""
    found = await survey(repository, clock, spring)
    report(found, say)
    acted = False
    for execution, _ in found.running:
        chosen = action or _choice(
            await ask(
                f"execution {execution.id}: [s]top it (it ends STOPPED: Spring restarts it),"
                " [a]bandon it (Spring never runs its instance again), or leave it? [s/a/N] "
            )
        )
        if chosen == STOP:
            say(f"stopping execution {execution.id} (at most {wait:.0f} s) ...")
            ended = await stop_and_wait(repository, execution.id, wait)
        elif chosen == ABANDON:
            ended = await stop_then_abandon(repository, execution.id)
        else:
            continue
        acted = True
        say(f"execution {execution.id}: {ended}")
    if acted:
        found = await survey(repository, clock, spring)
        report(found, say)
    if found.trips:
        say(f"not ready: {found.trips} thing(s) above that Spring Batch would trip on")
        return False
    say("ready: nothing here that Spring Batch would trip on")
    return True


def _choice(answer: str) -> str | None:
    word = answer.strip().lower()
    if word in ("s", STOP):
        return STOP
    if word in ("a", ABANDON):
        return ABANDON
    return None
