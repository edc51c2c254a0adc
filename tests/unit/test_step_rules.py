"""The step runner's rules on the in-memory job repository: chunks commit in read order
with their counts and checkpoint, items that fail on their own are skipped up to the skip
limit and not one more, availability faults are retried within the budget, a stop or a
lost lease read at a commit ends the step."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from app.config import StepPolicy
from app.model import JobExecution, Status, StepExecution
from app.pipeline.chunk import StepProgress
from app.pipeline.step import SkipLimitExceeded, StepRunner
from app.repository.memory import MemoryJobRepository
from app.repository.rules import LeaseLost
from tests.fakes import ToyJob, resources

POLICY = replace(
    resources().settings.step,
    workers=2,
    queue_size=2,
    retry_budget_seconds=1.0,
    retry_base_seconds=0.001,
    retry_max_wait_seconds=0.002,
    skip_limit=100,
)


async def started(repository: MemoryJobRepository) -> tuple[JobExecution, StepExecution]:
    execution = await repository.start_execution("toyJob", [], rerun_completed=False)
    return execution, await repository.start_step(execution, "toyStep")


async def run_step(
    job: ToyJob, policy: StepPolicy = POLICY, repository: MemoryJobRepository | None = None
) -> tuple[StepRunner, StepExecution, MemoryJobRepository]:
    """The toy step run to its end (or its failure, raised)."""
    repository = repository or MemoryJobRepository(abandon_after_seconds=120)
    execution, step = await started(repository)
    runner = StepRunner(job.definition(), job_name="toyJob", repository=repository, policy=policy)
    assert await runner.run(step) is True
    found = await repository.get_execution(execution.id)
    assert found is not None
    [recorded] = found.steps
    return runner, recorded, repository


async def test_chunks_commit_in_read_order_with_counts_and_checkpoint() -> None:
    job = ToyJob(count=12, size=5, filtered={4, 11})
    runner, step, _ = await run_step(job)
    assert job.writer.written == [1, 2, 3, 5, 6, 7, 8, 9, 10, 12]
    assert (step.read_count, step.write_count, step.filter_count, step.skip_count) == (
        12,
        10,
        2,
        0,
    )
    assert (step.commit_count, step.checkpoint) == (3, 12)
    assert (runner.progress.written, runner.progress.commits) == (10, 3)
    assert runner.skip_summary() == ""


async def test_items_that_fail_on_their_own_are_skipped_and_named() -> None:
    job = ToyJob(count=20, size=5, bad={3, 8, 13})
    runner, step, _ = await run_step(job, replace(POLICY, skip_limit=3))
    assert job.writer.written == [i for i in range(1, 21) if i not in {3, 8, 13}]
    assert (step.write_count, step.skip_count, step.commit_count) == (17, 3, 4)
    assert step.context["skipped"] == [3, 8, 13]
    assert runner.skip_summary() == (
        "3 skipped; items 3: ItemRejected: items [3] refused; items 8: ItemRejected: items"
        " [8] refused; items 13: ItemRejected: items [13] refused"
    )


async def test_one_skip_past_the_limit_fails_the_step() -> None:
    """SKIP_LIMIT skips pass; the next one fails the step, its chunk not committed."""
    job = ToyJob(count=20, size=5, bad={3, 8, 13})
    repository = MemoryJobRepository(abandon_after_seconds=120)
    execution, step = await started(repository)
    runner = StepRunner(
        job.definition(),
        job_name="toyJob",
        repository=repository,
        policy=replace(POLICY, skip_limit=2),
    )
    with pytest.raises(SkipLimitExceeded) as exceeded:
        await runner.run(step)
    assert str(exceeded.value) == (
        "skip limit exceeded: 2 items skipped (SKIP_LIMIT=2) and 1 more failed on their own;"
        " last error: ItemRejected('items [13] refused')"
    )
    found = await repository.get_execution(execution.id)
    assert found is not None
    assert [(s.commit_count, s.skip_count, s.checkpoint) for s in found.steps] == [(2, 2, 10)]


async def test_a_skip_limit_of_zero_skips_nothing() -> None:
    job = ToyJob(count=5, size=5, bad={2})
    repository = MemoryJobRepository(abandon_after_seconds=120)
    _, step = await started(repository)
    runner = StepRunner(
        job.definition(),
        job_name="toyJob",
        repository=repository,
        policy=replace(POLICY, skip_limit=0),
    )
    with pytest.raises(SkipLimitExceeded):
        await runner.run(step)
    assert job.writer.written == []


async def test_availability_faults_are_retried_within_the_budget() -> None:
    job = ToyJob(count=10, size=5, flaky=3)
    _, step, _ = await run_step(job, replace(POLICY, workers=1))
    assert job.writer.written == list(range(1, 11))
    assert (step.write_count, step.skip_count, step.commit_count) == (10, 0, 2)
    assert job.tries == 5  # 3 failed tries of the first chunk, then one try each


async def test_an_availability_fault_past_the_budget_fails_the_step() -> None:
    job = ToyJob(count=10, size=5, flaky=10**6)
    repository = MemoryJobRepository(abandon_after_seconds=120)
    _, step = await started(repository)
    runner = StepRunner(
        job.definition(),
        job_name="toyJob",
        repository=repository,
        policy=replace(POLICY, retry_budget_seconds=0.05),
    )
    with pytest.raises(ConnectionResetError):
        await runner.run(step)
    assert job.writer.written == []
    assert job.tries > 1


async def test_a_stop_requested_elsewhere_is_read_at_the_next_commit() -> None:
    job = ToyJob(count=1000, size=1)
    repository = MemoryJobRepository(abandon_after_seconds=120)
    execution, step = await started(repository)
    assert await repository.request_stop(execution.id) == Status.STARTED
    stop = asyncio.Event()
    runner = StepRunner(
        job.definition(),
        job_name="toyJob",
        repository=repository,
        policy=POLICY,
        progress=StepProgress(),
        stop=stop,
    )
    assert await runner.run(step) is False
    assert stop.is_set()
    # the chunks read before the stop commit, in order; nothing after them is read
    assert job.writer.written == list(range(1, runner.progress.commits + 1))
    assert runner.progress.commits < 10


async def test_a_lost_lease_fails_the_step_and_commits_nothing() -> None:
    job = ToyJob(count=10, size=5)
    repository = MemoryJobRepository(abandon_after_seconds=120)
    execution, step = await started(repository)
    repository.clock.advance(121)
    assert await repository.take_over(execution.id) == Status.FAILED
    runner = StepRunner(job.definition(), job_name="toyJob", repository=repository, policy=POLICY)
    with pytest.raises(LeaseLost):
        await runner.run(step)
    found = await repository.get_execution(execution.id)
    assert found is not None
    assert [(s.status, s.commit_count) for s in found.steps] == [(Status.FAILED, 0)]
