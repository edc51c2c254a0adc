"""history_window against MariaDB: the span of a window from lookups by primary key."""

from __future__ import annotations

from datetime import datetime, timedelta

from asyncmy.pool import Pool

from app.jobs.history_window import Span, created_at_index, window_span

T0 = datetime(2025, 9, 1)
SLACK = timedelta(minutes=60)
WINDOW = (datetime(2025, 10, 6), datetime(2025, 10, 26, 23, 59, 59))


async def add(pool: Pool, rows: list[tuple[int, datetime]]) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (id, member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, 1, 1, 1, 1, 'USED', %s)",
            rows,
        )


def every_ten_minutes(first_id: int, count: int) -> list[tuple[int, datetime]]:
    """Ids first_id.., every other id (gaps), one row every 10 minutes from T0."""
    return [(first_id + 2 * k, T0 + timedelta(minutes=10 * k)) for k in range(count)]


async def test_the_span_of_the_window(pool: Pool) -> None:
    rows = every_ten_minutes(1001, 9 * 7 * 24 * 6)  # 9 weeks from 2025-09-01
    await add(pool, rows)
    span = await window_span(pool, *WINDOW, SLACK)
    # the last row before 10-05 23:00 and the first after 10-27 01:00
    low = max(i for i, at in rows if at < WINDOW[0] - SLACK) + 1
    high = min(i for i, at in rows if at > WINDOW[1] + SLACK)
    assert span is not None
    assert (span.ids, span.first, span.last) == ((low, high), 1001, rows[-1][0])
    assert span.bounds == (low, high - 1)
    assert span.lookups <= 9 + 2 * 15  # 9 + 2 * log2(18,000 ids)


async def test_rows_in_the_jitter_of_both_ends(pool: Pool) -> None:
    """Rows a few minutes out of id order at both ends of the window and at the span's."""
    rows = every_ten_minutes(1, 9 * 7 * 24 * 6)
    times = dict(rows)
    # a row on the window's first second with a greater id than rows after it; and the
    # rows next to both ends of the span swapped in pairs
    start_row = next(i for i, at in rows if at == WINDOW[0])
    times[start_row], times[start_row + 4] = times[start_row + 4], times[start_row]
    before = max(i for i, at in rows if at < WINDOW[0] - SLACK)
    after = min(i for i, at in rows if at > WINDOW[1] + SLACK)
    times[before], times[before + 2] = times[before + 2], times[before]
    times[after], times[after - 2] = times[after - 2], times[after]
    await add(pool, sorted(times.items()))
    span = await window_span(pool, *WINDOW, SLACK)
    assert span is not None
    inside = [i for i, at in times.items() if WINDOW[0] <= at <= WINDOW[1]]
    low, high = span.ids
    assert low is not None and high is not None
    assert low <= min(inside) and max(inside) < high
    assert high - low <= (max(inside) - min(inside)) + 2 * 6 * 2 * 2 + 8  # slack: 6 rows an hour


async def test_the_newest_rows_leave_the_end_open(pool: Pool) -> None:
    rows = every_ten_minutes(1, 6 * 24 * 40)  # 40 days: up to 2025-10-10 23:50
    await add(pool, rows)
    span = await window_span(pool, *WINDOW, SLACK)
    low = max(i for i, at in rows if at < WINDOW[0] - SLACK) + 1
    assert span == Span(ids=(low, None), first=1, last=rows[-1][0], lookups=span.lookups)


async def test_an_empty_table_and_a_table_out_of_time_order(pool: Pool) -> None:
    assert await window_span(pool, *WINDOW, SLACK) == Span((None, None), None, None, 0)
    rows = every_ten_minutes(1, 6 * 24 * 56)
    shuffled = [(i, rows[(k * 7919) % len(rows)][1]) for k, (i, _) in enumerate(rows)]
    await add(pool, shuffled)
    assert await window_span(pool, *WINDOW, SLACK) is None


async def test_an_index_on_created_at_is_found(pool: Pool) -> None:
    assert await created_at_index(pool) is None
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "ALTER TABLE coupon_histories ADD INDEX by_member_time (member_id, created_at)"
        )
        try:
            assert await created_at_index(pool) is None  # created_at is not its first column
            await cur.execute("ALTER TABLE coupon_histories ADD INDEX by_time (created_at, id)")
            assert await created_at_index(pool) == "by_time"
        finally:
            await cur.execute(
                "ALTER TABLE coupon_histories DROP INDEX IF EXISTS by_member_time,"
                " DROP INDEX IF EXISTS by_time"
            )
