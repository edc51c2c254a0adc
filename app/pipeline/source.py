"""Source: the job's chunk stream, fed into bounded queues in read order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from app.metrics import StepTimer
from app.pipeline.chunk import Chunk, StepProgress

# A chunk travels with the future its worker resolves: the worker queue hands work
# out, the commit queue keeps read order. Both are bounded, so a slow worker or a
# slow writer stops the reader, and the reader stops the database socket.
Entry = tuple[Chunk[Any], asyncio.Future]


async def feed(
    chunks: AsyncGenerator[Chunk[Any], None],
    after: Any,
    work: asyncio.Queue[Entry | None],
    commits: asyncio.Queue[Entry | None],
    *,
    workers: int,
    progress: StepProgress,
    stop: asyncio.Event,
    reads: StepTimer,
) -> bool:
    """Read the chunks after the checkpoint `after` until the stream ends (True) or
    `stop` is set (False); then end the queues. `reads` times each chunk's read (the
    time to get it from the stream) as its items, and the read that finds the end as
    one, as Spring's item.read timer counts the read that returns null."""
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
            chunk.after, after = after, chunk.checkpoint
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
