"""The step runner's rules on the in-memory job repository: chunks commit in read order
with their counts and checkpoint, items that fail on their own are skipped up to the skip
limit and not one more, availability faults are retried within the budget, a stop or a
lost lease read at a commit ends the step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import pytest

from app.config import StepPolicy
from app.model import JobExecution, Status, StepExecution
from app.pipeline.step import SkipLimitExceeded, StepRunner
from app.repository.memory import MemoryChunkTransaction, MemoryJobRepository
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


@dataclass
class Step:
    """The toy job's step, started in a repository of its own, and its runner."""

    repository: MemoryJobRepository
    execution: JobExecution
    step: StepExecution
    runner: StepRunner

    async def run(self) -> bool:
        return await self.runner.run(self.step)

    async def recorded(self) -> StepExecution:
        found = await self.repository.get_execution(self.execution.id)
        assert found is not None
        [step] = found.steps
        return step


async def started(job: ToyJob, policy: StepPolicy = POLICY) -> Step:
    repository = MemoryJobRepository(abandon_after_seconds=120)
    execution = await repository.start_execution("toyJob", [], rerun_completed=False)
    step = await repository.start_step(execution, "toyStep")
    runner = StepRunner(
        job.definition(),
        job_name="toyJob",
        repository=repository,
        policy=replace(policy, chunk_size=job.size),  # as the job's spec declares
        stop=asyncio.Event(),
    )
    return Step(repository, execution, step, runner)


async def test_chunks_commit_in_read_order_with_counts_and_checkpoint() -> None:
    job = ToyJob(count=12, size=5, filtered={4, 11})
    step = await started(job)
    assert await step.run() is True
    assert job.writer.written == [1, 2, 3, 5, 6, 7, 8, 9, 10, 12]
    recorded = await step.recorded()
    assert (recorded.read_count, recorded.write_count, recorded.filter_count) == (12, 10, 2)
    assert (recorded.skip_count, recorded.commit_count, recorded.checkpoint) == (0, 3, 12)
    assert (step.runner.progress.written, step.runner.progress.commits) == (10, 3)
    assert step.runner.skip_summary() == ""


async def test_items_that_fail_on_their_own_are_skipped_and_named() -> None:
    """SKIP_LIMIT skips pass."""
    job = ToyJob(count=20, size=5, bad={3, 8, 13})
    step = await started(job, replace(POLICY, skip_limit=3))
    assert await step.run() is True
    assert job.writer.written == [i for i in range(1, 21) if i not in {3, 8, 13}]
    recorded = await step.recorded()
    assert (recorded.write_count, recorded.skip_count, recorded.commit_count) == (17, 3, 4)
    assert recorded.context["skipped"] == [3, 8, 13]
    assert step.runner.skip_summary() == (
        "3 skipped; items 3: ItemRejected: items [3] refused; items 8: ItemRejected: items"
        " [8] refused; items 13: ItemRejected: items [13] refused"
    )


async def test_one_skip_past_the_limit_fails_the_step() -> None:
    """The next one fails the step, its chunk not committed."""
    job = ToyJob(count=20, size=5, bad={3, 8, 13})
    step = await started(job, replace(POLICY, skip_limit=2))
    with pytest.raises(SkipLimitExceeded) as exceeded:
        await step.run()
    assert str(exceeded.value) == (
        "skip limit exceeded: 2 items skipped (SKIP_LIMIT=2) and 1 more failed on their own;"
        " last error: ItemRejected('items [13] refused')"
    )
    recorded = await step.recorded()
    assert (recorded.commit_count, recorded.skip_count, recorded.checkpoint) == (2, 2, 10)


async def test_a_skip_limit_of_zero_skips_nothing() -> None:
    job = ToyJob(count=5, size=5, bad={2})
    step = await started(job, replace(POLICY, skip_limit=0))
    with pytest.raises(SkipLimitExceeded):
        await step.run()
    assert job.writer.written == []


async def test_availability_faults_are_retried_within_the_budget() -> None:
    job = ToyJob(count=10, size=5, flaky=3)
    step = await started(job, replace(POLICY, workers=1))
    assert await step.run() is True
    assert job.writer.written == list(range(1, 11))
    recorded = await step.recorded()
    assert (recorded.write_count, recorded.skip_count, recorded.commit_count) == (10, 0, 2)
    assert job.tries == 5  # 3 failed tries of the first chunk, then one try each


async def test_an_availability_fault_past_the_budget_fails_the_step() -> None:
    job = ToyJob(count=10, size=5, flaky=10**6)
    step = await started(job, replace(POLICY, retry_budget_seconds=0.05))
    with pytest.raises(ConnectionResetError):
        await step.run()
    assert job.writer.written == []
    assert job.tries > 1


async def test_a_stop_requested_elsewhere_is_read_at_the_next_commit() -> None:
    job = ToyJob(count=1000, size=1)
    step = await started(job)
    assert await step.repository.request_stop(step.execution.id) == Status.STARTED
    assert await step.run() is False
    assert step.runner.stop.is_set()
    # the chunks read before the stop commit, in order; nothing after them is read
    commits = step.runner.progress.commits
    assert job.writer.written == list(range(1, commits + 1))
    assert 1 <= commits < 10


async def test_a_lost_lease_fails_the_step_and_commits_nothing() -> None:
    job = ToyJob(count=10, size=5)
    step = await started(job)
    step.repository.clock.advance(121)
    assert await step.repository.take_over(step.execution.id) == Status.FAILED
    with pytest.raises(LeaseLost):
        await step.run()
    recorded = await step.recorded()
    assert (recorded.status, recorded.commit_count) == (Status.FAILED, 0)


class LosingAnswers(MemoryJobRepository):
    """Commits each chunk, but loses the answer of the first commit (a stall): the
    runner sees an availability fault though the commit took effect."""

    lost = False

    @asynccontextmanager
    async def chunk_transaction(self) -> AsyncIterator[MemoryChunkTransaction]:
        async with super().chunk_transaction() as unit:
            yield unit
        if not self.lost:
            self.lost = True
            raise ConnectionResetError("the commit's answer was lost")


async def test_a_commit_whose_answer_was_lost_counts_once() -> None:
    job = ToyJob(count=10, size=5)
    repository = LosingAnswers(abandon_after_seconds=120)
    execution = await repository.start_execution("toyJob", [], rerun_completed=False)
    step = await repository.start_step(execution, "toyStep")
    policy = replace(POLICY, chunk_size=job.size)
    runner = StepRunner(job.definition(), job_name="toyJob", repository=repository, policy=policy)
    assert await runner.run(step) is True
    found = await repository.get_execution(execution.id)
    assert found is not None
    assert [(s.read_count, s.write_count, s.commit_count) for s in found.steps] == [(10, 10, 2)]
    assert (runner.progress.written, runner.progress.commits) == (10, 2)
