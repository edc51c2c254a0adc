"""Source: the job's chunk stream, fed into bounded queues in read order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

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
) -> bool:
    """Read the chunks after the checkpoint `after` until the stream ends (True) or
    `stop` is set (False); then end the queues."""
    loop = asyncio.get_running_loop()
    exhausted = True
    async with aclosing(chunks):
        async for chunk in chunks:
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
