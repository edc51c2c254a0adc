"""How a run ends (`app.runtime.launcher`): the first stop asked wins, a shutdown's stop
is FAILED INTERRUPTED, and the exit code says COMPLETED WITH SKIPS for a run that skipped."""

from __future__ import annotations

import pytest

from app.errors import DataError
from app.jobs import usage_stats_spec
from app.model import COMPLETED_WITH_SKIPS, INTERRUPTED, JobExecution, Status
from app.pipeline.step import SkipLimitExceeded
from app.repository.rules import LeaseLost
from app.runtime.launcher import ON_REQUEST, ON_SHUTDOWN, RunningJob, _expected, _Outcome


def running() -> RunningJob:
    return RunningJob(
        usage_stats_spec.SPEC,
        JobExecution(id=4, instance_id=7, job_name="j", status=Status.STARTED, parameters={}),
    )


def test_a_run_is_stopped_on_request_as_stopped_by_default() -> None:
    run = running()
    assert not run.stop.is_set()
    assert (run.stop_reason, run.stop_status, run.stop_exit_code) == (
        ON_REQUEST,
        Status.STOPPED,
        "STOPPED",
    )

    run.request_stop("the lease was lost", Status.FAILED)

    assert run.stop.is_set()
    assert (run.stop_reason, run.stop_status, run.stop_exit_code) == (
        "the lease was lost",
        Status.FAILED,
        "FAILED",
    )


def test_the_first_stop_asked_decides_how_the_run_ends() -> None:
    run = running()
    run.request_stop(ON_REQUEST)
    run.interrupt()
    assert (run.stop_reason, run.stop_status, run.stop_exit_code) == (
        ON_REQUEST,
        Status.STOPPED,
        "STOPPED",
    )


def test_a_shutdown_s_stop_ends_the_run_failed_interrupted() -> None:
    run = running()
    run.interrupt()
    assert run.stop.is_set()
    assert (run.stop_reason, run.stop_status, run.stop_exit_code) == (
        ON_SHUTDOWN,
        Status.FAILED,
        INTERRUPTED,
    )


@pytest.mark.parametrize(
    ("outcome", "exit_code"),
    [
        (_Outcome(), "FAILED"),
        (_Outcome(Status.COMPLETED), "COMPLETED"),
        (_Outcome(Status.COMPLETED, skipped=1), COMPLETED_WITH_SKIPS),
        (_Outcome(Status.FAILED, skipped=3), "FAILED"),
        (_Outcome(Status.STOPPED, skipped=3), "STOPPED"),
        (_Outcome(Status.FAILED, code=INTERRUPTED), INTERRUPTED),
        (_Outcome(Status.COMPLETED, skipped=1, code="NOOP"), "NOOP"),
    ],
)
def test_the_exit_code_of_an_outcome(outcome: _Outcome, exit_code: str) -> None:
    assert outcome.exit_code == exit_code
    assert outcome.interrupted is (exit_code == INTERRUPTED)


def test_a_stopped_run_s_outcome_is_what_its_stop_said() -> None:
    run = running()
    run.interrupt()
    outcome = _Outcome(Status.COMPLETED, "done", skipped=2)

    outcome.stopped_as(run)

    assert (outcome.status, outcome.message, outcome.code) == (
        Status.FAILED,
        ON_SHUTDOWN,
        INTERRUPTED,
    )
    assert outcome.interrupted


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionError("away"), True),
        (DataError("a bad row"), True),
        (SkipLimitExceeded("too many"), True),
        (LeaseLost("taken over"), True),
        (RuntimeError("a bug"), False),
        (KeyError("a bug"), False),
    ],
)
def test_a_failure_the_policy_foresees_is_not_a_bug(exc: BaseException, expected: bool) -> None:
    assert _expected(exc) is expected
