"""Isolating a data fault to its items: a chunk that meets one is tried again by halves.

Spring Batch scans a chunk item by item when its write fails with a skippable fault;
halving finds the same items for fewer attempts when they are few (one bad item of
1,000: about 20 attempts instead of 1,000). A part that fails is halved again; a
single item that fails on its own is skipped, and everything else goes through, part
by part. Items that fail only together are not skipped: their halves pass.

A part is a chunk of its own to the job: its `after` and `checkpoint` are the keys of
the items around it (`StepDefinition.item_key` is also the checkpoint after an item),
so a writer that replaces a chunk's range of keys replaces only the part's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import is_availability_fault
from app.pipeline.chunk import Chunk, Processed

ItemT = TypeVar("ItemT")


@dataclass(slots=True)
class Outcome(Generic[ItemT]):
    """What became of a chunk: the parts processed and delivered, in read order (the
    whole chunk as one part when nothing failed), and the items that failed on their
    own, with the last data fault one of them met."""

    parts: list[Processed[Any]] = field(default_factory=list)
    skipped: list[ItemT] = field(default_factory=list)
    error: BaseException | None = None


async def isolate(
    chunk: Chunk[ItemT],
    attempt: Callable[[Chunk[ItemT]], Awaitable[Processed[Any]]],
    *,
    key: Callable[[ItemT], Any],
    room: Callable[[], int],
) -> Outcome[ItemT]:
    """`attempt` the chunk; on a data fault, its halves, and so on down to single items.

    An availability fault (what outlasted `attempt`'s own retries) is raised as itself.
    Once more items failed than `room()` (the skips the step has left) allows, no
    further part is tried: the outcome is incomplete, and the skip limit fails the step
    when it comes to commit it.
    """
    items = chunk.items
    outcome: Outcome[ItemT] = Outcome()
    pending = [(0, len(items))]  # the parts left to try, the next one last
    while pending and len(outcome.skipped) <= room():
        start, end = pending.pop()
        whole = start == 0 and end == len(items)
        try:
            outcome.parts.append(await attempt(chunk if whole else _part(chunk, start, end, key)))
        except Exception as exc:
            if is_availability_fault(exc):
                raise
            if end - start > 1:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]
            else:
                outcome.skipped += items[start:end]
                # Without its traceback, whose frames would hold the outcome in a cycle
                # that only a full collection frees (the chunk's rows with it).
                outcome.error = exc.with_traceback(None)
    return outcome


def _part(chunk: Chunk[ItemT], start: int, end: int, key: Callable[[ItemT], Any]) -> Chunk[ItemT]:
    """Items `start` to `end` of the chunk, as a chunk bounded by the keys around them."""
    items = chunk.items
    last = end == len(items)
    return Chunk(
        items=items[start:end],
        checkpoint=chunk.checkpoint if last else key(items[end - 1]),
        after=chunk.after if start == 0 else key(items[start - 1]),
        final=chunk.final and last,
    )
