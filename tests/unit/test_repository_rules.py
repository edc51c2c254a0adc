"""The job repository's rules (`app.repository.rules`) as the pure functions they are: a
launch's refusals and takeovers, the automatic launches' fences, where a step resumes,
a chunk commit's fences, how a run cut or stopped ends, and Spring Batch's own refusals.
Both repositories apply them; tests/integration/test_repository_contract.py runs the
same scenarios through each."""

from __future__ import annotations

import pytest

from app.model import (
    INTERRUPTED,
    AlreadyComplete,
    AlreadyRunning,
    AutomaticLaunch,
    RestartLimitReached,
    Status,
    StepExecution,
    Superseded,
)
from app.repository.rules import (
    CHECKPOINT_OWNER,
    MESSAGE_LIMIT,
    AlreadyCommitted,
    LeaseLost,
    SpringRefusal,
    abandoned_message,
    check_automatic,
    check_bound,
    check_commit,
    check_completed,
    check_job_running,
    check_running,
    clip,
    counts_against_bound,
    interrupted_end,
    owned_context,
    resume_checkpoint,
    spring_launch_refusal,
    stop_failed_allowed,
    stopped_after_failure,
    taken_over_as,
)

F, S, R = Status.FAILED, Status.STOPPED, Status.STARTED


def test_a_message_is_clipped_to_what_exit_message_holds() -> None:
    assert MESSAGE_LIMIT == 2500
    assert clip("x" * 2500) == "x" * 2500
    assert clip("x" * 2501) == "x" * 2497 + "..."


@pytest.mark.parametrize(
    ("status", "ended"),
    [(Status.STOPPING, S), (R, F), (Status.STARTING, F)],
)
def test_a_running_execution_whose_runner_is_gone_ends_stopped_if_stopping(
    status: Status, ended: Status
) -> None:
    assert taken_over_as(status) == ended


def test_the_message_of_an_execution_taken_over() -> None:
    assert abandoned_message(F, 130.4, 120) == (
        "abandoned: no heartbeat for 130 s (JOB_ABANDON_AFTER_SECONDS=120)"
    )
    assert abandoned_message(S, 121, 120.0, "by replica 2") == (
        "stopped on request, its runner gone: no heartbeat for 121 s"
        " (JOB_ABANDON_AFTER_SECONDS=120.0); by replica 2"
    )


def test_a_launch_meeting_a_live_run_is_refused() -> None:
    with pytest.raises(AlreadyRunning) as raised:
        check_running("statsJob", (42, R), idle=119.9, abandon_after=120)
    assert str(raised.value) == "statsJob is already running as execution 42"
    assert raised.value.execution_id == 42


@pytest.mark.parametrize(("status", "ended"), [(R, F), (Status.STOPPING, S)])
def test_a_launch_meeting_a_silent_run_takes_it_over(status: Status, ended: Status) -> None:
    assert check_running("statsJob", (42, status), idle=120, abandon_after=120) == ended


def test_a_completed_instance_runs_again_only_on_a_rerun() -> None:
    with pytest.raises(AlreadyComplete) as raised:
        check_completed("statsJob", (42, Status.COMPLETED), rerun=False)
    assert (str(raised.value), raised.value.execution_id) == (
        "statsJob already completed as execution 42",
        42,
    )
    check_completed("statsJob", (42, Status.COMPLETED), rerun=True)
    check_completed("statsJob", (42, F), rerun=False)
    check_completed("statsJob", None, rerun=False)


def test_an_automatic_launch_stands_while_the_instance_is_as_decided() -> None:
    check_automatic("statsJob", (42, F), AutomaticLaunch(after=42, max_executions=4))
    check_automatic("statsJob", None, AutomaticLaunch(after=None, max_executions=4))


@pytest.mark.parametrize(
    ("latest", "after", "now", "execution_id"),
    [
        ((43, R), 42, "execution 43 is STARTED", 43),  # launched since
        ((42, S), 42, "execution 42 is STOPPED", 42),  # stopped since
        ((42, Status.ABANDONED), 42, "execution 42 is ABANDONED", 42),
        (None, 42, "none", 0),
        ((42, F), None, "execution 42 is FAILED", 42),  # decided when it had none
    ],
)
def test_an_automatic_launch_decided_from_an_older_read_is_superseded(
    latest: tuple[int, Status] | None, after: int | None, now: str, execution_id: int
) -> None:
    with pytest.raises(Superseded) as raised:
        check_automatic("statsJob", latest, AutomaticLaunch(after=after, max_executions=4))
    assert str(raised.value) == (
        "statsJob: the instance changed since the automatic launch was decided (its latest"
        f" execution: {now})"
    )
    assert raised.value.execution_id == execution_id


def test_an_automatic_launch_is_refused_at_its_bound() -> None:
    check_bound("statsJob", (42, F), AutomaticLaunch(after=42, max_executions=4), counted=3)
    check_bound("statsJob", (42, F), AutomaticLaunch(after=42, max_executions=None), 99)
    with pytest.raises(RestartLimitReached) as raised:
        check_bound("statsJob", (42, F), AutomaticLaunch(after=42, max_executions=4), 4)
    assert str(raised.value) == (
        "statsJob has run 4 executions of this instance already (at most 4 automatically);"
        " not restarted"
    )
    assert raised.value.execution_id == 42
    with pytest.raises(RestartLimitReached) as none:
        check_bound("statsJob", None, AutomaticLaunch(after=None, max_executions=0), 0)
    assert none.value.execution_id == 0


def test_only_an_interrupted_execution_does_not_count_against_the_bound() -> None:
    assert counts_against_bound("FAILED") is True
    assert counts_against_bound(INTERRUPTED) is False


def step(status: Status, checkpoint: object = 40) -> StepExecution:
    return StepExecution(id=9, job_execution_id=4, name="s", status=status, checkpoint=checkpoint)


@pytest.mark.parametrize(
    ("previous", "job", "resumed"),
    [
        (step(F), F, 40),
        (step(S), S, 40),
        (step(F), Status.ABANDONED, None),  # started over
        (step(Status.COMPLETED), F, None),
        (step(R), F, None),
        (None, None, None),
    ],
)
def test_a_step_resumes_from_its_last_failed_or_stopped_checkpoint(
    previous: StepExecution | None, job: Status | None, resumed: object
) -> None:
    assert resume_checkpoint(previous, job) == resumed


def test_a_stored_checkpoint_names_the_step_execution_that_wrote_it() -> None:
    assert CHECKPOINT_OWNER == "checkpoint.stepExecutionId"
    assert owned_context({"checkpoint": 40, "skipped": [3]}, 9) == {
        "checkpoint": 40,
        "skipped": [3],
        "checkpoint.stepExecutionId": 9,
    }
    assert owned_context({"checkpoint": None}, 9) == {"checkpoint": None}
    assert owned_context({}, 9) == {}


def test_a_commit_found_done_already_is_not_a_lost_lease() -> None:
    with pytest.raises(AlreadyCommitted, match=r"^step execution 9: commit 3 exists$"):
        check_commit(9, R, commits=3, commits_before=2)


@pytest.mark.parametrize(("status", "commits"), [(R, 2), (F, 3), (S, 2)])
def test_a_commit_of_a_step_no_longer_started_here_lost_its_lease(
    status: Status, commits: int
) -> None:
    with pytest.raises(LeaseLost) as raised:
        check_commit(9, status, commits=commits, commits_before=2)
    assert str(raised.value) == (
        "step execution 9 is no longer STARTED here: another replica took its execution"
        " over (no sign of life for JOB_ABANDON_AFTER_SECONDS)"
    )


@pytest.mark.parametrize("status", [Status.STARTING, R, Status.STOPPING])
def test_a_commit_stands_while_its_job_execution_runs(status: Status) -> None:
    assert check_job_running(9, status) == status


@pytest.mark.parametrize("status", [F, S, Status.ABANDONED, Status.COMPLETED])
def test_a_commit_of_a_job_execution_no_longer_running_lost_its_lease(status: Status) -> None:
    with pytest.raises(LeaseLost) as raised:
        check_job_running(9, status)
    assert str(raised.value) == (
        f"step execution 9: its job execution is {status} (abandoned or taken over)"
    )


def test_a_run_cut_by_a_shutdown_ends_failed_interrupted_unless_stopping() -> None:
    assert interrupted_end(R, "cut", "stopped") == (F, INTERRUPTED, "cut")
    assert interrupted_end(Status.STOPPING, "cut", "stopped") == (S, "STOPPED", "stopped")


def test_the_message_of_a_failed_run_stopped_by_an_operator() -> None:
    assert stopped_after_failure("FAILED", "peer away") == (
        "stopped on request after it ended FAILED: peer away; restartable from the"
        " checkpoint, never automatically"
    )
    assert stopped_after_failure(INTERRUPTED, "") == (
        "stopped on request after it ended INTERRUPTED; restartable from the checkpoint,"
        " never automatically"
    )
    assert len(stopped_after_failure("FAILED", "x" * 3000)) == MESSAGE_LIMIT


def test_a_failed_execution_is_stopped_only_while_its_instance_s_latest_and_failed() -> None:
    assert stop_failed_allowed((4, F), 4) is True
    assert stop_failed_allowed((5, F), 4) is False
    assert stop_failed_allowed((4, S), 4) is False
    assert stop_failed_allowed(None, 4) is False


@pytest.mark.parametrize(
    ("executions", "refusal"),
    [
        ([], None),
        ([(2, F, True), (1, F, True)], None),
        ([(2, S, True)], None),
        ([(2, R, True)], SpringRefusal("JobExecutionAlreadyRunningException", 2, R)),
        (
            [(2, Status.STOPPING, False)],
            SpringRefusal("JobExecutionAlreadyRunningException", 2, Status.STOPPING),
        ),
        ([(2, Status.UNKNOWN, True)], SpringRefusal("JobRestartException", 2, Status.UNKNOWN)),
        (
            [(2, Status.COMPLETED, True)],
            SpringRefusal("JobInstanceAlreadyCompleteException", 2, Status.COMPLETED),
        ),
        (
            [(2, Status.ABANDONED, True)],
            SpringRefusal("JobInstanceAlreadyCompleteException", 2, Status.ABANDONED),
        ),
        # without identifying parameters, a completed instance launches again
        ([(2, Status.COMPLETED, False), (1, Status.ABANDONED, False)], None),
        # the first that matches decides, newest first
        (
            [(3, F, True), (2, Status.COMPLETED, True), (1, R, True)],
            SpringRefusal("JobInstanceAlreadyCompleteException", 2, Status.COMPLETED),
        ),
    ],
)
def test_what_spring_batch_refuses_to_launch(
    executions: list[tuple[int, Status, bool]], refusal: SpringRefusal | None
) -> None:
    assert spring_launch_refusal(executions) == refusal
