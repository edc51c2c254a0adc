"""The job repository's rules as pure functions: what a launch, a stop, an abandon, a
restart, a takeover and a chunk commit may do, given the statuses read under the
instance's lock. Both repositories (MariaDB, in memory) and the operator apply these,
so the rules live once; they match Spring Batch 5.2 (docs/contracts.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from app.errors import BatchError
from app.model import (
    ABANDONABLE,
    INTERRUPTED,
    RESTARTABLE,
    RUNNING,
    AlreadyComplete,
    AlreadyRunning,
    AutomaticLaunch,
    JobExecution,
    RestartLimitReached,
    Status,
    StepExecution,
    Superseded,
)

MESSAGE_LIMIT = 2500  # EXIT_MESSAGE is VARCHAR(2500)
# The step execution that wrote the checkpoint beside it in its context. Spring's restart
# copies the last step's whole context into its new step (SimpleStepHandler), so a
# checkpoint is trusted only in the context of the step execution it names.
CHECKPOINT_OWNER = "checkpoint.stepExecutionId"


class AlreadyCommitted(BatchError):
    """This chunk's commit took effect already: an earlier attempt's COMMIT applied though
    its answer was lost (a stall). The retry's transaction rolls back, its writes with it."""


class LeaseLost(BatchError):
    """This runner's execution is no longer running: another replica found it silent and
    took the instance over, or an operator abandoned it. Nothing more may be committed
    for it."""


def clip(text: str) -> str:
    """A message as EXIT_MESSAGE holds it."""
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


# Launch


def taken_over_as(status: Status) -> Status:
    """What a running execution whose runner is gone ends as: a STOPPING one STOPPED (the
    stop it was asked for), any other FAILED (restartable)."""
    return Status.STOPPED if status == Status.STOPPING else Status.FAILED


def abandoned_message(status: Status, idle: float, abandon_after: float, note: str = "") -> str:
    """The exit message of an execution taken over as `status` after `idle` seconds."""
    what = "abandoned" if status == Status.FAILED else "stopped on request, its runner gone"
    return f"{what}: no heartbeat for {idle:.0f} s (JOB_ABANDON_AFTER_SECONDS={abandon_after})" + (
        f"; {note}" if note else ""
    )


def check_running(
    job_name: str, latest: tuple[int, Status], idle: float, abandon_after: float
) -> Status:
    """A launch meets its instance's latest execution running: refused (AlreadyRunning)
    while it is alive (a sign of life within `abandon_after` seconds); else what that
    execution ends as before the launch goes on (`taken_over_as`)."""
    latest_id, status = latest
    if idle < abandon_after:
        raise AlreadyRunning(f"{job_name} is already running as execution {latest_id}", latest_id)
    return taken_over_as(status)


def check_completed(job_name: str, latest: tuple[int, Status] | None, rerun: bool) -> None:
    """A COMPLETED instance runs again only when the launch asks for a rerun."""
    if latest is not None and latest[1] == Status.COMPLETED and not rerun:
        raise AlreadyComplete(f"{job_name} already completed as execution {latest[0]}", latest[0])


def check_automatic(
    job_name: str, latest: tuple[int, Status] | None, automatic: AutomaticLaunch
) -> None:
    """An automatic launch stands only while the instance is as it was decided from: its
    latest execution (as read before any takeover) still `automatic.after`, and FAILED;
    else Superseded."""
    latest_id = latest[0] if latest is not None else None
    if latest_id != automatic.after or (latest is not None and latest[1] != Status.FAILED):
        now = f"execution {latest_id} is {latest[1]}" if latest is not None else "none"
        raise Superseded(
            f"{job_name}: the instance changed since the automatic launch was decided"
            f" (its latest execution: {now})",
            latest_id or 0,
        )


def check_bound(
    job_name: str, latest: tuple[int, Status] | None, automatic: AutomaticLaunch, counted: int
) -> None:
    """An automatic launch of an instance that has run `counted` executions (the
    interrupted ones left out) is refused at its bound (RestartLimitReached)."""
    if automatic.max_executions is not None and counted >= automatic.max_executions:
        raise RestartLimitReached(
            f"{job_name} has run {counted} executions of this instance already"
            f" (at most {automatic.max_executions} automatically); not restarted",
            latest[0] if latest is not None else 0,
        )


def counts_against_bound(exit_code: str) -> bool:
    """Whether an execution counts against the automatic attempts: not one cut by a
    shutdown."""
    return exit_code != INTERRUPTED


def resume_checkpoint(previous: StepExecution | None, previous_job: Status | None) -> Any:
    """Where a new step execution starts: the checkpoint of the instance's last execution
    of the step when that one is FAILED or STOPPED and its job execution was not
    abandoned (`previous.checkpoint` is set only where the checkpoint is its own); None:
    from scratch."""
    if previous is None or previous_job == Status.ABANDONED:
        return None
    return previous.checkpoint if previous.status in RESTARTABLE else None


def owned_context(context: dict[str, Any], step_id: int) -> dict[str, Any]:
    """The step's context as stored, its checkpoint marked as written by step execution
    `step_id`."""
    if context.get("checkpoint") is None:
        return context
    return {**context, CHECKPOINT_OWNER: step_id}


# Chunk commits, heartbeats and ends


def check_commit(step_id: int, status: Status, commits: int, commits_before: int) -> NoReturn:
    """The fences of a chunk commit that found its step not STARTED with `commits_before`
    commits: a commit of an attempt whose answer was lost (AlreadyCommitted), else the
    lease lost (LeaseLost)."""
    if status == Status.STARTED and commits > commits_before:
        raise AlreadyCommitted(f"step execution {step_id}: commit {commits} exists")
    raise LeaseLost(
        f"step execution {step_id} is no longer STARTED here: another replica took"
        " its execution over (no sign of life for JOB_ABANDON_AFTER_SECONDS)"
    )


def check_job_running(step_id: int, status: Status) -> Status:
    """A chunk commit stands only while its job execution runs; its status."""
    if status not in RUNNING:
        raise LeaseLost(
            f"step execution {step_id}: its job execution is {status} (abandoned or taken over)"
        )
    return Status(status)


def interrupted_end(status: Status, message: str, stopped: str) -> tuple[Status, str, str]:
    """How a run cut by a shutdown ends (status, exit code, message): STOPPED where an
    operator asked it to stop (STOPPING) before the runner read it, else FAILED
    INTERRUPTED."""
    if status == Status.STOPPING:
        return Status.STOPPED, Status.STOPPED.value, stopped
    return Status.FAILED, INTERRUPTED, message


def stopped_after_failure(exit_code: str, message: str) -> str:
    """The exit message of a FAILED run stopped by an operator (`stop_failed`)."""
    text = f"stopped on request after it ended {exit_code}" + (f": {message}" if message else "")
    return (text + "; restartable from the checkpoint, never automatically")[:MESSAGE_LIMIT]


# The operator's commands


@dataclass(frozen=True)
class StopTarget:
    """Where a stop lands: `execution_id` to STOPPING (running) or STOPPED (FAILED,
    awaiting its automatic restart); None: the run ended, `status` says how."""

    execution_id: int | None
    status: Status


def stop_target(run: Sequence[tuple[int, Status]]) -> StopTarget:
    """The rule of a stop that meets a takeover: a stop is addressed to a run, not to a
    process. `run` is the execution asked for and its instance's later ones, oldest
    first. The run goes on through restarts (after FAILED or STOPPED) and ends at a
    COMPLETED, ABANDONED or UNKNOWN execution; its latest execution is stopped:

    - running (STARTING, STARTED, STOPPING; its runner alive or not): STOPPING, which its
      runner reads, or its taker ends STOPPED;
    - FAILED (a fault, a lost runner or a shutdown; its automatic restart pending):
      STOPPED at once, so that no automatic launch restarts it;
    - otherwise nothing is running: the stop is refused with that status.

    So a stop before a takeover holds through it, and one after it reaches the successor
    (or the FAILED execution its successor would restart)."""
    *before, (latest, status) = run
    ended = next((s for _, s in before if s not in RESTARTABLE), None)
    if ended is not None:
        return StopTarget(None, ended)
    if status in RUNNING or status == Status.FAILED:
        return StopTarget(latest, status)
    return StopTarget(None, status)


def stop_failed_allowed(latest: tuple[int, Status] | None, execution_id: int) -> bool:
    """A FAILED execution is stopped (`stop_failed`) only while it is its instance's
    latest, and FAILED."""
    return latest == (execution_id, Status.FAILED)


def restart_refusal(execution: JobExecution, latest: JobExecution) -> str | None:
    """Why `execution` does not restart (None: it does, under the launch rules), its
    instance's latest execution being `latest`: only a FAILED or STOPPED execution
    restarts, and only its instance's last (Spring's JobRestartException); one whose
    instance runs or completed since is left to the launch rules."""
    if execution.status not in RESTARTABLE:
        return (
            f"execution {execution.id} is {execution.status}: only a FAILED or STOPPED"
            " execution restarts"
        )
    if latest.id != execution.id and latest.status not in (*RUNNING, Status.COMPLETED):
        return (
            f"execution {execution.id} is not its instance's last: execution {latest.id}"
            f" ran on after it and is {latest.status}; only the last one restarts"
        )
    return None


def abandon_refusal(execution_id: int, status: Status) -> str | None:
    """Why an execution of `status` is not abandoned (None: it is): only a STOPPED,
    FAILED or STOPPING one is."""
    if status in ABANDONABLE:
        return None
    return (
        f"execution {execution_id} is {status}: only a STOPPED, FAILED or STOPPING"
        " execution is abandoned"
    )


STOPPABLE = (Status.STARTING, Status.STARTED)  # a STOPPING one is being stopped already


def allowed(execution: JobExecution, latest: int) -> tuple[str, ...]:
    """The operator's commands worth offering on `execution` now, its instance's newest
    execution being `latest` (the console's buttons): stop while it runs; restart
    (FAILED, STOPPED) and abandon (also STOPPING) on the newest only. `restart` refuses
    an older one (Spring restarts only the last); `abandon` takes one, as Spring's
    JobOperator does, though it changes nothing once its instance has run on."""
    found = ["stop"] if execution.status in STOPPABLE else []
    if execution.id == latest:
        found += ["restart"] if execution.status in RESTARTABLE else []
        found += ["abandon"] if execution.status in ABANDONABLE else []
    return tuple(found)


# Spring Batch's own launch rules (what the old service would refuse)


@dataclass(frozen=True)
class SpringRefusal:
    """Spring Batch's refusal of a launch: the exception, and the execution that caused it."""

    exception: str
    execution_id: int
    status: Status


def spring_launch_refusal(executions: Sequence[tuple[int, Status, bool]]) -> SpringRefusal | None:
    """What Spring Batch 5.2's `SimpleJobRepository.createJobExecution` throws for an
    instance with these executions (id, status, whether it has identifying parameters),
    newest first as its JdbcJobExecutionDao lists them; None: it would launch one. The
    first execution that matches a rule decides, as its loop does."""
    for execution_id, status, identifying in executions:
        if status in RUNNING:
            return SpringRefusal("JobExecutionAlreadyRunningException", execution_id, status)
        if status == Status.UNKNOWN:
            return SpringRefusal("JobRestartException", execution_id, status)
        if identifying and status in (Status.COMPLETED, Status.ABANDONED):
            return SpringRefusal("JobInstanceAlreadyCompleteException", execution_id, status)
    return None
