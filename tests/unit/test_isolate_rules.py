"""Isolating a data fault by halves (`app.pipeline.isolate`), on plain integers: which
parts are tried and in what order, what is skipped, and when the fault is not about the
items at all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.errors import NotAboutItems
from app.pipeline.chunk import Chunk, Processed
from app.pipeline.isolate import Outcome, isolate, run_wide


class Bad(Exception):
    """A data fault."""


class Away(ConnectionError):
    """An availability fault."""


def chunk_of(first: int, last: int, *, final: bool = True) -> Chunk[int]:
    """Items first..last, after the key first - 1, checkpointed at last."""
    return Chunk(list(range(first, last + 1)), checkpoint=last, after=first - 1, final=final)


def worker(
    fails: Callable[[int], str | None], filtered: Callable[[int], bool] = lambda item: False
) -> tuple[list[tuple[list[int], object, object, bool]], Callable]:
    """An attempt that raises Bad(fails(item)) at the first item with a message, and the
    parts it was given: (items, after, checkpoint, final)."""
    tried: list[tuple[list[int], object, object, bool]] = []

    async def attempt(part: Chunk[int]) -> Processed[list[int]]:
        tried.append((list(part.items), part.after, part.checkpoint, part.final))
        for item in part.items:
            message = fails(item)
            if message is not None:
                raise Bad(message)
        return Processed(list(part.items), filtered=sum(map(filtered, part.items)))

    return tried, attempt


def key(item: int) -> int:
    return item


def room(left: int = 1000) -> Callable[[], int]:
    return lambda: left


async def test_a_chunk_without_a_fault_is_one_part_tried_once_as_itself() -> None:
    chunk = chunk_of(1, 4)
    given: list[Chunk[int]] = []

    async def attempt(part: Chunk[int]) -> Processed[str]:
        given.append(part)
        return Processed("done", filtered=1)

    outcome = await isolate(chunk, attempt, key=key, room=room())

    assert given == [chunk] and given[0] is chunk
    assert outcome == Outcome(
        parts=[(chunk, Processed("done", filtered=1))], skipped=[], error=None
    )


async def test_one_bad_item_is_found_by_halves_and_the_rest_goes_through_in_read_order() -> None:
    tried, attempt = worker(lambda item: "bad 6" if item == 6 else None)

    outcome = await isolate(chunk_of(1, 8, final=True), attempt, key=key, room=room())

    # Breadth first: the whole, both halves, the failing half's quarters, its two items.
    assert tried == [
        ([1, 2, 3, 4, 5, 6, 7, 8], 0, 8, True),
        ([1, 2, 3, 4], 0, 4, False),
        ([5, 6, 7, 8], 4, 8, True),
        ([5, 6], 4, 6, False),
        ([7, 8], 6, 8, True),
        ([5], 4, 5, False),
        ([6], 5, 6, False),
    ]
    assert [done.output for _, done in outcome.parts] == [[1, 2, 3, 4], [5], [7, 8]]
    assert outcome.skipped == [6]
    assert isinstance(outcome.error, Bad) and str(outcome.error) == "bad 6"
    assert outcome.error.__traceback__ is None


async def test_a_part_not_final_keeps_the_chunk_s_bounds_at_its_ends() -> None:
    tried, attempt = worker(lambda item: "bad" if item == 11 else None)

    await isolate(chunk_of(11, 12, final=False), attempt, key=key, room=room())

    assert tried == [([11, 12], 10, 12, False), ([11], 10, 11, False), ([12], 11, 12, False)]


async def test_items_failing_each_their_own_way_are_all_skipped_in_read_order() -> None:
    tried, attempt = worker(lambda item: f"bad {item}" if item in (2, 7, 8) else None)

    outcome = await isolate(chunk_of(1, 8), attempt, key=key, room=room())

    assert outcome.skipped == [2, 7, 8]
    assert [done.output for _, done in outcome.parts] == [[1], [3, 4], [5, 6]]
    assert str(outcome.error) == "bad 8"  # the last met, breadth first
    assert len(tried) == 1 + 2 + 4 + 4  # singles of the two failing quarters only


async def test_a_fault_every_part_meets_alike_down_to_the_eighths_is_not_about_items() -> None:
    tried, attempt = worker(lambda item: "peer answers garbage")

    with pytest.raises(NotAboutItems) as raised:
        await isolate(chunk_of(1, 8), attempt, key=key, room=room())

    assert str(raised.value) == ("Bad: peer answers garbage (met alike by every part of a chunk)")
    assert len(tried) == 1 + 2 + 4 + 8


async def test_a_chunk_of_fewer_than_eight_items_has_no_eighths_its_items_are_skipped() -> None:
    tried, attempt = worker(lambda item: "peer answers garbage")

    outcome = await isolate(chunk_of(1, 7), attempt, key=key, room=room())

    assert outcome.skipped == [1, 2, 3, 4, 5, 6, 7]
    assert outcome.parts == []
    assert len(tried) == 1 + 2 + 4 + 6


async def test_faults_of_one_type_but_other_messages_pin_the_fault_on_the_items() -> None:
    _, attempt = worker(lambda item: "low" if item <= 4 else "high")

    outcome = await isolate(chunk_of(1, 8), attempt, key=key, room=room())

    assert outcome.skipped == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_faults_of_other_types_with_one_message_pin_the_fault_on_the_items() -> None:
    async def attempt(part: Chunk[int]) -> Processed[None]:
        raise (Bad if part.items[0] <= 4 else ValueError)("same words")

    outcome = await isolate(chunk_of(1, 8), attempt, key=key, room=room())

    assert outcome.skipped == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_a_part_whose_items_were_all_filtered_does_not_pin_the_fault() -> None:
    """Items 1-8 are all filtered (they never met the failing lookup); 9-16 fail alike."""
    tried, attempt = worker(lambda item: "lookup down" if item > 8 else None, lambda item: True)

    with pytest.raises(NotAboutItems):
        await isolate(chunk_of(1, 16), attempt, key=key, room=room())

    assert len(tried) == 1 + 2 + 2 + 4 + 8


async def test_a_part_with_one_item_not_filtered_pins_the_fault() -> None:
    _, attempt = worker(lambda item: "lookup down" if item > 8 else None, lambda item: item > 1)

    outcome = await isolate(chunk_of(1, 16), attempt, key=key, room=room())

    assert outcome.skipped == list(range(9, 17))
    assert [done.filtered for _, done in outcome.parts] == [7]


async def test_an_availability_fault_is_raised_as_itself_at_any_level() -> None:
    calls = 0

    async def attempt(part: Chunk[int]) -> Processed[None]:
        nonlocal calls
        calls += 1
        raise Bad("bad") if calls == 1 else Away("gone")

    with pytest.raises(Away):
        await isolate(chunk_of(1, 8), attempt, key=key, room=room())
    assert calls == 2


async def test_no_part_is_tried_once_more_items_failed_than_the_skips_left() -> None:
    """Items 3, 4 and 6 fail on their own, with 1 skip left: the level of single items
    stops at the second failure, and 6 is never tried alone."""
    tried, attempt = worker(lambda item: f"bad {item}" if item in (3, 4, 6) else None)

    outcome = await isolate(chunk_of(1, 8), attempt, key=key, room=room(1))

    assert [items for items, *_ in tried] == [
        [1, 2, 3, 4, 5, 6, 7, 8],
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        [1, 2],
        [3, 4],
        [5, 6],
        [7, 8],
        [3],
        [4],
    ]
    assert outcome.skipped == [3, 4]


async def test_as_many_failures_as_skips_left_go_on_to_the_next_part() -> None:
    tried, attempt = worker(lambda item: f"bad {item}" if item in (3, 4, 6) else None)

    outcome = await isolate(chunk_of(1, 8), attempt, key=key, room=room(2))

    assert [items for items, *_ in tried][-4:] == [[3], [4], [5], [6]]
    assert outcome.skipped == [3, 4, 6]


async def test_the_next_level_is_not_tried_once_more_items_failed_than_the_skips_left() -> None:
    """Items 1 and 2 fail, 0 skips left: after the level where both failed, no part of the
    second half is tried alone."""
    tried, attempt = worker(lambda item: f"bad {item}" if item in (1, 4) else None)

    outcome = await isolate(chunk_of(1, 4), attempt, key=key, room=room(0))

    assert [items for items, *_ in tried] == [[1, 2, 3, 4], [1, 2], [3, 4], [1]]
    assert outcome.skipped == [1]


async def test_a_run_wide_lookup_gives_its_value() -> None:
    async def lookup() -> int:
        return 7

    assert await run_wide(lookup()) == 7


async def test_a_run_wide_lookup_s_data_fault_is_not_about_items() -> None:
    fault = Bad("no such table")

    async def lookup() -> int:
        raise fault

    with pytest.raises(NotAboutItems) as raised:
        await run_wide(lookup())
    assert str(raised.value) == "Bad: no such table (from a lookup not about the chunk's items)"
    assert raised.value.__cause__ is fault


async def test_a_run_wide_lookup_s_availability_fault_is_raised_as_itself() -> None:
    async def lookup() -> int:
        raise Away("gone")

    with pytest.raises(Away):
        await run_wide(lookup())


async def test_the_last_part_ends_at_the_chunk_s_checkpoint_not_its_last_item() -> None:
    """A final chunk's checkpoint may lie past its last item (the end of the range)."""
    tried, attempt = worker(lambda item: "bad" if item == 1 else None)

    await isolate(
        Chunk([1, 2], checkpoint="end", after=0, final=True), attempt, key=key, room=room()
    )

    assert tried == [([1, 2], 0, "end", True), ([1], 0, 1, False), ([2], 1, "end", True)]


async def test_a_fault_not_pinned_is_halved_to_the_end_whatever_the_skips_left() -> None:
    """Fewer than eight items failing alike are all skipped, as many as they are: the skip
    limit then fails the step at its commit."""
    _, attempt = worker(lambda item: "peer answers garbage")

    outcome = await isolate(chunk_of(1, 7), attempt, key=key, room=room(0))

    assert outcome.skipped == [1, 2, 3, 4, 5, 6, 7]


async def test_a_later_part_whose_items_were_all_filtered_does_not_pin_the_fault() -> None:
    tried, attempt = worker(lambda item: "lookup down" if item <= 8 else None, lambda item: True)

    with pytest.raises(NotAboutItems):
        await isolate(chunk_of(1, 16), attempt, key=key, room=room())

    assert len(tried) == 1 + 2 + 2 + 4 + 8
