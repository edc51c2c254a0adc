"""The launcher's rules on the in-memory job repository: what an execution ends as (its
status, exit code, message), the slots of MAX_RUNNING_EXECUTIONS, the heartbeat as a lease
that reads a stop or a takeover, and a shutdown's interruption."""

from __future__ import annotations

import asyncio

import pytest

from app.model import COMPLETED_WITH_SKIPS, INTERRUPTED, AlreadyComplete, Status
from app.repository.memory import ManualClock
from app.runtime.launcher import ON_REQUEST, ON_SHUTDOWN, Launcher, RunningJob
from tests.fakes import ToyJob, memory_launcher
from tests.waits import waiting


async def ended(launcher: Launcher, run: RunningJob) -> tuple[Status, str, str]:
    await run.task
    found = await launcher.repository.get_execution(run.execution.id)
    assert found is not None
    return found.status, found.exit_code, found.exit_message


async def test_a_run_completes_with_its_step_counts() -> None:
    job = ToyJob(count=12, size=5)
    launcher = memory_launcher([job.spec()])
    execution = await launcher.run(job.spec(), {}, rerun=False)
    assert (execution.status, execution.exit_code, execution.exit_message) == (
        Status.COMPLETED,
        "COMPLETED",
        "",
    )
    assert [(s.name, s.status, s.write_count, s.commit_count) for s in execution.steps] == [
        ("toyStep", Status.COMPLETED, 12, 3)
    ]
    with pytest.raises(AlreadyComplete):
        await launcher.run(job.spec(), {}, rerun=False)
    again = await launcher.run(job.spec(), {}, rerun=True)
    assert (again.instance_id, again.status) == (execution.instance_id, Status.COMPLETED)


async def test_a_run_that_skipped_ends_completed_with_skips() -> None:
    job = ToyJob(count=10, size=5, bad={7})
    launcher = memory_launcher([job.spec()])
    execution = await launcher.run(job.spec(), {}, rerun=False)
    assert (execution.status, execution.exit_code, execution.exit_message) == (
        Status.COMPLETED,
        COMPLETED_WITH_SKIPS,
        "1 skipped; items 7: ItemRejected: items [7] refused",
    )


async def test_a_failed_run_restarts_from_its_checkpoint() -> None:
    job = ToyJob(count=20, size=5, bad={7})
    launcher = memory_launcher([job.spec()], SKIP_LIMIT=0)
    failed = await launcher.run(job.spec(), {}, rerun=False)
    assert (failed.status, failed.exit_code) == (Status.FAILED, "FAILED")
    assert failed.exit_message.startswith("SkipLimitExceeded: skip limit exceeded: 0 items")
    assert [(s.status, s.checkpoint, s.write_count) for s in failed.steps] == [
        (Status.FAILED, 5, 5)
    ]
    job.bad.clear()  # the data repaired
    parameters = await launcher.repository.get_parameters(failed.id)
    status, _, _ = await ended(launcher, await launcher.relaunch(job.spec(), parameters))
    assert status == Status.COMPLETED
    assert job.writer.written == list(range(1, 21))  # 1-5 once, from the checkpoint on


async def test_launches_past_the_slots_wait_starting_in_order() -> None:
    job = ToyJob(count=5, size=5, held={1})
    launcher = memory_launcher([job.spec()], MAX_RUNNING_EXECUTIONS=1)
    first = await launcher.launch(job.spec(), {"runDate": "2025-10-30"}, rerun=False)
    second = await launcher.launch(job.spec(), {"runDate": "2025-10-31"}, rerun=False)
    assert (first.execution.status, second.execution.status) == (
        Status.STARTED,
        Status.STARTING,
    )
    job.release.set()
    assert (await ended(launcher, first))[0] == Status.COMPLETED
    assert (await ended(launcher, second))[0] == Status.COMPLETED


async def test_a_queued_launch_stopped_before_its_slot_never_starts() -> None:
    job = ToyJob(count=5, size=5, held={1})
    launcher = memory_launcher([job.spec()], MAX_RUNNING_EXECUTIONS=1)
    first = await launcher.launch(job.spec(), {"runDate": "2025-10-30"}, rerun=False)
    second = await launcher.launch(job.spec(), {"runDate": "2025-10-31"}, rerun=False)
    second.request_stop(ON_REQUEST)
    assert await ended(launcher, second) == (Status.STOPPED, "STOPPED", ON_REQUEST)
    job.release.set()
    assert (await ended(launcher, first))[0] == Status.COMPLETED


async def test_the_heartbeat_reads_a_stop_asked_through_another_replica() -> None:
    job = ToyJob(count=1000, size=1, held={1})
    launcher = memory_launcher([job.spec()], HEARTBEAT_SECONDS=0.01)
    run = await launcher.launch(job.spec(), {}, rerun=False)
    assert await launcher.repository.request_stop(run.execution.id) == Status.STARTED
    async with waiting(5, "the heartbeat reading STOPPING"):
        await run.stop.wait()
    job.release.set()
    assert await ended(launcher, run) == (Status.STOPPED, "STOPPED", ON_REQUEST)


async def test_the_heartbeat_reads_a_takeover_as_a_lost_lease() -> None:
    job = ToyJob(count=1000, size=1, held={1})
    clock = ManualClock()
    launcher = memory_launcher([job.spec()], clock, HEARTBEAT_SECONDS=0.01)
    repository = launcher.repository
    run = await launcher.launch(job.spec(), {}, rerun=False)
    clock.advance(121)
    assert await repository.take_over(run.execution.id) == Status.FAILED
    async with waiting(5, "the heartbeat reading FAILED"):
        await run.stop.wait()
    assert run.stop_reason == "lease lost: the execution was marked FAILED"
    job.release.set()
    # the taker's end stands: the runner records nothing over it
    assert await ended(launcher, run) == (
        Status.FAILED,
        "FAILED",
        "abandoned: no heartbeat for 121 s (JOB_ABANDON_AFTER_SECONDS=120)",
    )


async def test_a_shutdown_interrupts_a_run_resumable_from_its_checkpoint() -> None:
    job = ToyJob(count=1000, size=1, held={2})
    launcher = memory_launcher([job.spec()])
    run = await launcher.launch(job.spec(), {}, rerun=False)
    async with waiting(5, "the second chunk held in its processing"):
        await job.holding.wait()
    shutdown = asyncio.create_task(launcher.shutdown(grace_seconds=5))
    async with waiting(5, "the shutdown's interruption"):
        await run.stop.wait()
    job.release.set()
    await shutdown
    assert await ended(launcher, run) == (Status.FAILED, INTERRUPTED, ON_SHUTDOWN)
    parameters = await launcher.repository.get_parameters(run.execution.id)
    summary = await launcher.repository.instance_summary("toyJob", parameters)
    assert summary is not None
    assert (summary.interrupted, summary.counted) == (True, 0)
    found = await launcher.repository.get_execution(run.execution.id)
    assert found is not None
    [step] = found.steps
    # the chunks started before the stop committed, in order: it resumes after them
    assert (step.status, step.checkpoint) == (Status.FAILED, step.commit_count)
    assert step.commit_count >= 2
