"""Isolating a data fault to its items: a chunk that meets one is tried again by halves.

Spring Batch scans a chunk item by item when its write fails with a skippable fault;
halving finds the same items for fewer attempts when they are few (one bad item of
1,000: about 20 attempts instead of 1,000). A part that fails is halved again; a
single item that fails on its own is skipped, and everything else goes through, part
by part. Items that fail only together are not skipped: their halves pass.

The halving goes breadth first until the fault is pinned on items: once a part passes,
or parts fail differently. A fault that the whole chunk, its halves, quarters and
eighths all meet alike is not about the items (a peer refusing every request, answering
garbage to all): it is raised as NotAboutItems, an availability fault, which the chunk's
budget retries and then fails the step with (15 tries per round). For items to be
skipped instead, at least eight of them, one in each eighth, would have to fail alike on
their own. A chunk of fewer than eight items has no eighths: its items are skipped.

A part is a chunk of its own to the job: its `after` and `checkpoint` are the keys of
the items around it (`StepDefinition.item_key` is also the checkpoint after an item),
so a writer that replaces a chunk's range of keys replaces only the part's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import NotAboutItems, is_availability_fault
from app.pipeline.chunk import Chunk, Processed

ItemT = TypeVar("ItemT")
T = TypeVar("T")

# The parts of one level that must all fail alike, nothing having passed, for the fault
# not to be about the items: the eighths.
UNPINNED_PARTS = 8


@dataclass(slots=True)
class Outcome(Generic[ItemT]):
    """What became of a chunk: the parts processed and delivered, each with the chunk
    it is, in read order (the whole chunk as one part when nothing failed), and the
    items that failed on their own, in read order too, with the last data fault one of
    them met."""

    parts: list[tuple[Chunk[ItemT], Processed[Any]]] = field(default_factory=list)
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

    An availability fault (what outlasted `attempt`'s own retries) is raised as itself;
    a data fault every part meets alike, as NotAboutItems. Once the fault is pinned on
    items and more items failed than `room()` (the skips the step has left) allows, no
    further part is tried: the outcome is incomplete, and the skip limit fails the step
    when it comes to commit it.
    """
    items = chunk.items
    outcome: Outcome[ItemT] = Outcome()
    passed: list[tuple[int, Chunk[ItemT], Processed[Any]]] = []  # (start, part, processed)
    failed: list[int] = []  # the items that failed on their own, by index
    level = [(0, len(items))]  # the parts to try, in read order
    pinned = False  # a part passed, or parts failed differently
    alike: BaseException | None = None  # while not pinned: the fault every part met
    while level and (not pinned or len(failed) <= room()):
        below: list[tuple[int, int]] = []
        for start, end in level:
            if pinned and len(failed) > room():
                break
            whole = start == 0 and end == len(items)
            part = chunk if whole else _part(chunk, start, end, key)
            try:
                processed = await attempt(part)
            except Exception as exc:
                if is_availability_fault(exc):
                    raise
                if not pinned:
                    alike = alike or exc
                    pinned = not _alike(alike, exc)
                if end - start > 1:
                    middle = (start + end) // 2
                    below += [(start, middle), (middle, end)]
                else:
                    failed.append(start)
                    # Without its traceback, whose frames would hold the outcome in a
                    # cycle that only a full collection frees (the chunk's rows with it).
                    outcome.error = exc.with_traceback(None)
            else:
                passed.append((start, part, processed))
                # A part whose items were all filtered may never have met the work that
                # failed (a lookup its items did not need): no sign that the fault is
                # about the others.
                pinned = pinned or processed.filtered < end - start
        if not pinned and alike is not None and len(level) >= UNPINNED_PARTS:
            raise NotAboutItems(alike, "met alike by every part of a chunk")
        level = below
    # Both in read order, whatever order the levels tried them in.
    outcome.parts = [(part, done) for _, part, done in sorted(passed, key=lambda entry: entry[0])]
    outcome.skipped = [items[index] for index in sorted(failed)]
    return outcome


def _alike(one: BaseException, other: BaseException) -> bool:
    return type(one) is type(other) and str(one) == str(other)


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


async def run_wide(lookup: Awaitable[T]) -> T:
    """What a lookup not about the chunk's items gives (one for the whole run, say): its
    data fault is raised as NotAboutItems, since no halving of the chunk can pin it."""
    try:
        return await lookup
    except Exception as exc:
        if is_availability_fault(exc):
            raise
        raise NotAboutItems(exc, "from a lookup not about the chunk's items") from exc
