"""Enrich: concurrent workers that process chunks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from app.pipeline.chunk import Chunk
from app.pipeline.source import Entry


async def enrich(
    work: asyncio.Queue[Entry | None], handle: Callable[[Chunk[Any]], Awaitable[Any]]
) -> None:
    """Resolve each chunk's future with what `handle` gives (data faults are its own to
    isolate and skip), or the availability fault that outlasted the retries."""
    while (entry := await work.get()) is not None:
        chunk, future = entry
        try:
            result = await handle(chunk)
        except Exception as exc:
            # Fails the step once the sink reaches this chunk, so the chunks before
            # it still commit: the restart resumes here and loses nothing.
            future.set_exception(exc)
            return
        future.set_result(result)
