"""The runtime cuts a job's items into chunks: sizes, weights, checkpoints, the final chunk;
and feeds them to the bounded queues until the end or a stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from app.metrics import SPRING_BATCH_ITEM_READ, StepTimer
from app.pipeline.chunk import Chunk, Processed, StepDefinition, StepProgress
from app.pipeline.source import Entry, chunks, feed
from app.pipeline.writers import DatabaseWriter


async def _never(*_: Any) -> Any:
    raise AssertionError("not called")


def definition(
    batches: list[list[int]], checkpoints: list[Any], **declared: Any
) -> StepDefinition[int, None]:
    async def stream() -> AsyncIterator[list[int]]:
        for batch in batches:
            yield batch

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        checkpoints.append(checkpoint)
        return stream()

    async def process(chunk: Any) -> Processed[None]:
        return Processed(None)

    return StepDefinition(
        "testStep", read, process, DatabaseWriter(_never), item_key=lambda n: n, **declared
    )


async def cut(
    batches: list[list[int]], checkpoint: Any = None, size: int = 3, **declared: Any
) -> list[tuple[Any, Any, bool, list[int]]]:
    """(after, checkpoint, final, items) of each chunk."""
    read_from: list[Any] = []
    step = definition(batches, read_from, **declared)
    found = [
        (chunk.after, chunk.checkpoint, chunk.final, chunk.items)
        async for chunk in chunks(step, checkpoint, chunk_size=size, fetch_rows=10, database=None)
    ]
    assert read_from == [checkpoint]
    return found


async def test_chunks_of_chunk_size_across_batches_each_after_the_one_before() -> None:
    assert await cut([[1, 2], [3, 4, 5, 6, 7], [8]], checkpoint=0) == [
        (0, 3, False, [1, 2, 3]),
        (3, 6, False, [4, 5, 6]),
        (6, 8, False, [7, 8]),
    ]


async def test_no_items_no_chunk_unless_the_step_wants_a_final_one() -> None:
    assert await cut([], checkpoint=5) == []
    assert await cut([[]], checkpoint=5, final_chunk=True) == [(5, 5, True, [])]


async def test_the_last_chunk_is_marked_final() -> None:
    assert await cut([[1, 2, 3, 4]], final_chunk=True) == [
        (None, 3, False, [1, 2, 3]),
        (3, 4, True, [4]),
    ]
    assert await cut([[1, 2, 3]], final_chunk=True) == [(None, 3, True, [1, 2, 3])]


async def test_a_chunk_ends_at_chunk_size_of_weight_or_at_its_cap_of_items() -> None:
    # Even items weigh 1, odd ones nothing: 3 even items, or 2 x 3 items in all.
    weighed = {"weight": lambda n: 1 - n % 2, "chunk_cap": 2}
    assert await cut([[2, 4, 5, 6, 8]], **weighed) == [
        (None, 6, False, [2, 4, 5, 6]),
        (6, 8, False, [8]),
    ]
    assert await cut([list(range(1, 15, 2))], **weighed) == [
        (None, 11, False, [1, 3, 5, 7, 9, 11]),
        (11, 13, False, [13]),
    ]


async def fed(stop_after: int | None) -> tuple[bool, list[Any], list[Any], int]:
    """`feed` over chunks [1], [2], [3] with 2 workers, `stop` set as the chunk
    `stop_after` is read: what it answers, the commit queue's and the work queue's
    contents (each chunk's items, None for an end mark), the items counted read."""
    stop = asyncio.Event()

    async def three() -> AsyncGenerator[Chunk[int], None]:
        for item in (1, 2, 3):
            if item == stop_after:
                stop.set()
            yield Chunk([item], item)

    work: asyncio.Queue[Entry | None] = asyncio.Queue()
    commits: asyncio.Queue[Entry | None] = asyncio.Queue()
    progress = StepProgress()
    reads = StepTimer(SPRING_BATCH_ITEM_READ, "unitJob", "fedStep")
    answer = await feed(
        three(), work, commits, workers=2, progress=progress, stop=stop, reads=reads
    )

    def drained(queue: asyncio.Queue[Entry | None]) -> list[Any]:
        entries = [queue.get_nowait() for _ in range(queue.qsize())]
        return [entry and entry[0].items for entry in entries]

    return answer, drained(commits), drained(work), progress.read


async def test_the_reader_feeds_every_chunk_then_ends_both_queues() -> None:
    everything = [[1], [2], [3]]
    assert await fed(stop_after=None) == (True, [*everything, None], [*everything, None, None], 3)


async def test_the_reader_stops_after_the_chunk_read_as_the_stop_came_and_says_so() -> None:
    assert await fed(stop_after=2) == (False, [[1], [2], None], [[1], [2], None, None], 2)
