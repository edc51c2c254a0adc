"""Sink: commit chunks in read order, each chunk's effect with its counts and checkpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asyncmy.pool import Pool

from app.edges.db import transaction
from app.pipeline.chunk import StepDefinition, StepProgress
from app.pipeline.enrich import Skipped
from app.pipeline.source import Entry
from app.runtime.repository import ChunkCounts, JobRepository

log = logging.getLogger(__name__)


class SkipLimitExceeded(Exception):
    pass


async def commit_in_order(
    commits: asyncio.Queue[Entry | None],
    definition: StepDefinition[Any, Any],
    *,
    pool: Pool,
    repository: JobRepository,
    step_id: int,
    progress: StepProgress,
    skip_limit: int,
    retry: Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]],
    on_commit: Callable[[ChunkCounts], None],
) -> None:
    """Await each chunk's result in read order and commit it, so that the checkpoint
    always means: every item up to here is done (written, filtered or skipped)."""

    async def commit(output: Any, counts: ChunkCounts, checkpoint: Any) -> None:
        async with transaction(pool) as conn:
            # Even when every item was filtered: a writer may have to remove what an
            # earlier run of the same instance wrote for them.
            if definition.write is not None and not counts.skipped:
                await definition.write(conn, output)
            await repository.commit_chunk(conn, step_id, counts, checkpoint)

    commit_with_retry = retry(commit)
    while (entry := await commits.get()) is not None:
        chunk, future = entry
        result = await future
        size = len(chunk.items)
        if isinstance(result, Skipped):
            keys = [definition.item_key(item) for item in chunk.items]
            log.warning(
                "step %s skipped %d items after %r; %s: %s",
                definition.name,
                size,
                result.error,
                definition.item_label,
                keys,
            )
            if progress.skipped + size > skip_limit:
                raise SkipLimitExceeded(
                    f"skip limit exceeded: {progress.skipped + size} items skipped"
                    f" (SKIP_LIMIT={skip_limit}); last error: {result.error!r}"
                )
            counts, output = ChunkCounts(read=size, written=0, filtered=0, skipped=size), None
        else:
            written = size - result.filtered
            counts = ChunkCounts(read=size, written=written, filtered=result.filtered, skipped=0)
            output = result.output
        await commit_with_retry(output, counts, chunk.checkpoint)
        progress.written += counts.written
        progress.filtered += counts.filtered
        progress.skipped += counts.skipped
        progress.commits += 1
        on_commit(counts)
