"""The ids of a time window of `coupon_histories`, found through the primary key alone.

The table is an insert-only log with no index but its primary key, and its ids grow
with `created_at`, though not exactly: several app instances, clock skew and long
transactions put a row's `created_at` somewhat before that of a row with a smaller id.
The search assumes that disorder is bounded by `slack`: for ids a < b,
created_at(a) <= created_at(b) + slack. Then every row of the window [start, end] has
a greater id than any row created before start - slack, and a smaller id than any row
created after end + slack; a binary search over ids finds such rows next to the window
with a few dozen point lookups (each the first row at or after an id).

The rows the search reads, and a few more at even steps over the ids, are checked
against each other: two that break the assumption mean the ids do not follow time,
and the caller must read the whole table instead. A disorder the lookups do not meet
(a backfilled range of ids, say) goes unseen: that is what `STATS_READ=full` is for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.edges.db import DbPool, fetch_all, transaction

Found = tuple[int, datetime]  # (id, created_at) of a row
# The first row whose id is at least the one given; None when there is none.
Probe = Callable[[int], Awaitable[Found | None]]
IdRange = tuple[int | None, int | None]  # ids from (included) .. to (excluded); None: open

_SAMPLES = 8  # the ids are cut in as many steps, the row at each cut checked too
_FIRST = "SELECT id, created_at FROM coupon_histories ORDER BY id LIMIT 1"
_LAST = "SELECT id, created_at FROM coupon_histories ORDER BY id DESC LIMIT 1"
_AT_OR_AFTER = "SELECT id, created_at FROM coupon_histories WHERE id >= %s ORDER BY id LIMIT 1"
_CREATED_AT_INDEX = (
    "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()"
    " AND TABLE_NAME = 'coupon_histories' AND SEQ_IN_INDEX = 1 AND COLUMN_NAME = 'created_at'"
    " LIMIT 1"
)


@dataclass(frozen=True)
class Span:
    """The ids that hold every row of the window; `first`..`last` the ids of the table's
    first and last rows (None: the table is empty); `lookups` the rows read to find it."""

    ids: IdRange
    first: int | None
    last: int | None
    lookups: int

    @property
    def bounds(self) -> tuple[int, int] | None:
        """The span's first and last ids, closed at the table's ends; None when empty."""
        if self.first is None or self.last is None:
            return None
        low = self.first if self.ids[0] is None else self.ids[0]
        high = self.last if self.ids[1] is None else self.ids[1] - 1
        return (low, high) if low <= high else None


async def _crossing(
    probe: Probe, below: Found, above: Found, reached: Callable[[datetime], bool]
) -> tuple[Found, Found] | None:
    """Two rows next to each other in id order, the first not `reached`, the second
    `reached`, between `below` (not reached) and `above` (reached): a bisection over
    ids, one lookup per halving. None when a lookup finds no row (rows deleted meanwhile)."""
    low, high = below[0], above[0]
    while high - low > 1:
        middle = (low + high) // 2
        row = await probe(middle)
        if row is None:
            return None
        if reached(row[1]):
            high, above = middle, row
        else:
            low, below = middle, row
    return below, above


def _ordered(rows: list[Found], slack: timedelta) -> bool:
    """Whether the rows keep the assumption: in id order, no row was created more than
    `slack` after a later one."""
    latest: datetime | None = None
    for _, at in sorted(set(rows)):
        if latest is not None and latest - at > slack:
            return False
        if latest is None or at > latest:
            latest = at
    return True


async def search_span(
    probe: Probe, first: Found, last: Found, start: datetime, end: datetime, slack: timedelta
) -> Span | None:
    """The ids that hold every row created in [start, end], from the table's `first` and
    `last` rows and lookups of single rows by id; None when a row read breaks the
    assumption (see the module), and the window's rows cannot be told by id."""
    seen = [first, last]

    async def look(row_id: int) -> Found | None:
        row = await probe(row_id)
        if row is not None:
            seen.append(row)
        return row

    for step in range(1, _SAMPLES):
        await look(first[0] + (last[0] - first[0]) * step // _SAMPLES)
    # the slack stops at the calendar's ends (a window may start on 0001-01-01)
    earliest = start - min(slack, start - datetime.min)
    latest = end + min(slack, datetime.max - end)
    low: int | None = None
    high: int | None = None
    below = first  # a row created before `latest`, to search the upper end from
    if first[1] < earliest:
        if last[1] < earliest:
            low = last[0] + 1  # only rows still to come can be in the window
            below = last
        else:
            found = await _crossing(look, first, last, lambda at: at >= earliest)
            if found is None:
                return None
            below, _ = found
            low = below[0] + 1
    if last[1] > latest:
        if first[1] > latest:
            high = first[0]  # no row is in the window
        else:
            found = await _crossing(look, below, last, lambda at: at > latest)
            if found is None:
                return None
            high = found[1][0]
    if not _ordered(seen, slack):
        return None
    return Span(ids=(low, high), first=first[0], last=last[0], lookups=len(seen))


async def window_span(
    pool: DbPool, start: datetime, end: datetime, slack: timedelta
) -> Span | None:
    """`search_span` over the table, its lookups on one connection of the pool, all of
    them within one stall deadline (a few dozen point lookups: milliseconds)."""
    async with transaction(pool) as conn, conn.cursor() as cur:

        async def fetch_one(sql: str, args: tuple[int, ...] = ()) -> Found | None:
            await cur.execute(sql, args)
            row = await cur.fetchone()
            return None if row is None else (int(row[0]), row[1])

        first = await fetch_one(_FIRST)
        last = await fetch_one(_LAST)
        if first is None or last is None:
            return Span(ids=(None, None), first=None, last=None, lookups=0)
        return await search_span(
            lambda row_id: fetch_one(_AT_OR_AFTER, (row_id,)), first, last, start, end, slack
        )


async def created_at_index(pool: DbPool) -> str | None:
    """The name of an index of `coupon_histories` whose first column is `created_at`."""
    rows = await fetch_all(pool, _CREATED_AT_INDEX)
    return str(rows[0][0]) if rows else None
