"""The chunk step against the real database: order, retry, skip, skip limit, stop, backpressure."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from asyncmy.connection import Connection
from asyncmy.pool import Pool

from app.concurrency import StrayCancellation
from app.config import Settings
from app.edges.db import fetch_all, stream_rows
from app.errors import AvailabilityError, DataError, NotAboutItems
from app.model import JobParameter
from app.pipeline.chunk import Chunk, Processed, StepDefinition, StepProgress
from app.pipeline.step import SkipLimitExceeded, StepRunner
from app.pipeline.writers import DatabaseWriter
from app.repository.mariadb import MariaDbJobRepository
from tests.reliability.support import until
from tests.settings import make_settings
from tests.waits import waiting

ITEMS = [1, 2, 3, 4, 5, 6, 7]  # cut in chunks of 2: [1, 2], [3, 4], [5, 6], [7]


@pytest.fixture
async def scratch(pool: Pool) -> Pool:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("CREATE TABLE IF NOT EXISTS step_items (item INT NOT NULL)")
        await cur.execute("TRUNCATE TABLE step_items")
    return pool


async def batches(*lists: list[int]) -> AsyncIterator[list[int]]:
    for items in lists:
        yield items


async def items_after(checkpoint: Any) -> AsyncIterator[list[int]]:
    return batches([item for item in ITEMS if checkpoint is None or item > checkpoint])


async def write_items(conn: Connection, output: list[int]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO step_items (item) VALUES (%s)", [(i,) for i in output])


Process = Callable[[list[int]], Awaitable[Processed[list[int]]]]


def of_items(process: Process) -> Callable[[Chunk[int]], Awaitable[Processed[list[int]]]]:
    return lambda chunk: process(chunk.items)


def definition(
    process: Process,
    read: Callable[[Any], Awaitable[AsyncIterator[list[int]]]] = items_after,
    write: Callable[[Connection, list[int]], Awaitable[None]] = write_items,
) -> StepDefinition:
    return StepDefinition(
        name="testStep",
        read=read,
        process=of_items(process),
        writer=DatabaseWriter(write),
        item_key=lambda item: item,
    )


async def keep_odd(items: list[int]) -> Processed[list[int]]:
    kept = [i for i in items if i % 2]
    return Processed(output=kept, filtered=len(items) - len(kept))


async def run(
    pool: Pool,
    settings: Settings,
    step_definition: StepDefinition,
    *,
    stop: asyncio.Event | None = None,
    chunk_size: int = 2,
) -> tuple[bool | BaseException, Any, StepRunner]:
    """The step run once, in chunks of `chunk_size`: its outcome (or failure), its step
    execution as recorded, the runner (its live counts, its summary of skips)."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    execution = await repository.start_execution(
        "testJob",
        [JobParameter("runDate", "java.time.LocalDate", "2025-01-01")],
        rerun_completed=True,
    )
    step = await repository.start_step(execution, "testStep")
    runner = StepRunner(
        step_definition,
        job_name="testJob",
        repository=repository,
        policy=replace(settings.step, chunk_size=chunk_size),
        progress=StepProgress(),
        stop=stop,
    )
    try:
        outcome: bool | BaseException = await runner.run(step)
    except Exception as exc:
        outcome = exc
    recorded = await repository.get_execution(execution.id)
    assert recorded is not None
    return outcome, recorded.steps[0], runner


async def items_written(pool: Pool) -> list[int]:
    return [row[0] for row in await fetch_all(pool, "SELECT item FROM step_items ORDER BY item")]


async def test_chunks_commit_in_read_order_with_counts_and_checkpoint(scratch: Pool) -> None:
    delays = {1: 0.2, 3: 0.0, 5: 0.1, 7: 0.0}  # the first chunk is the slowest
    order: list[int] = []

    async def slow_first(items: list[int]) -> Processed[list[int]]:
        await asyncio.sleep(delays[items[0]])
        return await keep_odd(items)

    async def recording_write(conn: Connection, output: list[int]) -> None:
        order.append(output[0])
        await write_items(conn, output)

    step_definition = definition(slow_first, write=recording_write)
    outcome, step, runner = await run(scratch, make_settings(ENRICH_WORKERS=4), step_definition)
    assert outcome is True
    assert order == [1, 3, 5, 7]
    assert await items_written(scratch) == [1, 3, 5, 7]
    assert (step.read_count, step.write_count, step.filter_count, step.skip_count) == (7, 4, 3, 0)
    assert (step.commit_count, step.checkpoint) == (4, 7)
    progress = runner.progress
    assert (progress.read, progress.written, progress.filtered) == (7, 4, 3)


async def test_transient_error_is_retried_then_succeeds(scratch: Pool) -> None:
    attempts: dict[int, int] = {}

    async def flaky(items: list[int]) -> Processed[list[int]]:
        attempts[items[0]] = attempts.get(items[0], 0) + 1
        if items[0] == 3 and attempts[3] < 3:
            raise AvailabilityError("store service 503")
        return await keep_odd(items)

    outcome, step, _ = await run(scratch, make_settings(RETRY_BUDGET_SECONDS=5), definition(flaky))
    assert outcome is True
    assert attempts == {1: 1, 3: 3, 5: 1, 7: 1}
    assert (step.write_count, step.skip_count) == (4, 0)
    assert await items_written(scratch) == [1, 3, 5, 7]


async def test_an_outage_past_the_retry_budget_fails_the_step_never_skips(
    scratch: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    async def down_for_three(items: list[int]) -> Processed[list[int]]:
        if items[0] == 3:
            attempts.append(3)
            raise AvailabilityError("store service 503")
        return await keep_odd(items)

    with caplog.at_level(logging.WARNING):
        outcome, step, _ = await run(
            scratch,
            make_settings(RETRY_BUDGET_SECONDS=0.5, SKIP_LIMIT=10, ENRICH_WORKERS=1),
            definition(down_for_three),
        )
    assert isinstance(outcome, AvailabilityError) and "store service 503" in str(outcome)
    assert len(attempts) >= 2, "retried within the budget"
    # the chunk before the outage committed; nothing was skipped or written after it
    assert (step.checkpoint, step.skip_count, step.write_count) == (2, 0, 1)
    assert await items_written(scratch) == [1]
    gave_up = [r for r in caplog.records if "RETRY_BUDGET_SECONDS=0.5" in r.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].levelno == logging.ERROR


async def test_a_failed_step_leaves_no_chunk_s_outcome_unread(
    scratch: Pool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker meets the outage; the first chunk in read order fails the step, and
    the later ones, already failed, are read and dropped: no 'Future exception was never
    retrieved' from asyncio (an ERROR with a traceback for each)."""

    async def down_from_three(items: list[int]) -> Processed[list[int]]:
        if items[0] == 3:
            await asyncio.sleep(0.6)  # fails last: the others have given up by then
        if items[0] >= 3:
            raise AvailabilityError("store service 503")
        return await keep_odd(items)

    # The retry's log records would keep the futures alive, through their arguments.
    monkeypatch.setattr(logging.getLogger("app.pipeline.retry"), "disabled", True)
    outcome, step, _ = await run(
        scratch,
        make_settings(RETRY_BUDGET_SECONDS=0.3, ENRICH_WORKERS=4),
        definition(down_from_three),
    )
    assert isinstance(outcome, AvailabilityError)
    assert step.checkpoint == 2
    del outcome  # its traceback holds the step's frames, and so the chunks' futures
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_a_cancellation_no_one_asked_of_a_worker_fails_the_step_never_hangs(
    scratch: Pool,
) -> None:
    """The third chunk's processing awaits a future another task shares and cancels (as
    PeerClient's shared import was, by a token lookup's cancelled sibling). Before: its
    worker died of the CancelledError, and the sink waited for that chunk forever."""
    loop = asyncio.get_running_loop()
    shared: asyncio.Future[None] = loop.create_future()

    async def awaits_shared_at_five(items: list[int]) -> Processed[list[int]]:
        if items[0] == 5:

            async def before_committed() -> bool:
                return await items_written(scratch) == [1, 3]

            await until(before_committed, within=10, what="the two chunks before it committed")
            loop.call_soon(shared.cancel)
            await shared
        return await keep_odd(items)

    async with waiting(30, "the step's end (never, before)"):
        outcome, step, _ = await run(
            scratch, make_settings(ENRICH_WORKERS=1), definition(awaits_shared_at_five)
        )
    assert type(outcome) is StrayCancellation
    assert (step.checkpoint, step.write_count) == (4, 2)
    assert await items_written(scratch) == [1, 3]


async def test_a_data_fault_skips_only_the_item_that_fails_on_its_own_and_names_it(
    scratch: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[list[int]] = []

    async def malformed(items: list[int]) -> Processed[list[int]]:
        if 3 in items:
            attempts.append(items)
            raise DataError("answer without data")
        return await keep_odd(items)

    with caplog.at_level(logging.WARNING):
        outcome, step, _ = await run(scratch, make_settings(SKIP_LIMIT=10), definition(malformed))
    assert outcome is True and attempts == [[3, 4], [3]]
    assert await items_written(scratch) == [1, 5, 7]
    # 4 went through on its own (filtered by the rule); 3 alone is skipped
    assert (step.read_count, step.write_count, step.filter_count, step.skip_count) == (7, 3, 3, 1)
    assert (step.checkpoint, step.commit_count, step.context["skipped"]) == (7, 4, [3])
    skipped = [r.getMessage() for r in caplog.records if " skipped " in r.getMessage()]
    assert skipped == ["step testStep skipped 1 items after DataError('answer without data');"
                       " member ids: [3]"]  # fmt: skip


async def test_the_first_skipped_items_are_named_with_their_cause(scratch: Pool) -> None:
    """Before: a run that skipped ended with an empty exit message; the cause was in a
    WARNING line only (issue 28)."""

    async def hundred_twenty(checkpoint: Any) -> AsyncIterator[list[int]]:
        return batches(list(range(1, 121)))

    async def odd_ones_fail(items: list[int]) -> Processed[list[int]]:
        if any(i % 2 for i in items):
            raise DataError(f"batch {(items[0] - 1) // 10} answered badly")
        return Processed(output=items)

    step_definition = definition(odd_ones_fail, read=hundred_twenty)
    outcome, step, runner = await run(
        scratch, make_settings(SKIP_LIMIT=100), step_definition, chunk_size=10
    )
    assert (outcome, step.skip_count, step.write_count) == (True, 60, 60)
    odd = list(range(1, 100, 2))  # the first 50 of the 60 skipped
    assert step.context["skipped"] == odd
    assert step.context["skipCauses"] == [
        {
            "cause": f"DataError: batch {batch} answered badly",
            "keys": odd[5 * batch : 5 * batch + 5],
        }
        for batch in range(10)
    ]
    assert runner.skip_summary() == "60 skipped (the first 50 named); " + "; ".join(
        f"member ids {', '.join(map(str, odd[5 * b : 5 * b + 5]))}: DataError: batch {b}"
        " answered badly"
        for b in range(10)
    )


def one_chunk(items: list[int]) -> Callable[[Any], Awaitable[AsyncIterator[list[int]]]]:
    """The items as one batch: one chunk (the step's `final_chunk` marks it final)."""

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        return batches(items)

    return read


def one_chunk_step(items: list[int], process: Process) -> StepDefinition:
    return StepDefinition(
        name="testStep",
        read=one_chunk(items),
        process=of_items(process),
        writer=DatabaseWriter(write_items),
        item_key=lambda item: item,
        final_chunk=True,
    )


async def test_the_parts_around_a_bad_item_are_chunks_of_their_own_committed_as_one(
    scratch: Pool,
) -> None:
    """A writer that replaces its chunk's key range sees each part's own range, and the
    bad item's range is nobody's: what an earlier run wrote for it stays."""
    parts: list[tuple[Any, Any, bool, list[int]]] = []

    async def seven_is_bad(chunk: Chunk[int]) -> Processed[list[int]]:
        if 7 in chunk.items:
            raise DataError("7 is malformed")
        parts.append((chunk.after, chunk.checkpoint, chunk.final, chunk.items))
        return Processed(output=chunk.items)

    step_definition = StepDefinition(
        name="testStep",
        read=one_chunk(list(range(1, 11))),
        process=seven_is_bad,
        writer=DatabaseWriter(write_items),
        item_key=lambda item: item,
        final_chunk=True,
    )
    outcome, step, _ = await run(
        scratch, make_settings(SKIP_LIMIT=10), step_definition, chunk_size=100
    )
    assert outcome is True
    # Tried breadth first (halves, then quarters...), committed in read order.
    assert sorted(parts, key=lambda part: part[1]) == [
        (None, 5, False, [1, 2, 3, 4, 5]),
        (5, 6, False, [6]),
        (7, 10, True, [8, 9, 10]),
    ]
    assert await items_written(scratch) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert (step.commit_count, step.checkpoint, step.write_count, step.skip_count) == (1, 10, 9, 1)


async def test_items_that_fail_only_together_are_not_skipped(scratch: Pool) -> None:
    async def three_with_four(items: list[int]) -> Processed[list[int]]:
        if {3, 4} <= set(items):
            raise DataError("batch refused")
        return Processed(output=items)

    outcome, step, _ = await run(scratch, make_settings(), definition(three_with_four))
    assert outcome is True
    assert await items_written(scratch) == [1, 2, 3, 4, 5, 6, 7]
    assert (step.write_count, step.skip_count, step.commit_count) == (7, 0, 4)


async def test_isolation_stops_once_the_skips_exceed_the_limit(scratch: Pool) -> None:
    """Three bad items of eight: 8 attempts find the third and stop, instead of trying
    every part of the chunk (13)."""
    attempts: list[list[int]] = []

    async def three_bad(items: list[int]) -> Processed[list[int]]:
        attempts.append(items)
        if {1, 2, 3} & set(items):
            raise DataError("garbage")
        return Processed(output=items)

    step_definition = one_chunk_step(list(range(1, 9)), three_bad)
    outcome, step, _ = await run(
        scratch, make_settings(SKIP_LIMIT=2), step_definition, chunk_size=100
    )
    assert isinstance(outcome, SkipLimitExceeded)
    assert str(outcome) == (
        "skip limit exceeded: 0 items skipped (SKIP_LIMIT=2) and 3 more failed on their own;"
        " last error: DataError('garbage')"
    )
    assert attempts == [
        [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8], [1, 2], [3, 4], [1], [2], [3]
    ]  # fmt: skip
    assert (step.commit_count, step.skip_count, step.write_count) == (0, 0, 0)
    assert await items_written(scratch) == []


async def test_a_fault_every_part_meets_alike_is_not_about_the_items(
    scratch: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer answering garbage for everything (issue 26): the chunk, its halves, its
    quarters and its eighths all fail alike, so the fault is not pinned on any item. It is
    retried as availability within the budget, then the step fails with it, nothing
    skipped (before: every item skipped, the run COMPLETED WITH SKIPS)."""
    attempts: list[list[int]] = []

    async def all_bad(items: list[int]) -> Processed[list[int]]:
        attempts.append(items)
        raise DataError("garbage")

    step_definition = one_chunk_step(list(range(1, 17)), all_bad)
    settings = make_settings(SKIP_LIMIT=100, RETRY_BUDGET_SECONDS=0.5)
    with caplog.at_level(logging.WARNING):
        outcome, step, _ = await run(scratch, settings, step_definition, chunk_size=100)
    assert isinstance(outcome, NotAboutItems)
    assert str(outcome) == "DataError: garbage (met alike by every part of a chunk)"
    first_round = [list(range(1, 17))]
    for size in (8, 4, 2):
        first_round += [list(range(i, i + size)) for i in range(1, 17, size)]
    assert attempts[:15] == first_round  # one round: never down to single items
    # Retried whole within the budget, round after round; the deadline may cut one in flight.
    assert len(attempts) > 15
    assert attempts == [first_round[i % 15] for i in range(len(attempts))]
    assert (step.skip_count, step.write_count, step.commit_count) == (0, 0, 0)
    assert await items_written(scratch) == []


async def test_skip_limit_fails_the_step_at_the_last_good_checkpoint(scratch: Pool) -> None:
    async def down_from_three(items: list[int]) -> Processed[list[int]]:
        if items[0] >= 3:
            raise DataError("down")
        return await keep_odd(items)

    outcome, step, _ = await run(
        scratch, make_settings(SKIP_LIMIT=3, ENRICH_WORKERS=1), definition(down_from_three)
    )
    assert isinstance(outcome, SkipLimitExceeded)
    # chunk [1, 2] written, chunk [3, 4] skipped (2 <= 3), chunk [5, 6] would make 4 > 3:
    # the message counts what the step counts
    assert str(outcome) == (
        "skip limit exceeded: 2 items skipped (SKIP_LIMIT=3) and 2 more failed on their own;"
        " last error: DataError('down')"
    )
    assert (step.checkpoint, step.skip_count, step.write_count) == (4, 2, 1)
    assert await items_written(scratch) == [1]


async def test_failing_write_is_retried_then_fails_the_step(scratch: Pool) -> None:
    calls: list[int] = []

    async def deadlocking_write(conn: Connection, output: list[int]) -> None:
        calls.append(output[0])
        if output[0] == 5:
            from asyncmy.errors import OperationalError

            raise OperationalError(1213, "Deadlock found when trying to get lock")
        await write_items(conn, output)

    step_definition = StepDefinition(
        name="testStep",
        read=items_after,
        process=of_items(keep_odd),
        writer=DatabaseWriter(deadlocking_write),
        item_key=lambda item: item,
    )
    outcome, step, _ = await run(scratch, make_settings(RETRY_BUDGET_SECONDS=0.5), step_definition)
    assert "Deadlock" in str(outcome)
    assert calls[:3] == [1, 3, 5] and len(calls) >= 4 and set(calls[3:]) == {5}
    assert step.checkpoint == 4
    assert await items_written(scratch) == [1, 3]


async def test_stop_commits_chunks_in_flight_and_reports_not_finished(scratch: Pool) -> None:
    stop = asyncio.Event()

    async def stop_after_first(items: list[int]) -> Processed[list[int]]:
        stop.set()
        return await keep_odd(items)

    outcome, step, _ = await run(
        scratch,
        make_settings(ENRICH_WORKERS=1, QUEUE_SIZE=1),
        definition(stop_after_first),
        stop=stop,
    )
    assert outcome is False
    assert step.checkpoint is not None and step.checkpoint < 7
    written = await items_written(scratch)
    assert written == [i for i in (1, 3, 5, 7) if i <= step.checkpoint]


async def test_no_chunk_starts_after_a_stop_even_with_the_stream_read_to_its_end(
    scratch: Pool,
) -> None:
    """The reader has queued every chunk when the stop comes during the first one: that
    one is finished and committed, none of the queued ones is processed, and the step
    reports not finished (its last chunks never committed)."""
    stop = asyncio.Event()
    calls: list[int] = []

    async def stop_during_first(items: list[int]) -> Processed[list[int]]:
        calls.append(items[0])
        await asyncio.sleep(0.2)  # the reader reads on to the stream's end meanwhile
        stop.set()
        return await keep_odd(items)

    outcome, step, _ = await run(
        scratch,
        make_settings(ENRICH_WORKERS=1, QUEUE_SIZE=4),
        definition(stop_during_first),
        stop=stop,
    )
    assert outcome is False
    assert calls == [1]
    assert (step.commit_count, step.checkpoint, step.read_count) == (1, 2, 2)
    assert await items_written(scratch) == [1]


async def test_stream_rows_applies_backpressure_to_the_socket(pool: Pool) -> None:
    """A slow consumer must not let the driver buffer the rest of the result set."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) SELECT seq, seq, seq % 100, 1, 'USED', '2025-10-01'"
            " FROM seq_1_to_200000"
        )
    largest = 0
    rows_seen = 0
    async with pool.acquire() as conn:
        async for rows in stream_rows(
            conn,
            "SELECT id, member_id, store_id, created_at FROM coupon_histories",
            (),
            1000,
            pool.deadline,
        ):
            rows_seen += len(rows)
            await asyncio.sleep(0.001)  # the consumer is slow; the loop keeps running
            largest = max(largest, conn._proto.length - conn._proto.pos)
    assert rows_seen == 200_000
    # 200,000 rows are ~8 MB on the wire; paused reading keeps the buffer to a few socket reads.
    assert largest < 1_000_000, largest
