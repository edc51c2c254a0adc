"""The step runner: source -> bounded queues -> enrich workers -> ordered sink."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.concurrency import stray_cancellation_fails
from app.config import DatabaseSettings, StepPolicy
from app.errors import BatchError
from app.metrics import (
    ITEMS,
    QUEUE_DEPTH,
    SPRING_BATCH_CHUNK_WRITE,
    SPRING_BATCH_ITEM_PROCESS,
    SPRING_BATCH_ITEM_READ,
    StepTimer,
)
from app.model import ChunkCounts, Status, StepExecution
from app.pipeline.chunk import Chunk, Processed, StepDefinition, StepProgress
from app.pipeline.enrich import enrich
from app.pipeline.isolate import Outcome, isolate
from app.pipeline.retry import Budget, retrying
from app.pipeline.sink import commit_in_order
from app.pipeline.source import Entry, chunks, feed
from app.ports import JobRepository
from app.repository.rules import AlreadyCommitted

log = logging.getLogger(__name__)


# Skipped items named in the step's context (and so in the execution resource); the
# count is the step's skip count. SHORT_CONTEXT holds 2,500 characters.
SKIPPED_KEYS_KEPT = 50
SKIP_CAUSE_CHARACTERS = 200  # of a skip's cause: the fault's type and message


class SkipLimitExceeded(BatchError):
    pass


class StepRunner:
    """Runs step executions of one definition under one policy (chunking, retry, skip,
    commit), recording into the job repository; `progress` holds the live counts and
    setting `stop` ends the run after the chunks being processed (no chunk starts after
    it). A stop requested through another replica is read at each chunk commit: it
    calls `stop_requested` (by default, sets `stop`).

    Spring Batch's item.read, item.process and chunk.write timers time each chunk once
    (a timer per item would cost much of the stats job's CPU; docs/metrics.md): a
    chunk's read and processing count as its items; its writing (the writer's delivery,
    then its write in the chunk's transaction) as one chunk, at the write.
    """

    def __init__(
        self,
        definition: StepDefinition[Any, Any],
        *,
        job_name: str,
        repository: JobRepository,
        policy: StepPolicy,
        database: DatabaseSettings | None = None,
        progress: StepProgress | None = None,
        stop: asyncio.Event | None = None,
        stop_requested: Callable[[], None] | None = None,
    ) -> None:
        self.definition = definition
        self.job_name = job_name
        self.repository = repository
        self.policy = policy
        self.database = database  # where a step reading Rows streams them from
        self.progress = progress if progress is not None else StepProgress()
        self.stop = stop if stop is not None else asyncio.Event()
        self.stop_requested = stop_requested or self.stop.set
        self._skipped_keys: list[object] = []
        self._reads, self._processing, self._writes = (
            StepTimer(timer, job_name, definition.name)
            for timer in (
                SPRING_BATCH_ITEM_READ,
                SPRING_BATCH_ITEM_PROCESS,
                SPRING_BATCH_CHUNK_WRITE,
            )
        )
        # The same first skipped items by cause, in the order met: [{"cause": the data
        # fault that skipped them, "keys": [...]}] (the exit message, the console).
        self._skip_causes: list[dict[str, Any]] = []
        self._commit_with_retry = retrying(
            self._commit_once, policy, f"step {definition.name}: a commit", self.progress
        )

    async def run(self, step: StepExecution) -> bool:
        """Run the step from its checkpoint; True when the source was read to its end,
        False when `stop` ended it early (after the chunks started were committed).

        Any failure (the reader's, a commit that kept failing, the skip limit) cancels
        the other tasks and is raised as itself; a CancelledError that reaches a task
        nobody cancelled is a failure too (`stray_cancellation_fails`), never a hang.
        """
        policy = self.policy
        work: asyncio.Queue[Entry | None] = asyncio.Queue(maxsize=policy.queue_size)
        commits: asyncio.Queue[Entry | None] = asyncio.Queue(
            maxsize=policy.queue_size + policy.workers
        )
        read = chunks(
            self.definition,
            step.checkpoint,
            chunk_size=policy.chunk_size,
            fetch_rows=policy.fetch_rows,
            database=self.database,
        )
        with _queue_depth(self.job_name, step.job_execution_id, enrich=work, commit=commits):
            try:
                async with asyncio.TaskGroup() as tasks:
                    reader = tasks.create_task(
                        stray_cancellation_fails(
                            feed(
                                read,
                                work,
                                commits,
                                workers=policy.workers,
                                progress=self.progress,
                                stop=self.stop,
                                reads=self._reads,
                            )
                        )
                    )
                    for _ in range(policy.workers):
                        worker = enrich(work, self._outcome, self.stop)
                        tasks.create_task(stray_cancellation_fails(worker))
                    sink = tasks.create_task(
                        stray_cancellation_fails(
                            commit_in_order(commits, functools.partial(self._commit, step.id))
                        )
                    )
            except BaseExceptionGroup as group:
                raise _first_cause(group) from None
            finally:
                _discard_uncommitted(commits)
        return reader.result() and sink.result()

    async def _outcome(self, chunk: Chunk[Any]) -> Outcome[Any]:
        """The chunk processed and delivered, under one retry budget for all its tries:
        a data fault isolated to the items that fail on their own (`isolate`), the rest
        going through; a fault not about the items retried, as availability."""
        definition = self.definition
        what = f"step {definition.name}: a chunk"
        budget = Budget(self.policy, what, self.progress)
        try:
            return await budget.run(
                lambda: isolate(
                    chunk,
                    lambda part: self._process_and_deliver(part, budget),
                    key=definition.item_key,
                    room=lambda: self.policy.skip_limit - self.progress.skipped,
                )
            )
        finally:
            budget.close()

    async def _process_and_deliver(self, chunk: Chunk[Any], budget: Budget) -> Processed[Any]:
        """Process the chunk (or part) once, then deliver its output, retried within the
        budget: a retry after a failed delivery delivers again without processing again
        (a publish's retries reuse the looked-up tokens and events)."""
        definition = self.definition
        processed: Processed[Any] | None = None

        async def attempt() -> Processed[Any]:
            nonlocal processed
            if processed is None:
                with self._processing.timing(len(chunk.items)):
                    processed = await definition.process(chunk)
            with self._writes.timing(0):  # its time counts with the chunk's write
                await definition.writer.deliver(processed.output)
            return processed

        return await budget.run(attempt)

    async def _commit(self, step_id: int, chunk: Chunk[Any], result: Outcome[Any]) -> None:
        definition, progress = self.definition, self.progress
        size, skipped = len(chunk.items), len(result.skipped)
        if skipped:
            keys = [definition.item_key(item) for item in result.skipped]
            log.warning(
                "step %s skipped %d items after %r; %s: %s",
                definition.name,
                skipped,
                result.error,
                definition.item_label,
                keys,
            )
            limit = self.policy.skip_limit
            if progress.skipped + skipped > limit:
                # The count is the step's SKIP_COUNT: this chunk's bad items are not skipped
                # but fail the step.
                raise SkipLimitExceeded(
                    f"skip limit exceeded: {progress.skipped} items skipped (SKIP_LIMIT={limit})"
                    f" and {skipped} more failed on their own; last error: {result.error!r}"
                )
            kept = keys[: max(SKIPPED_KEYS_KEPT - len(self._skipped_keys), 0)]
            if kept:
                self._skipped_keys += kept
                cause = f"{type(result.error).__name__}: {result.error}"[:SKIP_CAUSE_CHARACTERS]
                self._skip_causes.append({"cause": cause, "keys": kept})
        filtered = sum(processed.filtered for _, processed in result.parts)
        counts = ChunkCounts(
            read=size, written=size - skipped - filtered, filtered=filtered, skipped=skipped
        )
        await self._commit_with_retry(step_id, chunk, result.parts, counts)
        progress.written += counts.written
        progress.filtered += counts.filtered
        progress.skipped += counts.skipped
        progress.commits += 1
        for outcome in ("read", "written", "filtered", "skipped"):
            ITEMS.labels(self.job_name, definition.name, outcome).inc(getattr(counts, outcome))

    async def _commit_once(
        self,
        step_id: int,
        chunk: Chunk[Any],
        parts: list[tuple[Chunk[Any], Processed[Any]]],
        counts: ChunkCounts,
    ) -> None:
        try:
            async with self.repository.chunk_transaction() as unit:
                # Even when every item was filtered: a writer may have to remove what an
                # earlier run of the same instance wrote for them. Not for skipped items.
                with self._writes.timing(1):
                    for part, processed in parts:
                        await self.definition.writer.write(
                            unit.connection, processed.output, part.keys
                        )
                status = await unit.commit_chunk(
                    step_id, counts, self._context(chunk), self.progress.commits
                )
                if status == Status.STOPPING:  # asked through another replica
                    self.stop_requested()
        except AlreadyCommitted:
            log.warning(
                "step %s: the chunk up to checkpoint %s had committed already (its answer was"
                " lost); not committed again",
                self.definition.name,
                chunk.checkpoint,
            )

    def skip_summary(self) -> str:
        """What this run skipped, its first items by cause (an exit message): `3 skipped;
        member ids 17, 42: PeerRejected: ...`; empty when it skipped nothing."""
        if not self._skip_causes:
            return ""
        named = len(self._skipped_keys)
        first = f" (the first {named} named)" if named < self.progress.skipped else ""
        label = self.definition.item_label
        return f"{self.progress.skipped:,} skipped{first}; " + "; ".join(
            f"{label} {', '.join(map(str, found['keys']))}: {found['cause']}"
            for found in self._skip_causes
        )

    def _context(self, chunk: Chunk[Any]) -> dict[str, Any]:
        """The step's context as of this chunk: its checkpoint, the first skipped items'
        keys, what the writer reports."""
        context: dict[str, Any] = {"checkpoint": chunk.checkpoint}
        if self._skipped_keys:
            context["skipped"] = self._skipped_keys
            context["skipCauses"] = self._skip_causes
        report = self.definition.writer.report()
        if report:
            context["messages"] = report
        return context


def _discard_uncommitted(commits: asyncio.Queue[Entry | None]) -> None:
    """Drop the chunks a failed step never committed: each future is cancelled, or its
    outcome read (another worker's fault, after the one that failed the step), so that
    asyncio reports none of them as never retrieved."""
    while not commits.empty():
        entry = commits.get_nowait()
        if entry is None:
            continue
        future = entry[1]
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


@contextmanager
def _queue_depth(job_name: str, execution_id: int, **queues: asyncio.Queue[Any]) -> Iterator[None]:
    """The queues' depths as gauges of this execution, removed when the step ends."""
    labels = [(job_name, str(execution_id), name) for name in queues]
    for label, queue in zip(labels, queues.values(), strict=True):
        QUEUE_DEPTH.labels(*label).set_function(queue.qsize)
    try:
        yield
    finally:
        for label in labels:
            QUEUE_DEPTH.remove(*label)


def _first_cause(group: BaseExceptionGroup) -> BaseException:
    """The failure that brought the task group down (not the cancellations it caused)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_cause(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
