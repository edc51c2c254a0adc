"""What each chunk commits (`app.pipeline.step`): its counts, the step's context (the
checkpoint, the first skipped items by cause, the writer's report) and the commit number,
chunk by chunk, through a job repository that records each call of its chunk commit;
retries of a commit and of a delivery; the metrics a run keeps. The rules of a whole run
on the in-memory job repository are in test_step_rules.py."""

from __future__ import annotations

import asyncio
import copy
import gc
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from app.config import StepPolicy
from app.metrics import (
    ITEMS,
    QUEUE_DEPTH,
    SPRING_BATCH_CHUNK_WRITE,
    SPRING_BATCH_ITEM_PROCESS,
    SPRING_BATCH_ITEM_READ,
)
from app.model import ChunkCounts, Status, StepExecution
from app.pipeline import source as source_module
from app.pipeline import step as step_module
from app.pipeline.chunk import Chunk, KeyRange, Processed, Rows, StepDefinition, StepProgress
from app.pipeline.step import SkipLimitExceeded, StepRunner
from app.repository.rules import AlreadyCommitted
from tests.fakes import resources

CONN = object()  # the connection of every chunk's transaction
NAMES = itertools.count()


class Bad(Exception):
    """A data fault."""


class Away(ConnectionError):
    """An availability fault."""


def policy(*, skip_limit: int = 10, workers: int = 2, budget: float = 5.0) -> StepPolicy:
    return StepPolicy(
        chunk_size=2,
        workers=workers,
        queue_size=2,
        fetch_rows=10,
        retry_budget_seconds=budget,
        retry_base_seconds=0.001,
        retry_max_wait_seconds=0.001,
        skip_limit=skip_limit,
    )


class Repository:
    """The job repository's chunk transaction: each commit recorded; `answers` in turn (a
    Status, or an exception to raise), then STARTED."""

    def __init__(self, *answers: Status | BaseException) -> None:
        self.answers = list(answers)
        self.commits: list[tuple[int, ChunkCounts, dict[str, Any], int]] = []
        self.connection = CONN

    @asynccontextmanager
    async def chunk_transaction(self) -> AsyncIterator[Repository]:
        yield self

    async def commit_chunk(
        self, step_id: int, counts: ChunkCounts, context: dict, commits: int
    ) -> Status:
        self.commits.append((step_id, counts, copy.deepcopy(context), commits))
        answer = self.answers.pop(0) if self.answers else Status.STARTED
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Writer:
    """Records what it was given; `report` is what it says in the context."""

    def __init__(self, report: dict[str, int] | None = None) -> None:
        self.delivered: list[list[int]] = []
        self.written: list[list[int]] = []
        self.keys: list[KeyRange] = []  # of each write
        self._report = report or {}
        self.deliver_faults: list[BaseException] = []

    async def deliver(self, output: list[int]) -> None:
        if self.deliver_faults:
            raise self.deliver_faults.pop(0)
        self.delivered.append(output)

    async def write(self, conn: object, output: list[int], keys: KeyRange) -> None:
        assert conn is CONN
        self.written.append(output)
        self.keys.append(keys)

    def report(self) -> dict[str, int]:
        return dict(self._report)


async def batches(*lists: list[int], fault: Exception | None = None) -> AsyncIterator[list[int]]:
    for items in lists:
        yield items
    if fault is not None:
        raise fault


def reading(*chunks: list[int]) -> Callable[[Any], Awaitable[AsyncIterator[list[int]]]]:
    """The items of `chunks` after the checkpoint, in one batch."""

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        return batches([i for c in chunks for i in c if checkpoint is None or i > checkpoint])

    return read


def cut_as(*chunks: list[int], size: int) -> Callable[[int], int]:
    """The weight that makes the runtime cut the chunks as listed: the last item of each
    weighs a whole chunk, the others nothing."""
    ends = {items[-1] for items in chunks}
    return lambda item: size if item in ends else 0


def failing_on(*bad: int, filter_even: bool = False) -> Callable:
    """Processing that fails on each `bad` item with Bad("bad <item>"); keeps the odd
    items only if `filter_even`."""

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        for item in chunk.items:
            if item in bad:
                raise Bad(f"bad {item}")
        kept = [i for i in chunk.items if i % 2 or not filter_even]
        return Processed(kept, filtered=len(chunk.items) - len(kept))

    return process


def runner(
    *chunks: list[int],
    process: Callable | None = None,
    repository: Repository | None = None,
    writer: Writer | None = None,
    step_policy: StepPolicy | None = None,
    **options: Any,
) -> StepRunner:
    step_policy = step_policy or policy()
    definition = StepDefinition(
        name=f"unitStep{next(NAMES)}",
        read=reading(*chunks),
        process=process or failing_on(),
        writer=writer or Writer(),
        item_key=lambda item: item,
        item_label="member ids",
        weight=cut_as(*chunks, size=step_policy.chunk_size),
        chunk_cap=1000,
    )
    return StepRunner(
        definition,
        job_name="unitJob",
        repository=repository or Repository(),  # type: ignore[arg-type]
        policy=step_policy,
        **options,
    )


def execution(checkpoint: Any = None) -> StepExecution:
    return StepExecution(
        id=5, job_execution_id=9, name="s", status=Status.STARTED, checkpoint=checkpoint
    )


def counts(read: int, written: int, filtered: int = 0, skipped: int = 0) -> ChunkCounts:
    return ChunkCounts(read=read, written=written, filtered=filtered, skipped=skipped)


def items_counted(run: StepRunner) -> dict[str, float]:
    return {
        outcome: ITEMS.labels("unitJob", run.definition.name, outcome)._value.get()
        for outcome in ("read", "written", "filtered", "skipped")
    }


async def test_each_chunk_commits_its_counts_and_checkpoint_in_read_order() -> None:
    repository, writer = Repository(), Writer()
    run = runner(
        [1, 2],
        [3, 4],
        [5],
        process=failing_on(filter_even=True),
        repository=repository,
        writer=writer,
    )

    assert await run.run(execution()) is True

    assert repository.commits == [
        (5, counts(2, 1, filtered=1), {"checkpoint": 2}, 0),
        (5, counts(2, 1, filtered=1), {"checkpoint": 4}, 1),
        (5, counts(1, 1), {"checkpoint": 5}, 2),
    ]
    assert writer.delivered == writer.written == [[1], [3], [5]]
    progress = run.progress
    assert (progress.read, progress.written, progress.filtered, progress.skipped) == (5, 3, 2, 0)
    assert progress.commits == 3
    assert items_counted(run) == {"read": 5, "written": 3, "filtered": 2, "skipped": 0}
    assert run.skip_summary() == ""


async def test_a_run_resumes_after_its_checkpoint() -> None:
    repository = Repository()
    run = runner([1, 2], [3, 4], [5], repository=repository)

    assert await run.run(execution(checkpoint=2)) is True

    assert [context for _, _, context, _ in repository.commits] == [
        {"checkpoint": 4},
        {"checkpoint": 5},
    ]


async def test_the_timers_count_the_items_processed_and_the_chunks_written() -> None:
    run = runner([1, 2], [3, 4], [5])
    step = run.definition.name

    await run.run(execution())

    def count(timer: Any) -> int:
        return timer.labels("unitJob", step, "SUCCESS").figures()[0]

    assert count(SPRING_BATCH_ITEM_READ) == 5 + 1  # the read that finds the end counts one
    assert count(SPRING_BATCH_ITEM_PROCESS) == 5
    assert count(SPRING_BATCH_CHUNK_WRITE) == 3


async def test_the_writer_s_report_is_kept_in_the_context() -> None:
    repository = Repository()
    await runner([1], repository=repository, writer=Writer({"published": 4})).run(execution())

    assert repository.commits[0][2] == {"checkpoint": 1, "messages": {"published": 4}}


async def test_an_item_that_fails_on_its_own_is_skipped_and_named_in_the_context() -> None:
    repository = Repository()
    run = runner([1, 2], [3, 4], [5, 6], process=failing_on(3, 6), repository=repository)

    assert await run.run(execution()) is True

    first = {"cause": "Bad: bad 3", "keys": [3]}
    second = {"cause": "Bad: bad 6", "keys": [6]}
    assert repository.commits == [
        (5, counts(2, 2), {"checkpoint": 2}, 0),
        (5, counts(2, 1, skipped=1), {"checkpoint": 4, "skipped": [3], "skipCauses": [first]}, 1),
        (
            5,
            counts(2, 1, skipped=1),
            {"checkpoint": 6, "skipped": [3, 6], "skipCauses": [first, second]},
            2,
        ),
    ]
    assert (run.progress.written, run.progress.skipped) == (4, 2)
    assert items_counted(run) == {"read": 6, "written": 4, "filtered": 0, "skipped": 2}
    assert run.skip_summary() == "2 skipped; member ids 3: Bad: bad 3; member ids 6: Bad: bad 6"


async def test_as_many_skips_as_the_limit_pass() -> None:
    run = runner([1, 2], [3, 4], process=failing_on(1, 2, 4), step_policy=policy(skip_limit=3))

    assert await run.run(execution()) is True
    assert run.progress.skipped == 3
    assert run.skip_summary() == (
        "3 skipped; member ids 1, 2: Bad: bad 2; member ids 4: Bad: bad 4"
    )


async def test_only_the_first_skipped_keys_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_module, "SKIPPED_KEYS_KEPT", 3)
    repository = Repository()
    run = runner([1, 2], [3, 4], [5, 6], process=failing_on(1, 2, 4, 5, 6), repository=repository)

    await run.run(execution())

    assert [context.get("skipped") for _, _, context, _ in repository.commits] == [
        [1, 2],
        [1, 2, 4],
        [1, 2, 4],
    ]
    assert repository.commits[-1][2]["skipCauses"] == [
        {"cause": "Bad: bad 2", "keys": [1, 2]},
        {"cause": "Bad: bad 4", "keys": [4]},
    ]
    assert run.skip_summary() == (
        "5 skipped (the first 3 named); member ids 1, 2: Bad: bad 2; member ids 4: Bad: bad 4"
    )


async def test_a_skip_s_cause_is_cut_to_its_first_characters() -> None:
    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        raise Bad("x" * 300)

    repository = Repository()
    await runner([1], process=process, repository=repository).run(execution())

    cause = repository.commits[0][2]["skipCauses"][0]["cause"]
    assert cause == "Bad: " + "x" * 195
    assert len(cause) == step_module.SKIP_CAUSE_CHARACTERS


async def test_the_skip_summary_formats_the_count_with_thousands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = runner([1], process=failing_on(1))
    await run.run(execution())
    run.progress.skipped = 1234

    assert run.skip_summary() == "1,234 skipped (the first 1 named); member ids 1: Bad: bad 1"


async def test_a_stop_asked_calls_the_runner_s_stop_requested() -> None:
    asked: list[int] = []
    run = runner(
        [1],
        [2],
        repository=Repository(Status.STARTED, Status.STOPPING),
        stop_requested=lambda: asked.append(1),
    )

    assert await run.run(execution()) is True
    assert asked == [1]
    assert not run.stop.is_set()


async def test_a_chunk_committed_already_is_not_committed_again_and_the_run_goes_on() -> None:
    repository = Repository(AlreadyCommitted("step 5 is past checkpoint 2"))
    run = runner([1, 2], [3], repository=repository)

    assert await run.run(execution()) is True

    assert len(repository.commits) == 2
    assert run.progress.commits == 2
    assert run.progress.written == 3


async def test_a_commit_is_retried_after_an_availability_fault_and_counted_once() -> None:
    repository = Repository(Away("database away"))
    run = runner([1, 2], repository=repository)

    assert await run.run(execution()) is True

    assert repository.commits == [(5, counts(2, 2), {"checkpoint": 2}, 0)] * 2
    assert (run.progress.commits, run.progress.written) == (1, 2)
    assert run.progress.retries == []


async def test_a_commit_that_keeps_failing_fails_the_step_with_its_fault() -> None:
    fault = Away("database away")
    repository = Repository(*[fault] * 1000)
    run = runner([1, 2], repository=repository, step_policy=policy(budget=0.05))

    with pytest.raises(Away) as raised:
        await run.run(execution())
    assert raised.value is fault
    assert run.progress.commits == 0


async def test_a_delivery_is_retried_without_processing_again() -> None:
    processed: list[list[int]] = []

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        processed.append(chunk.items)
        return Processed(chunk.items)

    writer = Writer()
    writer.deliver_faults = [Away("broker away"), Away("broker away")]
    run = runner([1, 2], process=process, writer=writer)

    assert await run.run(execution()) is True
    assert processed == [[1, 2]]
    assert writer.delivered == [[1, 2]]


async def test_a_chunk_s_retries_leave_the_progress_once_it_is_done() -> None:
    faults = [Away("peer away")]
    seen: list[int] = []

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        if faults:
            raise faults.pop()
        seen.append(len(run.progress.retries))
        return Processed(chunk.items)

    run = runner([1, 2], process=process)

    await run.run(execution())
    assert seen == [1]
    assert run.progress.retries == []


async def test_a_reader_s_failure_fails_the_step_as_itself() -> None:
    fault = RuntimeError("the stream broke")

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        return batches([1, 2], fault=fault)

    run = runner()
    run.definition = StepDefinition(
        name=run.definition.name,
        read=read,
        process=failing_on(),
        writer=Writer(),
        item_key=lambda item: item,
    )

    with pytest.raises(RuntimeError) as raised:
        await run.run(execution())
    assert raised.value is fault


async def test_the_queue_depths_are_gauges_of_the_execution_while_it_runs() -> None:
    seen: list[set[str]] = []

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        seen.append(
            {
                (job, queue)
                for job, execution_id, queue in QUEUE_DEPTH._metrics
                if execution_id == "9"
            }
        )
        return Processed(chunk.items)

    await runner([1], process=process).run(execution())

    assert seen == [{("unitJob", "enrich"), ("unitJob", "commit")}]
    assert not any(execution_id == "9" for _, execution_id, _ in QUEUE_DEPTH._metrics)


async def test_a_runner_s_own_progress_and_stop_are_those_given() -> None:
    progress, stop = StepProgress(), asyncio.Event()
    run = runner([1], progress=progress, stop=stop)

    assert run.progress is progress and run.stop is stop
    run.stop_requested()
    assert stop.is_set()


def test_a_failed_step_raises_the_failure_that_brought_its_tasks_down() -> None:
    """Not the cancellations it caused, nor a group: the first failure, however nested."""
    fault = Bad("bad 3")
    cancelled = asyncio.CancelledError()
    assert step_module._first_cause(BaseExceptionGroup("step", [cancelled, fault])) is fault
    nested = BaseExceptionGroup("step", [BaseExceptionGroup("workers", [cancelled, fault])])
    assert step_module._first_cause(nested) is fault
    only = BaseExceptionGroup("step", [cancelled, asyncio.CancelledError()])
    assert step_module._first_cause(only) is cancelled


async def test_a_chunk_s_and_a_commit_s_retries_are_named_in_the_progress() -> None:
    """What the console shows during an outage: which work of which step retries."""
    seen: list[list[str]] = []
    faults = [Away("peer away")]

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        if faults:
            raise faults.pop()
        seen.append([retry.what for retry in run.progress.retries])
        return Processed(chunk.items)

    class Recording(Repository):
        async def commit_chunk(self, *args: Any) -> Status:
            seen.append([retry.what for retry in run.progress.retries])
            return await super().commit_chunk(*args)

    run = runner([1, 2], process=process, repository=Recording(Away("database away")))
    step = run.definition.name

    await run.run(execution())

    assert seen == [[f"step {step}: a chunk"], [], [f"step {step}: a commit"]]


async def test_the_first_chunk_after_a_restart_starts_after_the_checkpoint() -> None:
    afters: list[object] = []

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        afters.append(chunk.after)
        return Processed(chunk.items)

    await runner([1, 2], [3, 4], [5], process=process, step_policy=policy(workers=1)).run(
        execution(checkpoint=2)
    )

    assert afters == [2, 4]


async def test_a_chunk_isolates_only_as_many_failures_as_the_step_has_skips_left() -> None:
    """Chunk [1, 2] skips both items (SKIP_LIMIT=2); in [3, 4, 5, 6], once 3 failed on its
    own no item is tried alone: the limit fails the step with that one."""
    tried: list[list[int]] = []

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        await asyncio.sleep(0)  # the sink commits the chunk before
        tried.append(chunk.items)
        bad = [item for item in chunk.items if item in (1, 2, 3, 6)]
        if bad:
            raise Bad(f"bad {bad[0]}")
        return Processed(chunk.items)

    run = runner([1, 2], [3, 4, 5, 6], process=process, step_policy=policy(skip_limit=2, workers=1))

    with pytest.raises(SkipLimitExceeded) as raised:
        await run.run(execution())

    assert str(raised.value) == (
        "skip limit exceeded: 2 items skipped (SKIP_LIMIT=2) and 1 more failed on their own;"
        " last error: Bad('bad 3')"
    )
    assert [3] in tried and [4] not in tried


async def test_a_failed_step_cancels_the_chunks_still_in_flight() -> None:
    """Chunk 1 held, chunk 2 failing past its budget, chunk 3 waiting: the step fails with
    chunk 2's fault, chunk 3's pending result cancelled."""
    release = asyncio.Event()
    fault = Away("peer away")

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        if chunk.items == [1]:
            await release.wait()
        if chunk.items == [2]:
            raise fault
        return Processed(chunk.items)

    run = runner([1], [2], [3], process=process, step_policy=policy(budget=0.02))

    with pytest.raises(Away) as raised:
        await run.run(execution())

    assert raised.value is fault


async def test_the_reader_stays_at_most_the_queues_ahead_of_a_held_chunk() -> None:
    """Chunk 1 held by its worker (2 workers, QUEUE_SIZE 2): the sink waits on it, and
    the reader reads until the commit queue (QUEUE_SIZE + WORKERS = 4) is full behind it:
    5 chunks counted read, the job's reader asked for the 6th item only, whose chunk waits
    for room; nothing read is lost once chunk 1 goes through."""
    asked: list[int] = []  # the items the job's reader gave, one per batch
    while_held: list[tuple[int, int]] = []

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        async def one_by_one() -> AsyncIterator[list[int]]:
            for item in range(1, 21):
                asked.append(item)
                yield [item]

        return one_by_one()

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        if chunk.items == [1]:
            # Every other task has its turns meanwhile (no clock: the loop's turns only);
            # a reader not bound by the queues reads all 20 chunks in far fewer.
            for _ in range(200):
                await asyncio.sleep(0)
            while_held.append((run.progress.read, len(asked)))
        return Processed(chunk.items)

    repository = Repository()
    run = runner(*([item] for item in range(1, 21)), process=process, repository=repository)
    run.definition = replace(run.definition, read=read)

    assert await run.run(execution()) is True

    assert while_held == [(1 + 4, 6)]
    assert [context["checkpoint"] for _, _, context, _ in repository.commits] == list(range(1, 21))
    assert run.progress.read == 20


async def test_a_stop_after_the_last_read_still_ends_the_run_short() -> None:
    """The reader reached the end of the items, then the stop came while chunk 1 was
    processed (1 worker): chunk 2, read, is not started, and the run says it did not
    reach the end (the launcher's STOPPED, not COMPLETED)."""
    ended = asyncio.Event()

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        async def two() -> AsyncIterator[list[int]]:
            yield [1]
            yield [2]
            ended.set()  # the runtime asked past the last item: the read is over

        return two()

    async def process(chunk: Chunk[int]) -> Processed[list[int]]:
        if chunk.items == [1]:
            await ended.wait()
            run.stop.set()
        return Processed(chunk.items)

    repository = Repository()
    run = runner([1], [2], process=process, repository=repository, step_policy=policy(workers=1))
    run.definition = replace(run.definition, read=read)

    assert await run.run(execution()) is False

    assert run.progress.read == 2
    assert [context["checkpoint"] for _, _, context, _ in repository.commits] == [1]


async def test_a_read_of_rows_is_streamed_from_the_step_s_database_fetch_rows_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runtime streams a Rows read (`app.edges.db.stream_merged`, against MariaDB in
    the integration tests) from the database the runner was given, FETCH_ROWS at a time,
    with the read's session; each batch of rows made items by the read."""
    database = resources().settings.database
    streamed: list[tuple[object, object, int, object]] = []

    async def stream_merged(
        settings: object, queries: object, fetch_rows: int, *, session: object
    ) -> AsyncIterator[list[tuple]]:
        streamed.append((settings, queries, fetch_rows, session))
        yield [(1,), (2,), (3,)]
        yield [(4,)]

    monkeypatch.setattr(source_module, "stream_merged", stream_merged)
    queries = [("SELECT id FROM t WHERE id > %s ORDER BY id", (0,))]

    async def read(checkpoint: Any) -> Rows[int]:
        return Rows(queries, lambda rows: [row[0] * 10 for row in rows], session=("SET x=1",))

    writer = Writer()
    run = runner(writer=writer, database=database)
    run.definition = replace(run.definition, read=read, weight=None)

    assert await run.run(execution()) is True

    assert streamed == [(database, queries, 10, ("SET x=1",))]
    assert writer.written == [[10, 20], [30, 40]]


async def test_the_read_timer_counts_each_read_within_the_run_s_time() -> None:
    """Each chunk's read as its items and the read that finds the end as one, their time
    a share of the run's."""
    run = runner([1, 2], [3, 4], [5])
    started = time.perf_counter()

    await run.run(execution())

    elapsed = time.perf_counter() - started
    count, total, longest = SPRING_BATCH_ITEM_READ.labels(
        "unitJob", run.definition.name, "SUCCESS"
    ).figures()
    assert count == 5 + 1
    assert 0 <= longest <= total <= elapsed


async def test_a_read_that_fails_counts_as_one_failure_within_the_run_s_time() -> None:
    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        return batches([1, 2], fault=RuntimeError("the stream broke"))

    run = runner([1, 2])
    run.definition = replace(run.definition, read=read)
    started = time.perf_counter()

    with pytest.raises(RuntimeError):
        await run.run(execution())

    elapsed = time.perf_counter() - started
    timer = SPRING_BATCH_ITEM_READ
    count, total, _ = timer.labels("unitJob", run.definition.name, "FAILURE").figures()
    assert (count, timer.labels("unitJob", run.definition.name, "SUCCESS").figures()[0]) == (1, 2)
    assert 0 <= total <= elapsed


async def test_each_part_is_written_with_its_key_range_the_final_one_open() -> None:
    """Chunk [1, 2, 3, 4] halved after item 2's data fault: its parts [1] and [3, 4] are
    written bounded by the keys around them; the final chunk [5] covers all after 4."""
    writer = Writer()
    run = runner([1, 2, 3, 4], [5], process=failing_on(2), writer=writer)
    run.definition = replace(run.definition, final_chunk=True)

    assert await run.run(execution()) is True

    assert writer.written == [[1], [3, 4], [5]]
    assert writer.keys == [KeyRange(None, 1), KeyRange(2, 4), KeyRange(4, None)]


async def test_a_failed_step_cancels_its_uncommitted_chunks_and_reads_their_faults() -> None:
    """What the commit queue holds when a step fails: a chunk in flight is cancelled, and
    another worker's fault is read, so that asyncio reports no 'Future exception was never
    retrieved' once the future is collected."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    pending, failed = loop.create_future(), loop.create_future()
    failed.set_exception(Away("peer away for 2"))
    commits: asyncio.Queue[Any] = asyncio.Queue()
    for entry in ((Chunk([1], 1), pending), (Chunk([2], 2), failed), None):
        commits.put_nowait(entry)

    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    try:
        step_module._discard_uncommitted(commits)
        del failed
        gc.collect()
    finally:
        loop.set_exception_handler(previous)

    assert pending.cancelled() and commits.empty()
    assert reported == []


async def test_a_read_of_rows_without_the_database_s_settings_fails_the_step_saying_so() -> None:
    async def read(checkpoint: Any) -> Rows[int]:
        return Rows([("SELECT 1", ())], lambda rows: [row[0] for row in rows])

    run = runner()
    run.definition = replace(run.definition, read=read)

    with pytest.raises(RuntimeError) as raised:
        await run.run(execution())
    assert str(raised.value) == "a step that reads rows needs the database's settings"
