"""Sink: the chunks' results in read order, each committed before the next."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from app.pipeline.chunk import Chunk
from app.pipeline.source import Entry


async def commit_in_order(
    commits: asyncio.Queue[Entry | None], commit: Callable[[Chunk[Any], Any], Awaitable[None]]
) -> None:
    """Await each chunk's result in read order and `commit` it, so that the checkpoint
    always means: every item up to here is done (written, filtered or skipped)."""
    while (entry := await commits.get()) is not None:
        chunk, future = entry
        await commit(chunk, await future)
