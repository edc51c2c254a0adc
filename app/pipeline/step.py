"""A chunk-oriented step: source -> bounded queues -> enrich workers -> ordered sink."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from asyncmy.pool import Pool

from app.config import Settings
from app.metrics import ITEMS, QUEUE_DEPTH
from app.pipeline.chunk import StepDefinition, StepProgress
from app.pipeline.enrich import enrich, retrying
from app.pipeline.sink import commit_in_order
from app.pipeline.source import Entry, feed
from app.runtime.repository import ChunkCounts, JobRepository, StepExecution


async def run_step(
    definition: StepDefinition[Any, Any],
    step: StepExecution,
    *,
    job_name: str,
    pool: Pool,
    repository: JobRepository,
    settings: Settings,
    progress: StepProgress,
    stop: asyncio.Event,
) -> bool:
    """Run the step from its checkpoint; True when the source was read to its end,
    False when `stop` ended it early (after the chunks in flight were committed).

    Any failure (the reader's, a write that kept failing, the skip limit) cancels
    the other tasks and is raised as itself.
    """
    workers = settings.ENRICH_WORKERS
    work: asyncio.Queue[Entry | None] = asyncio.Queue(maxsize=settings.QUEUE_SIZE)
    commits: asyncio.Queue[Entry | None] = asyncio.Queue(maxsize=settings.QUEUE_SIZE + workers)
    QUEUE_DEPTH.labels(job_name, "enrich").set_function(work.qsize)
    QUEUE_DEPTH.labels(job_name, "commit").set_function(commits.qsize)
    retry = functools.partial(
        retrying, attempts=settings.RETRY_ATTEMPTS, base_seconds=settings.RETRY_BASE_SECONDS
    )

    def count(counts: ChunkCounts) -> None:
        for outcome, value in (
            ("read", counts.read),
            ("written", counts.written),
            ("filtered", counts.filtered),
            ("skipped", counts.skipped),
        ):
            ITEMS.labels(job_name, definition.name, outcome).inc(value)

    try:
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(
                feed(
                    definition.read(step.checkpoint),
                    work,
                    commits,
                    workers=workers,
                    progress=progress,
                    stop=stop,
                )
            )
            process = retry(definition.process, what=f"step {definition.name}: a chunk")
            for _ in range(workers):
                tasks.create_task(enrich(work, process))
            tasks.create_task(
                commit_in_order(
                    commits,
                    definition,
                    pool=pool,
                    repository=repository,
                    step_id=step.id,
                    progress=progress,
                    skip_limit=settings.SKIP_LIMIT,
                    retry=functools.partial(retry, what=f"step {definition.name}: a commit"),
                    on_commit=count,
                )
            )
    except BaseExceptionGroup as group:
        raise _first_cause(group) from None
    finally:
        for queue in ("enrich", "commit"):
            QUEUE_DEPTH.labels(job_name, queue).set_function(lambda: 0)
    return reader.result()


def _first_cause(group: BaseExceptionGroup) -> BaseException:
    """The failure that brought the task group down (not the cancellations it caused)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_cause(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
