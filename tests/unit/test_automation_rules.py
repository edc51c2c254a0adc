"""The automatic launches' rules as pure functions: what a pass does with an instance, which
replica runs the schedules, where a stop lands."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from app.model import INTERRUPTED, InstanceSummary, Status
from app.replicas import Replica
from app.repository.rules import StopTarget, stop_target
from app.runtime.automation import (
    Decision,
    Launch,
    Leave,
    Restart,
    RestartPolicy,
    Wait,
    decide,
    schedules_zone,
)

NOW = datetime(2025, 10, 27, 1, 0, 0, tzinfo=UTC)
POLICY = RestartPolicy(attempts=3, backoff_seconds=60, misfire_grace=timedelta(minutes=10))
S = timedelta(seconds=1)


def instance(
    status: Status = Status.FAILED,
    *,
    exit_code: str = "",
    ended: timedelta | None = timedelta(0),
    counted: int = 1,
    dry_run: bool = False,
) -> InstanceSummary:
    """Instance 7, its latest execution 42 `ended` before NOW (None: no END_TIME)."""
    return InstanceSummary(
        instance_id=7,
        job_name="couponUsageStatsJob",
        latest=42,
        status=status,
        exit_code=exit_code or status.value,
        end_time=NOW - ended if ended is not None else None,
        parameters={"runDate": "2025-10-26", "dryRun": "true" if dry_run else "false"},
        counted=counted,
    )


STOPPED_WORDS = (
    "not restarted: execution 42 was STOPPED by an operator; only an operator restarts it"
)
ABANDONED_WORDS = (
    "not launched: execution 42 is ABANDONED, final for the automatic launches; only an"
    " operator's launch starts the instance over"
)
LATE_LAUNCH = Leave("not launched: later than the misfire grace (0:10:00)", logging.WARNING)
LATE_RESTART = Leave("not restarted: later than the misfire grace (0:10:00)", logging.WARNING)


@pytest.mark.parametrize(
    ("summary", "decision"),
    [
        (None, Launch()),  # the due instance, never launched
        (instance(dry_run=True), Leave("a dry run: never launched automatically")),
        (instance(Status.STARTED), Leave("running as execution 42")),
        (instance(Status.STOPPING), Leave("running as execution 42")),
        (instance(Status.COMPLETED), Leave("completed as execution 42")),
        (instance(Status.STOPPED), Leave(STOPPED_WORDS, logging.INFO)),
        (instance(Status.ABANDONED), Leave(ABANDONED_WORDS, logging.INFO)),
        (
            instance(Status.UNKNOWN),
            Leave("not restarted: execution 42 is UNKNOWN", logging.WARNING),
        ),
        # a shutdown's run: at once, whatever the attempts used
        (instance(exit_code=INTERRUPTED, counted=4), Restart(42, resume=True)),
        # a FAILED one: from its END_TIME, 60 s, then 120 s, then 240 s
        (instance(ended=30 * S), Wait(42, NOW + 30 * S)),
        (instance(ended=60 * S), Restart(42, resume=False)),
        (instance(ended=90 * S, counted=2), Wait(42, NOW + 30 * S)),
        (instance(ended=121 * S, counted=2), Restart(42, resume=False)),
        (instance(ended=239 * S, counted=3), Wait(42, NOW + S)),
        (instance(ended=None), Restart(42, resume=False)),
        (
            instance(ended=timedelta(hours=5), counted=4),
            Leave(
                "not restarted: FAILED after 4 executions (at most 4 automatically)",
                logging.WARNING,
            ),
        ),
    ],
)
def test_what_a_pass_does_with_an_instance(
    summary: InstanceSummary | None, decision: Decision
) -> None:
    assert decide(summary, NOW, POLICY, punctual=False, due=None) == decision
    # a punctual schedule's instance due a minute ago: the same, all within its grace
    assert decide(summary, NOW, POLICY, punctual=True, due=NOW - 60 * S) == decision


@pytest.mark.parametrize(
    ("summary", "due", "decision"),
    [
        (None, NOW - 10 * 60 * S, Launch()),
        (None, NOW - 10 * 60 * S - S, LATE_LAUNCH),
        (instance(exit_code=INTERRUPTED), NOW - 11 * 60 * S, LATE_RESTART),
        (instance(exit_code=INTERRUPTED), None, LATE_RESTART),  # no due time in the grace
        # its restart would come 50 s later, past the grace's end 40 s from now
        (instance(ended=10 * S), NOW - 9 * 60 * S - 20 * S, LATE_RESTART),
        (instance(ended=10 * S), NOW - 9 * 60 * S, Wait(42, NOW + 50 * S)),
        (instance(Status.COMPLETED), None, Leave("completed as execution 42")),
    ],
)
def test_a_punctual_schedule_runs_only_within_its_grace(
    summary: InstanceSummary | None, due: datetime | None, decision: Decision
) -> None:
    assert decide(summary, NOW, POLICY, punctual=True, due=due) == decision


def replica(id: int, zone: str, runs: bool = False) -> Replica:
    return Replica(id, f"host:{id}", zone, runs)


@pytest.mark.parametrize(
    ("replicas", "reference"),
    [
        ([], None),
        # all just started: the first to join
        ([replica(3, "UTC"), replica(5, "Asia/Seoul")], 3),
        # one already runs them: its zone, whoever joined first
        ([replica(3, "UTC"), replica(5, "Asia/Seoul", runs=True)], 5),
        (
            [
                replica(2, "Asia/Seoul", runs=True),
                replica(3, "UTC", runs=True),
                replica(4, "UTC"),
            ],
            2,
        ),
    ],
)
def test_the_schedules_run_in_the_zone_of_the_first_replica_running_them(
    replicas: list[Replica], reference: int | None
) -> None:
    found = schedules_zone(replicas)
    assert (found.id if found else None) == reference


F, R, C, A = Status.FAILED, Status.STARTED, Status.COMPLETED, Status.ABANDONED


@pytest.mark.parametrize(
    ("run", "target"),
    [
        # before the takeover: the runner's own execution, running (its runner dead or not)
        ([(1, R)], StopTarget(1, R)),
        ([(1, Status.STOPPING)], StopTarget(1, Status.STOPPING)),
        # after it, before the successor: the FAILED execution the successor would restart
        ([(1, F)], StopTarget(1, F)),
        # after the successor started: the successor
        ([(1, F), (2, Status.STARTING)], StopTarget(2, Status.STARTING)),
        ([(1, F), (2, F), (3, R)], StopTarget(3, R)),
        ([(1, Status.STOPPED), (2, R)], StopTarget(2, R)),  # an operator's restart
        # nothing to stop
        ([(1, C)], StopTarget(None, C)),
        ([(1, A)], StopTarget(None, A)),
        ([(1, Status.STOPPED)], StopTarget(None, Status.STOPPED)),
        ([(1, F), (2, C)], StopTarget(None, C)),
        # a run that ended: a later execution is a run of its own (a rerun, a start over)
        ([(1, C), (2, R)], StopTarget(None, C)),
        ([(1, F), (2, A), (3, R)], StopTarget(None, A)),
    ],
)
def test_a_stop_lands_on_its_run_s_latest_execution(
    run: list[tuple[int, Status]], target: StopTarget
) -> None:
    assert stop_target(run) == target
