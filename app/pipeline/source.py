"""Source: the job's items cut into chunks, fed into bounded queues in read order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

from app.config import DatabaseSettings
from app.edges.db import stream_merged
from app.metrics import StepTimer
from app.pipeline.chunk import Chunk, Rows, StepDefinition, StepProgress

ItemT = TypeVar("ItemT")

# A chunk travels with the future its worker resolves: the worker queue hands work
# out, the commit queue keeps read order. Both are bounded, so a slow worker or a
# slow writer stops the reader, and the reader stops the database socket.
Entry = tuple[Chunk[Any], asyncio.Future]


async def chunks(
    definition: StepDefinition[ItemT, Any],
    checkpoint: Any,
    *,
    chunk_size: int,
    fetch_rows: int,
    database: DatabaseSettings | None,
) -> AsyncGenerator[Chunk[ItemT], None]:
    """The chunks after `checkpoint`, cut from what the job's reader gives (see
    StepDefinition), each with its checkpoint and the one before it (`after`); with
    `final_chunk`, the last one marked so (an empty one if nothing was read)."""
    cut = _cut(definition, checkpoint, chunk_size, fetch_rows, database)
    last: Chunk[ItemT] | None = None
    async with aclosing(cut):
        async for chunk in cut:
            if not definition.final_chunk:
                yield chunk
                continue
            if last is not None:
                yield last
            last = chunk
    if definition.final_chunk:
        if last is None:
            last = Chunk([], checkpoint, checkpoint)
        last.final = True
        yield last


async def _cut(
    definition: StepDefinition[ItemT, Any],
    after: Any,
    chunk_size: int,
    fetch_rows: int,
    database: DatabaseSettings | None,
) -> AsyncGenerator[Chunk[ItemT], None]:
    source = await definition.read(after)
    batches = _batches(source, fetch_rows, database) if isinstance(source, Rows) else source
    key, weight = definition.item_key, definition.weight
    most = definition.chunk_cap * chunk_size
    items: list[ItemT] = []
    weighed = 0  # of `items`
    async with aclosing(batches):
        async for batch in batches:
            for item in batch:
                items.append(item)
                weighed += 1 if weight is None else weight(item)
                if weighed >= chunk_size or len(items) >= most:
                    yield Chunk(items, key(item), after)
                    after, items, weighed = key(item), [], 0
    if items:
        yield Chunk(items, key(items[-1]), after)


async def _batches(
    rows: Rows[ItemT], fetch_rows: int, database: DatabaseSettings | None
) -> AsyncGenerator[Sequence[ItemT], None]:
    if database is None:
        raise RuntimeError("a step that reads rows needs the database's settings")
    stream = stream_merged(database, rows.queries, fetch_rows, session=rows.session)
    async with aclosing(stream) as batches:
        async for batch in batches:
            yield rows.items(batch)


async def feed(
    chunks: AsyncGenerator[Chunk[Any], None],
    work: asyncio.Queue[Entry | None],
    commits: asyncio.Queue[Entry | None],
    *,
    workers: int,
    progress: StepProgress,
    stop: asyncio.Event,
    reads: StepTimer,
) -> bool:
    """Read the chunks until the stream ends (True) or `stop` is set (False); then end
    the queues. `reads` times each chunk's read (the time to get it from the stream) as
    its items, and the read that finds the end as one, as Spring's item.read timer
    counts the read that returns null."""
    loop = asyncio.get_running_loop()
    exhausted = True
    async with aclosing(chunks):
        while True:
            started = time.perf_counter()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                reads.record(time.perf_counter() - started)
                break
            except Exception:
                reads.record(time.perf_counter() - started, failed=True)
                raise
            reads.record(time.perf_counter() - started, len(chunk.items))
            entry = (chunk, loop.create_future())
            await commits.put(entry)
            await work.put(entry)
            progress.read += len(chunk.items)
            if stop.is_set():
                exhausted = False
                break
    await commits.put(None)
    for _ in range(workers):
        await work.put(None)
    return exhausted
