"""The vocabulary a job uses to describe its step: chunks in, processed chunks out."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from app.pipeline.writers import Writer

ItemT = TypeVar("ItemT")  # an item read
OutT = TypeVar("OutT")  # what processing a chunk of items gives the writer


@dataclass(slots=True)
class Chunk(Generic[ItemT]):
    """Items as the runtime cuts them from the job's reader (`app.pipeline.source`)."""

    items: list[ItemT]
    checkpoint: Any  # JSON-able: where a restart resumes once this chunk is committed
    # The checkpoint before this chunk (None: the start): the chunk covers what lies
    # after `after` up to `checkpoint`, or past it if `final`.
    after: Any = None
    final: bool = False  # the stream's last chunk: nothing is read after it

    @property
    def keys(self) -> KeyRange:
        """The keys the chunk covers: after `after` up to `checkpoint`, open if `final`."""
        return KeyRange(self.after, None if self.final else self.checkpoint)


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys after `after` (None: from the first) up to `upto`, included (None: open)."""

    after: Any
    upto: Any


@dataclass(slots=True)
class Processed(Generic[OutT]):
    output: OutT
    filtered: int = 0  # items dropped by the job's rules; the rest count as written


@dataclass(frozen=True)
class Rows(Generic[ItemT]):
    """A read from the database, streamed by the runtime: each query on a connection of
    its own (its `session` statements first), every statement and fetch within the stall
    deadline, closed when the step ends; the queries' rows merged in the order of their
    first column, each batch holding every row of its keys, made items by `items`."""

    queries: Sequence[tuple[str, Sequence[Any]]]  # each ordered by its first column
    items: Callable[[list[tuple]], Sequence[ItemT]]
    session: Sequence[str] = ()


# What a job's reader gives: rows for the runtime to stream, or batches of items (an
# async generator: the runtime closes it when the step ends).
Source = Rows[ItemT] | AsyncGenerator[Sequence[ItemT], None]


@dataclass(frozen=True)
class StepDefinition(Generic[ItemT, OutT]):
    """What a job says about its step; the runtime does the rest.

    - `read(checkpoint)` gives the items after `checkpoint` (None: from the start), in
      the order of `item_key`: as Rows to stream, or batches of items. The runtime cuts
      them into chunks of CHUNK_SIZE: each item counts `weight(item)` (1 by default),
      and a chunk holds at most `chunk_cap` times CHUNK_SIZE items whatever they weigh.
      A chunk's checkpoint is its last item's key.
    - `process(chunk)` enriches a chunk, free of effects; chunks are processed
      concurrently, and retried on availability faults. On a data fault, the runtime
      processes the chunk again by parts to skip only the items that fail on their own
      (`app.pipeline.isolate`): a part is a chunk whose bounds are item keys.
    - `writer` takes each processed chunk (`app.pipeline.writers`); the checkpoint and
      the counts commit once it has.
    - `final_chunk`: the last chunk is marked `final` (the runtime holds one chunk back
      to know it), and a read that finds nothing still gives one empty final chunk: for
      a writer that replaces each chunk's key range, the last range being open.
    """

    name: str
    read: Callable[[Any], Awaitable[Source[ItemT]]]
    process: Callable[[Chunk[ItemT]], Awaitable[Processed[OutT]]]
    writer: Writer[OutT]
    # The checkpoint just after the item; also names a skipped item in the warning.
    item_key: Callable[[ItemT], object]
    item_label: str = "member ids"
    weight: Callable[[ItemT], int] | None = None
    chunk_cap: int = 1
    final_chunk: bool = False


@dataclass(eq=False)
class Retry:
    """An operation retrying after availability faults, under its own budget."""

    what: str  # e.g. "step couponUsageStatsStep: a chunk"
    error: str  # the last fault, e.g. "store service GET /api/...: HTTP 503"
    attempts: int  # failed so far
    since: datetime  # the first attempt (UTC): the budget runs from there
    deadline: float  # time.monotonic() at which the budget is spent

    def budget_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass
class StepProgress:
    """Live counts of a running step: `read` as chunks are read, the rest as they commit;
    `retries`, the operations retrying now (each chunk has a budget of its own)."""

    read: int = 0
    written: int = 0
    filtered: int = 0
    skipped: int = 0
    commits: int = 0
    started: float = field(default_factory=time.monotonic)
    retries: list[Retry] = field(default_factory=list)

    def note_retry(
        self,
        retry: Retry | None,
        what: str,
        error: BaseException,
        attempts: int,
        elapsed: float,
        budget: float,
    ) -> Retry:
        """Note a failed attempt of an operation that began `elapsed` seconds ago and
        retries; `retry` is its earlier note, if any."""
        if retry is None:
            retry = Retry(
                what=what,
                error="",
                attempts=0,
                since=datetime.now(UTC) - timedelta(seconds=elapsed),
                deadline=time.monotonic() - elapsed + budget,
            )
            self.retries.append(retry)
        retry.error = str(error) or type(error).__name__
        retry.attempts = attempts
        return retry

    def end_retry(self, retry: Retry) -> None:
        """The operation succeeded, gave up or was cancelled."""
        self.retries.remove(retry)

    def rate(self) -> float:
        """Items read per second so far."""
        elapsed = time.monotonic() - self.started
        return self.read / elapsed if elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "read": self.read,
            "written": self.written,
            "filtered": self.filtered,
            "skipped": self.skipped,
            "commits": self.commits,
            "itemsPerSecond": round(self.rate(), 1),
        }
