"""The automatic launches' rules as pure functions: what a pass does with an instance, which
replica runs the schedules, where a stop lands."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.jobs import fcm_send_spec, usage_stats_spec
from app.model import INTERRUPTED, InstanceSummary, Status
from app.replicas import Replica
from app.repository.rules import StopTarget, stop_target
from app.runtime.automation import (
    Decision,
    Launch,
    Leave,
    Restart,
    RestartPolicy,
    Schedule,
    Wait,
    decide,
    due_slot,
    due_time_of,
    last_due,
    schedules_of,
    schedules_zone,
)
from app.runtime.scheduler import _waiting

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


def test_a_restart_s_due_time_is_said_in_app_timezone_not_the_database_clock_s() -> None:
    """Before: `restart due at 2025-10-27T01:00:30+00:00`, the database clock's zone,
    beside schedules said in APP_TIMEZONE."""
    wait = Wait(42, NOW + 30 * S)
    assert _waiting(wait, ZoneInfo("Asia/Seoul")) == (
        "execution 42 FAILED; restart due at 2025-10-27T10:00:30+09:00"
    )
    assert _waiting(wait, ZoneInfo("UTC")) == (
        "execution 42 FAILED; restart due at 2025-10-27T01:00:30+00:00"
    )


H = timedelta(hours=1)
HOURLY = Schedule(fcm_send_spec.SPEC, fcm_send_spec.SPEC.schedule)


@pytest.mark.parametrize(
    ("now", "fired"),
    [
        (datetime(2025, 10, 27, 10, 0, 0), datetime(2025, 10, 27, 10, 0)),  # at its time
        (datetime(2025, 10, 27, 10, 0, 0, 700_000), datetime(2025, 10, 27, 10, 0)),
        (datetime(2025, 10, 27, 10, 59, 59, 900_000), datetime(2025, 10, 27, 10, 0)),
        (datetime(2025, 10, 27, 10, 59, 58), datetime(2025, 10, 27, 10, 0)),
    ],
)
def test_the_last_due_time_is_at_or_before_now(now: datetime, fired: datetime) -> None:
    assert last_due("0 * * * *", now) == fired


@pytest.mark.parametrize(
    ("now", "slot"),
    [
        # a pass a hair early counts the hour as due
        (datetime(2025, 10, 27, 10, 59, 59), datetime(2025, 10, 27, 11, 0)),
        (datetime(2025, 10, 27, 10, 59, 59, 200_000), datetime(2025, 10, 27, 11, 0)),
        (datetime(2025, 10, 27, 10, 59, 57, 500_000), datetime(2025, 10, 27, 10, 0)),
        (datetime(2025, 10, 27, 11, 0, 0), datetime(2025, 10, 27, 11, 0)),
    ],
)
def test_a_pass_fires_the_slot_due_from_a_second_before_it(now: datetime, slot: datetime) -> None:
    assert due_slot("0 * * * *", now) == slot


def fan_out(day: int, hour: int) -> dict[str, str]:
    return {"runDate": f"2025-10-{day:02}", "targetHour": str(hour), "dryRun": "false"}


@pytest.mark.parametrize(
    ("parameters", "now", "grace", "due"),
    [
        (fan_out(27, 10), datetime(2025, 10, 27, 10, 5), 10 * 60 * S, datetime(2025, 10, 27, 10)),
        (fan_out(27, 10), datetime(2025, 10, 27, 10, 0), 0 * S, datetime(2025, 10, 27, 10)),
        (fan_out(27, 10), datetime(2025, 10, 27, 10, 10), 10 * 60 * S, datetime(2025, 10, 27, 10)),
        (fan_out(27, 10), datetime(2025, 10, 27, 10, 10, 1), 10 * 60 * S, None),  # too late
        (fan_out(27, 8), datetime(2025, 10, 27, 10, 30), 3 * H, datetime(2025, 10, 27, 8)),
        (fan_out(27, 8), datetime(2025, 10, 27, 10, 30), 2 * H, None),
        (fan_out(26, 23), datetime(2025, 10, 27, 0, 20), 2 * H, datetime(2025, 10, 26, 23)),
        (fan_out(26, 23), datetime(2025, 10, 27, 0, 20), H, None),
        (fan_out(27, 11), datetime(2025, 10, 27, 10, 30), 3 * H, None),  # not yet fired
        (fan_out(27, 11), datetime(2025, 10, 27, 10, 59, 59, 500_000), H, None),
        (fan_out(27, 11), datetime(2025, 10, 27, 11, 0, 0, 500_000), H, datetime(2025, 10, 27, 11)),
        # dryRun=false does not identify the instance; the instance of a dry run is not due
        (
            {"runDate": "2025-10-27", "targetHour": "10"},
            datetime(2025, 10, 27, 10, 5),
            H,
            datetime(2025, 10, 27, 10),
        ),
    ],
)
def test_the_due_time_of_a_recorded_instance_within_the_grace(
    parameters: dict[str, str], now: datetime, grace: timedelta, due: datetime | None
) -> None:
    assert due_time_of(HOURLY, parameters, now, grace) == due


def test_a_parameter_a_schedule_leaves_out_takes_its_default_from_the_time_of_the_pass() -> None:
    """As a launch by that pass would record it: targetHour, left out, is the pass's hour."""
    by_date = Schedule(
        fcm_send_spec.SPEC,
        dataclasses.replace(
            fcm_send_spec.SPEC.schedule, parameters=lambda at: {"runDate": at.date().isoformat()}
        ),
    )
    recorded = fan_out(27, 10)

    assert due_time_of(by_date, recorded, datetime(2025, 10, 27, 10, 5), H) == datetime(
        2025, 10, 27, 10
    )
    # at 11:05 the instance of 11:00 would have targetHour 11: the one recorded is not it
    assert due_time_of(by_date, recorded, datetime(2025, 10, 27, 11, 5), 2 * H) is None


def test_the_schedules_are_those_the_jobs_declare() -> None:
    unscheduled = dataclasses.replace(fcm_send_spec.SPEC, schedule=None)
    found = schedules_of([unscheduled, fcm_send_spec.SPEC, usage_stats_spec.SPEC])
    assert [(s.job.name, s.when.cron) for s in found] == [
        ("couponUsageStatsFcmSendJob", "0 * * * *"),
        ("couponUsageStatsJob", "0 1 * * *"),
    ]
    assert found[0].job is fcm_send_spec.SPEC and found[0].when is fcm_send_spec.SPEC.schedule
