"""Enrich: concurrent workers that process chunks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from app.pipeline.chunk import Chunk
from app.pipeline.source import Entry

# A chunk a worker took after the stop: never processed, never committed; the restart
# resumes at it.
NOT_STARTED = object()


async def enrich(
    work: asyncio.Queue[Entry | None],
    handle: Callable[[Chunk[Any]], Awaitable[Any]],
    stop: asyncio.Event,
) -> None:
    """Resolve each chunk's future with what `handle` gives (data faults are its own to
    isolate and skip), or NOT_STARTED once `stop` is set; raise the availability fault
    that outlasted the chunk's retries (its future holds it too).

    Workers take chunks in read order, so the chunks started before the stop are a
    prefix of those read: each is finished, and at most one per worker after the stop.
    """
    while (entry := await work.get()) is not None:
        chunk, future = entry
        if stop.is_set():
            future.set_result(NOT_STARTED)
            continue
        try:
            result = await handle(chunk)
        except Exception as exc:
            # The chunk's retry budget is spent (or a bug): the step fails now, at the
            # chunk's deadline, not once the sink reaches it. The chunks before it still
            # in flight (an outage holds them too) are not committed: the restart resumes
            # at the checkpoint and does them again, losing nothing.
            future.set_exception(exc)
            raise
        future.set_result(result)
