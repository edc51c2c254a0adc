"""The binary search for a window's ids over an in-memory table (history_window.search_span)."""

from __future__ import annotations

import random
from bisect import bisect_left
from datetime import datetime, timedelta

import pytest

from app.jobs.history_window import Found, Span, search_span

T0 = datetime(2025, 1, 1)
HOUR = timedelta(hours=1)
SLACK = timedelta(minutes=60)


class Table:
    """Rows (id, created_at) in id order; `probe` is the first row at or after an id."""

    def __init__(self, rows: list[Found]) -> None:
        self.rows = sorted(rows)
        self.ids = [row_id for row_id, _ in self.rows]
        self.lookups: list[int] = []

    async def probe(self, row_id: int) -> Found | None:
        self.lookups.append(row_id)
        i = bisect_left(self.ids, row_id)
        return self.rows[i] if i < len(self.rows) else None

    async def span(self, start: datetime, end: datetime, slack: timedelta = SLACK) -> Span | None:
        return await search_span(self.probe, self.rows[0], self.rows[-1], start, end, slack)

    def inside(self, span: Span) -> list[Found]:
        low, high = span.ids
        return [
            (i, at)
            for i, at in self.rows
            if (low is None or i >= low) and (high is None or i < high)
        ]


def hourly(count: int) -> Table:
    """Row i (1..count) created at T0 + i hours."""
    return Table([(i, T0 + i * HOUR) for i in range(1, count + 1)])


async def test_the_span_of_a_window_in_an_ordered_table() -> None:
    table = hourly(100)
    # earliest = 38:30 (row 38 is before it), latest = 61:30 (row 62 is after it)
    span = await table.span(T0 + 40 * HOUR, T0 + 60 * HOUR, timedelta(minutes=90))
    assert span == Span(ids=(39, 62), first=1, last=100, lookups=2 + len(table.lookups))
    assert span.bounds == (39, 61)
    # 7 rows at even steps, two bisections of about log2(100) lookups each
    assert len(table.lookups) <= 7 + 2 * 7


async def test_rows_on_the_slack_edges_are_in_the_span() -> None:
    table = hourly(100)
    span = await table.span(T0 + 41 * HOUR, T0 + 59 * HOUR)  # earliest 40:00, latest 60:00
    assert span is not None and span.ids == (40, 61)


@pytest.mark.parametrize(
    ("start", "end", "ids", "bounds"),
    [
        (T0 + 200 * HOUR, T0 + 300 * HOUR, (11, None), None),  # after every row
        (T0 - 300 * HOUR, T0 - 200 * HOUR, (None, 1), None),  # before every row
        (T0 - 300 * HOUR, T0 + 300 * HOUR, (None, None), (1, 10)),  # around every row
        (T0 + 5 * HOUR, T0 + 300 * HOUR, (4, None), (4, 10)),  # the newest rows
        (T0 - 300 * HOUR, T0 + 5 * HOUR, (None, 7), (1, 6)),  # the oldest rows
    ],
)
async def test_windows_at_the_ends_of_the_table(
    start: datetime, end: datetime, ids: tuple, bounds: tuple | None
) -> None:
    span = await hourly(10).span(start, end)
    assert span is not None
    assert (span.ids, span.bounds) == (ids, bounds)


async def test_windows_on_the_ends_of_the_calendar() -> None:
    first = datetime(1, 1, 1)
    table = Table([(1, first), (2, first + HOUR), (3, first + 3 * HOUR)])
    assert (await table.span(first, first + timedelta(minutes=1))).ids == (None, 3)
    last = datetime(9999, 12, 31, 23, 59, 59)
    table = Table([(1, last - 3 * HOUR), (2, last - HOUR), (3, last)])
    assert (await table.span(last - timedelta(minutes=1), last)).ids == (2, None)


async def test_one_row() -> None:
    table = Table([(7, T0)])
    assert (await table.span(T0, T0)).ids == (None, None)
    assert (await table.span(T0 + 5 * HOUR, T0 + 6 * HOUR)).ids == (8, None)
    assert (await table.span(T0 - 6 * HOUR, T0 - 5 * HOUR)).ids == (None, 7)


@pytest.mark.parametrize("seed", range(40))
async def test_jittered_ids_with_gaps_every_row_of_the_window_in_a_tight_span(seed: int) -> None:
    """Ids with gaps (negative and beyond 2^62 too), created in id order up to +-jitter:
    two rows are out of order by at most twice the jitter, here at most the slack."""
    rng = random.Random(seed)
    jitter = rng.choice([0, 5 * 60, 15 * 60, 30 * 60])
    row_id = rng.choice([1, -(2**62), 2**62])
    rows = []
    for k in range(rng.randint(50, 3000)):
        row_id += rng.choice([1, 1, 1, 2, 17, 1000])
        base = T0 + timedelta(minutes=10 * k)
        rows.append((row_id, base + timedelta(seconds=rng.randint(-jitter, jitter))))
    table = Table(rows)
    first, last = rows[0][1], rows[-1][1]
    start = first + (last - first) * rng.uniform(-0.1, 0.9)
    end = start + timedelta(days=rng.uniform(0, 10))
    span = await table.span(start, end)
    assert span is not None
    inside = table.inside(span)
    assert [r for r in rows if start <= r[1] <= end] == [r for r in inside if start <= r[1] <= end]
    # nothing beyond the slack and twice the jitter around the window
    margin = SLACK + timedelta(seconds=2 * jitter)
    assert all(start - margin <= at <= end + margin for _, at in inside)
    assert len(table.lookups) <= 7 + 2 * ((rows[-1][0] - rows[0][0]).bit_length() + 1)


async def test_ids_out_of_time_order_are_refused() -> None:
    rng = random.Random(3)
    times = [T0 + timedelta(minutes=rng.randrange(60 * 24 * 60)) for _ in range(1000)]
    table = Table(list(enumerate(times, start=1)))
    assert await table.span(T0 + timedelta(days=20), T0 + timedelta(days=40)) is None


async def test_two_rows_out_of_order_beyond_the_slack_on_the_search_path_are_seen() -> None:
    rows = [(i, T0 + i * HOUR) for i in range(1, 101)]
    window = (T0 + 70 * HOUR, T0 + 80 * HOUR)
    table = Table(rows)
    assert (await table.span(*window)).ids == (69, 82)
    assert table.lookups[3:6:2] == [50, 75]  # two of the rows at even steps
    # row 75 created before row 50 by more than the slack: the search would start the
    # span after row 75 and lose rows 70..74; it sees the two rows and refuses
    early = [(i, at - 30 * HOUR) if i == 75 else (i, at) for i, at in rows]
    assert await Table(early).span(*window) is None
    # created before its place by the slack only: within the assumption
    near = [(i, at - SLACK) if i == 75 else (i, at) for i, at in rows]
    assert (await Table(near).span(*window)).ids == (69, 82)


async def test_rows_deleted_during_the_search() -> None:
    table = hourly(100)

    async def gone(row_id: int) -> Found | None:
        return None

    found = await search_span(
        gone, table.rows[0], table.rows[-1], T0 + 50 * HOUR, T0 + 51 * HOUR, SLACK
    )
    assert found is None
