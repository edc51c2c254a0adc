"""Sink: the chunks' results in read order, each committed before the next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from app.pipeline.chunk import Chunk
from app.pipeline.enrich import NOT_STARTED
from app.pipeline.source import Entry


async def commit_in_order(
    commits: asyncio.Queue[Entry | None], commit: Callable[[Chunk[Any], Any], Awaitable[None]]
) -> bool:
    """Await each chunk's result in read order and `commit` it, so that the checkpoint
    always means: every item up to here is done (written, filtered or skipped). False
    if a chunk was not started (a stop): none from it on is committed."""
    complete = True
    while (entry := await commits.get()) is not None:
        chunk, future = entry
        result = await future
        complete = complete and result is not NOT_STARTED
        if complete:
            await commit(chunk, result)
    return complete
