"""couponUsageStatsJob end to end: the real runtime, MariaDB, the fake store service over HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
from datetime import date, datetime, timedelta
from operator import itemgetter
from pathlib import Path

import pytest
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.edges.peers import REGIONS
from app.jobs.usage_stats import UsageStatsStep
from app.jobs.usage_stats_spec import SPEC
from app.model import JobExecution
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from tests.samples import SAMPLE_STORES
from tests.settings import make_settings
from tests.waits import waiting

# The old service's own test rows, as the demo loads them.
FIXTURE_SQL = (
    Path(__file__).resolve().parents[2] / "scripts/demo_data/coupon_histories.sql"
).read_text(encoding="utf-8")
RUN_DATE = "2025-10-26"  # window: 2025-10-06 00:00:00 .. 2025-10-26 23:59:59
DAY = date(2025, 10, 26)
UNKNOWN_STORE = 99  # the fake store service has no dong for it

STORES = {
    **SAMPLE_STORES,
    50: "🍜동",
    51: "힣동",
    52: "Sang'do\\dong\"; --",
    60: "Bdong",
    61: "adong",
    **{100 + m: f"크래시{m}동" for m in range(1, 11)},
}

# ---- helpers ---------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    data = {"stores": {str(k): v for k, v in STORES.items()}, "tokens": {}}
    async with run_fake_peers(data) as peers:
        yield peers


def job_settings(settings: Settings, fake: FakePeers, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "DB_URL": settings.DB_URL,
        "STORE_SERVICE_URL": fake.store_url,
        "NOTIFICATION_SERVICE_URL": fake.notification_url,
        "CHUNK_SIZE": 2,
        "RETRY_BASE_SECONDS": 0.01,
    }
    values.update(overrides)
    return make_settings(**values)


async def run_job(
    settings: Settings, run_date: str = RUN_DATE, *, rerun: bool = True
) -> JobExecution:
    async with open_resources(settings, broker=False) as resources:
        spec = find_job(JOBS, "coupon-usage-stats")
        return await Launcher(resources, JOBS).run(spec, {"runDate": run_date}, rerun=rerun)


async def add_histories(pool: Pool, rows: Iterable[tuple]) -> None:
    """(member_id, store_id, created_at[, status]) rows; status USED by default."""
    values = [(m, 1, s, 1, rest[0] if rest else "USED", at) for m, s, at, *rest in rows]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            values,
        )


async def stats(pool: Pool) -> list[tuple]:
    return [
        tuple(row)
        for row in await fetch_all(
            pool,
            "SELECT member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats"
            " ORDER BY aggregated_at, member_id, id",
        )
    ]


def counts(execution: JobExecution) -> dict[str, int]:
    (step,) = execution.steps
    return {
        "read": step.read_count,
        "written": step.write_count,
        "filtered": step.filter_count,
        "skipped": step.skip_count,
    }


def asked_stores(fake: FakePeers) -> list[int]:
    return sorted(store for body in fake.calls.get(REGIONS, []) for store in body)


WEEK = [f"2025-10-1{d} 10:00:00" for d in range(7)]


def rows_of(member: int, store: int, *times: str, status: str = "USED") -> list[tuple]:
    return [(member, store, at, status) for at in times]


# ---- the old service's rows ------------------------------------------------------

# runDate 2025-10-26, window 2025-10-06 00:00:00 .. 2025-10-26 23:59:59; September rows
# and member 4's February rows are outside it.
# - member 1: 12 rows in the window. 노량진동 (10-08, 10-20), 상도동 (10-10, 10-22),
#   흑석동 (10-11, 10-24), 신대방동 (10-13 11:00, 10-26 11:00) have 2 each, the rest 1.
#   Tie on count: the latest row wins, 신대방동 (10-26). Its hours: 11, 11 -> 11.
# - member 2: 12 rows. 풍무동 (latest 10-18), 상도동 (10-23), 흑석동 (10-20), 노량진동
#   (10-15 12:30, 10-25 13:00) have 2 each: 노량진동. Hours 12 and 13 once each: the
#   latest, 13.
# - member 3: 19 rows at store 9 (서교동) at 15:00, 3 others: 서교동, 15.
# - member 4: 4 rows in the window (10-20 x2, 10-21, 10-23): not eligible.
# - member 5: 5 rows; 상도동 3 (11:20, 12:20, 13:20 on 10-20): hours tie at 1, the
#   latest is 13:20 -> 13.
OLD_SERVICE_EXPECTED = [
    (1, "신대방동", 11, DAY),
    (2, "노량진동", 13, DAY),
    (3, "서교동", 15, DAY),
    (5, "상도동", 13, DAY),
]


async def load_old_service_rows(pool: Pool) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(FIXTURE_SQL)


async def test_old_service_rows(pool: Pool, settings: Settings, fake: FakePeers) -> None:
    await load_old_service_rows(pool)
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == OLD_SERVICE_EXPECTED
    assert counts(execution) == {"read": 5, "written": 4, "filtered": 1, "skipped": 0}
    assert asked_stores(fake) == [1, 2, 3, 4, 5, 6, 7, 9]  # each once; 8 is not in the rows


async def test_a_dry_run_writes_the_rows_it_would_store_and_stores_nothing(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """Before: the job took dryRun=true (and the CLI's --dry-run) but ran for real: it
    replaced the date's rows and completed the run date's instance, so that the 01:00
    run of that date was then refused (issue 26)."""
    await load_old_service_rows(pool)
    stale = (9, "풍무동", 4, DAY)  # what an earlier run stored: a real run replaces it
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (%s, %s, %s, %s)",
            stale,
        )
    spec = find_job(JOBS, "coupon-usage-stats")
    output = io.StringIO()
    async with open_resources(job_settings(settings, fake), broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        dry = await launcher.run(
            spec, {"runDate": RUN_DATE, "dryRun": "true"}, rerun=False, dry_run_output=output
        )
        assert (dry.status, dry.dry_run, counts(dry)) == (
            "COMPLETED",
            True,
            {"read": 5, "written": 4, "filtered": 1, "skipped": 0},
        )
        assert [json.loads(line) for line in output.getvalue().splitlines()] == [
            {"member_id": m, "top_dong": d, "top_hour": h, "aggregated_at": RUN_DATE}
            for m, d, h, _ in OLD_SERVICE_EXPECTED
        ]
        assert await stats(pool) == [stale]  # nothing stored, nothing removed
        # The run date's own instance neither ran nor completed: a real run without
        # --rerun is launched, and replaces the rows.
        real = await launcher.run(spec, {"runDate": RUN_DATE}, rerun=False)
    assert (real.status, real.dry_run, real.parameters) == (
        "COMPLETED",
        False,
        {"runDate": RUN_DATE},
    )
    assert real.instance_id != dry.instance_id
    assert await stats(pool) == OLD_SERVICE_EXPECTED


# ---- the rules, one member each ---------------------------------------------------


async def test_window_ends_to_the_second(pool: Pool, settings: Settings, fake: FakePeers) -> None:
    await add_histories(
        pool,
        # member 10: 5 rows only if both ends are in; hours 9 x2 and 23 x2 tie, 23 is
        # the latest (the window's last second)
        rows_of(10, 1, "2025-10-06 00:00:00", "2025-10-10 09:00:00", "2025-10-11 09:00:00")
        + rows_of(10, 1, "2025-10-20 23:00:00", "2025-10-26 23:59:59")
        # member 11: 4 rows inside, and one a second outside each end
        + rows_of(11, 2, *(f"2025-10-1{d} 12:00:00" for d in range(4)))
        + rows_of(11, 2, "2025-10-05 23:59:59", "2025-10-27 00:00:00"),
    )
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [(10, "노량진동", 23, DAY)]
    assert counts(execution) == {"read": 2, "written": 1, "filtered": 1, "skipped": 0}


async def test_five_usable_rows_after_dropping_unknown_stores(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    times = [f"2025-10-1{d} 10:00:00" for d in range(7)]
    await add_histories(
        pool,
        # member 20: 4 known + 3 unknown: 4 usable, not eligible
        rows_of(20, 1, *times[:4])
        + rows_of(20, UNKNOWN_STORE, *times[4:])
        # member 21: 5 known + 6 unknown (the unknown store would be the top): eligible
        + rows_of(21, 4, *times[:5])
        + rows_of(21, UNKNOWN_STORE, *(f"2025-10-2{d} 20:00:00" for d in range(6)))
        # member 22: only unknown stores
        + rows_of(22, UNKNOWN_STORE, *times),
    )
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [(21, "흑석동", 10, DAY)]
    assert counts(execution) == {"read": 3, "written": 1, "filtered": 2, "skipped": 0}
    assert asked_stores(fake) == [1, 4, UNKNOWN_STORE]


async def test_tie_breaks(pool: Pool, settings: Settings, fake: FakePeers) -> None:
    await add_histories(
        pool,
        # 30: count beats recency: 상도동 3 rows, 흑석동 2 later ones
        rows_of(30, 3, "2025-10-10 09:00:00", "2025-10-11 09:00:00", "2025-10-12 09:00:00")
        + rows_of(30, 4, "2025-10-20 18:00:00", "2025-10-21 18:00:00")
        # 31: dongs tie at 2: the latest wins (노량진동 10-25) over the greater name (풍무동);
        # stores 3 and 8 are both 상도동: one dong of 2 rows
        + rows_of(31, 1, "2025-10-10 07:00:00", "2025-10-25 08:00:00")
        + rows_of(31, 2, "2025-10-11 07:00:00", "2025-10-24 23:00:00")
        + rows_of(31, 3, "2025-10-12 07:00:00")
        + rows_of(31, 8, "2025-10-13 07:00:00")
        # 32: tie on count and latest: the greater name in code points, 'adong' > 'Bdong'
        # (a case-insensitive collation would say the opposite)
        + rows_of(32, 60, "2025-10-10 10:00:00", "2025-10-26 10:00:00")
        + rows_of(32, 61, "2025-10-11 11:00:00", "2025-10-26 10:00:00")
        + rows_of(32, 9, "2025-10-09 10:00:00")
        # 33: tie on count and latest between Hangul and ASCII: Hangul is greater
        + rows_of(33, 3, "2025-10-10 10:00:00", "2025-10-26 10:00:00")
        + rows_of(33, 61, "2025-10-11 11:00:00", "2025-10-26 10:00:00")
        + rows_of(33, 9, "2025-10-09 10:00:00")
        # 34: hours tie at 2 in the top dong: the latest wins (8 at 10-22) over 22
        + rows_of(34, 5, "2025-10-10 22:00:00", "2025-10-20 22:59:59")
        + rows_of(34, 5, "2025-10-11 08:00:00", "2025-10-22 08:00:00")
        + rows_of(34, 5, "2025-10-09 03:00:00")
        # 35: the hour with most rows wins over the latest one
        + rows_of(35, 6, *(f"2025-10-1{d} 09:30:00" for d in range(3)))
        + rows_of(35, 6, "2025-10-25 21:00:00", "2025-10-26 21:00:00")
        # 36: the top hour counts only the top dong's rows (hour 18 is the most used)
        + rows_of(36, 7, "2025-10-10 09:00:00", "2025-10-11 10:00:00", "2025-10-12 11:00:00")
        + rows_of(36, 9, "2025-10-13 18:00:00", "2025-10-14 18:00:00"),
    )
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [
        (30, "상도동", 9, DAY),
        (31, "노량진동", 8, DAY),
        (32, "adong", 10, DAY),
        (33, "상도동", 10, DAY),
        (34, "대방동", 8, DAY),
        (35, "신대방동", 9, DAY),
        (36, "사당동", 11, DAY),
    ]
    assert counts(execution) == {"read": 7, "written": 7, "filtered": 0, "skipped": 0}


async def test_member_outside_the_window(pool: Pool, settings: Settings, fake: FakePeers) -> None:
    await add_histories(
        pool,
        rows_of(40, 1, *(f"2025-09-1{d} 10:00:00" for d in range(9)))
        + rows_of(40, 1, *(f"2025-10-2{d} 10:00:00" for d in range(7, 10)))
        + rows_of(41, 2, *(f"2025-10-1{d} 10:00:00" for d in range(5))),
    )
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [(41, "풍무동", 10, DAY)]
    assert counts(execution) == {"read": 1, "written": 1, "filtered": 0, "skipped": 0}


async def test_dong_names_beyond_ascii(pool: Pool, settings: Settings, fake: FakePeers) -> None:
    await add_histories(
        pool,
        rows_of(50, 50, *(f"2025-10-1{d} 19:00:00" for d in range(5)))
        # 🍜 (U+1F35C) and 힣 (U+D7A3) tie on count and latest: 🍜 is the greater
        + rows_of(51, 50, "2025-10-10 07:00:00", "2025-10-26 07:00:00")
        + rows_of(51, 51, "2025-10-11 08:00:00", "2025-10-26 07:00:00")
        + rows_of(51, 1, "2025-10-12 09:00:00")
        # quotes and a backslash reach the table as they are
        + rows_of(52, 52, *(f"2025-10-1{d} 01:00:00" for d in range(5))),
    )
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [
        (50, "🍜동", 19, DAY),
        (51, "🍜동", 7, DAY),
        (52, STORES[52], 1, DAY),
    ]


async def test_issued_and_canceled_rows_are_ignored(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    times = [f"2025-10-1{d} 20:00:00" for d in range(6)]
    await add_histories(
        pool,
        # 60: 4 USED, plenty of others: not eligible
        rows_of(60, 1, *times[:4])
        + rows_of(60, 1, *times, status="ISSUED")
        + rows_of(60, 1, *times, status="CANCELED")
        # 61: 5 USED at 10:00; ISSUED and CANCELED in another dong and hour
        + rows_of(61, 2, *(f"2025-10-1{d} 10:00:00" for d in range(5)))
        + rows_of(61, 3, *times, status="ISSUED")
        + rows_of(61, 2, *times, status="CANCELED")
        # 62: nothing USED: not read at all
        + rows_of(62, 1, *times, status="ISSUED"),
    )
    execution = await run_job(job_settings(settings, fake))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [(61, "풍무동", 10, DAY)]
    assert counts(execution) == {"read": 2, "written": 1, "filtered": 1, "skipped": 0}
    assert asked_stores(fake) == [2]  # 60 has too few rows to need its store's dong


async def test_members_with_fewer_than_five_uses_cost_no_lookup_and_no_commit(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """Issue 30: a member with fewer than MIN_ROWS uses is read and filtered, with none
    of its stores looked up, and chunks count only the others (CHUNK_SIZE=2: 5
    candidates, 3 commits, where 10 members made 5). The rows are inserted in time
    order, so each member's rows spread over both read streams and over many fetches
    of 3 rows."""
    by_member = {
        # 1: exactly MIN_ROWS uses: eligible; hour 10 x3 beats 21 x2
        1: rows_of(1, 1, *(f"2025-10-1{d} 10:00:00" for d in range(3)))
        + rows_of(1, 1, "2025-10-13 21:00:00", "2025-10-14 21:00:00"),
        # 2: MIN_ROWS - 1 uses, at stores no candidate uses (5) or nobody knows (99)
        2: rows_of(2, 5, *(f"2025-10-1{d} 09:00:00" for d in range(3)))
        + rows_of(2, UNKNOWN_STORE, "2025-10-20 09:00:00"),
        3: rows_of(3, 6, "2025-10-15 12:00:00"),
        # 4: dongs tie on count (3) and latest (10-20 19:00): the greater name, 풍무동;
        # its hours: 7 x2 beats 19
        4: rows_of(4, 2, "2025-10-10 07:00:00", "2025-10-11 07:00:00", "2025-10-20 19:00:00")
        + rows_of(4, 3, "2025-10-12 07:00:00", "2025-10-13 07:00:00", "2025-10-20 19:00:00"),
        5: rows_of(5, 7, *(f"2025-10-2{d} 13:00:00" for d in range(4))),
        # 6: hours tie at 2: the latest wins (8 on 10-15 over 22 on 10-11)
        6: rows_of(6, 4, "2025-10-10 22:00:00", "2025-10-11 22:59:59", "2025-10-12 08:00:00")
        + rows_of(6, 4, "2025-10-15 08:00:00", "2025-10-09 03:00:00"),
        7: rows_of(7, 6, "2025-10-16 12:00:00", "2025-10-17 12:00:00"),
        # 8: 6 uses, one at an unknown store: 5 usable, eligible
        8: rows_of(8, 8, *(f"2025-10-1{d} 17:00:00" for d in range(5)))
        + rows_of(8, UNKNOWN_STORE, "2025-10-21 17:00:00"),
        # 9: MIN_ROWS uses, one at an unknown store: a candidate, 4 usable, filtered
        9: rows_of(9, 9, *(f"2025-10-1{d} 11:00:00" for d in range(4)))
        + rows_of(9, UNKNOWN_STORE, "2025-10-22 11:00:00"),
        10: rows_of(10, 5, *(f"2025-10-2{d} 15:00:00" for d in range(3))),
    }
    rows = [row for member_rows in by_member.values() for row in member_rows]
    await add_histories(pool, sorted(rows, key=itemgetter(2)))
    job = job_settings(settings, fake, CHUNK_SIZE=2, READ_STREAMS=2, FETCH_ROWS=3)
    execution = await run_job(job)
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [
        (1, "노량진동", 10, DAY),
        (4, "풍무동", 7, DAY),
        (6, "흑석동", 8, DAY),
        (8, "상도동", 17, DAY),
    ]
    assert counts(execution) == {"read": 10, "written": 4, "filtered": 6, "skipped": 0}
    assert execution.steps[0].commit_count == 3
    assert asked_stores(fake) == [1, 2, 3, 4, 8, 9, UNKNOWN_STORE]  # never 5, 6 or 7


async def test_a_window_of_occasional_members_alone_commits_bounded_chunks(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """With no candidate to fill a chunk, a chunk still ends at ten times CHUNK_SIZE
    members: 45 members of 1-4 uses at CHUNK_SIZE=2 make chunks of 20, 20 and 5."""
    await add_histories(
        pool,
        [row for m in range(1, 46) for row in rows_of(m, 1 + m % 9, *WEEK[: 1 + m % 4])],
    )
    execution = await run_job(job_settings(settings, fake, CHUNK_SIZE=2))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == []
    assert counts(execution) == {"read": 45, "written": 0, "filtered": 45, "skipped": 0}
    assert execution.steps[0].commit_count == 3
    assert asked_stores(fake) == []


# ---- idempotence, caching, failures ---------------------------------------------


async def test_rerun_replaces_the_dates_rows_only(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    await load_old_service_rows(pool)
    other_dates = [(1, "옛동", 3, date(2025, 10, 25)), (2, "옛동", 4, date(2025, 10, 27))]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (%s, %s, %s, %s)",
            [*other_dates, (3, "옛동", 5, DAY)],  # a row of the date from before: replaced
        )
    job = job_settings(settings, fake)
    for _ in range(3):
        execution = await run_job(job, rerun=True)
        assert execution.status == "COMPLETED", execution.exit_message
        assert await stats(pool) == [other_dates[0], *OLD_SERVICE_EXPECTED, other_dates[1]]


async def test_rerun_removes_the_row_of_a_member_no_longer_eligible(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """A chunk whose members are all filtered still replaces their rows of the date."""
    await load_old_service_rows(pool)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (4, '옛동', 9, %s)",
            (DAY,),
        )
    execution = await run_job(job_settings(settings, fake, CHUNK_SIZE=1), rerun=True)
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == OLD_SERVICE_EXPECTED  # member 4 (4 rows) lost its row


async def test_each_store_asked_once_with_concurrent_workers(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    # 40 members: member m uses store s = m % 9 + 1 five times at hour m % 24, and the
    # next store once; stores overlap between chunks handled at the same moment.
    rows = []
    expected = []
    for m in range(1, 41):
        store = m % 9 + 1
        rows += rows_of(m, store, *(f"2025-10-1{d} {m % 24:02d}:15:00" for d in range(5)))
        rows += rows_of(m, store % 9 + 1, "2025-10-20 05:00:00")
        expected.append((m, STORES[store], m % 24, DAY))
    await add_histories(pool, rows)
    fake.control.latency_ms = 30
    job = job_settings(settings, fake, ENRICH_WORKERS=4, STORE_LOOKUP_BATCH=2, QUEUE_SIZE=4)
    execution = await run_job(job)
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == expected
    assert counts(execution) == {"read": 40, "written": 40, "filtered": 0, "skipped": 0}
    assert asked_stores(fake) == list(range(1, 10))
    assert all(len(body) <= 2 for body in fake.calls[REGIONS])


async def test_rows_are_written_in_member_order_when_a_chunk_meets_a_new_store(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """A member with a store not looked up yet is computed after the others of its chunk
    (UsageStatsStep.process); its row must still be inserted in member order, as Spring's
    writer inserted the chunk's items, so that the rows' ids follow the members."""
    stores = {1: 1, 2: 1, 3: 2, 4: 1, 5: 3, 6: 1}  # member -> its one store
    for member, store in stores.items():
        await add_histories(
            pool, rows_of(member, store, *(f"2025-10-1{d} 09:00" for d in range(5)))
        )
    execution = await run_job(job_settings(settings, fake, CHUNK_SIZE=3, ENRICH_WORKERS=1))
    assert execution.status == "COMPLETED", execution.exit_message
    written = await fetch_all(
        pool, "SELECT member_id, top_dong FROM coupon_usage_stats ORDER BY id"
    )
    assert [tuple(row) for row in written] == [(m, STORES[s]) for m, s in stores.items()]
    assert asked_stores(fake) == [1, 2, 3]


@pytest.mark.parametrize(("streams", "fetch_rows"), [(1, 5000), (2, 3), (3, 1)])
async def test_members_spread_over_the_id_ranges_of_the_read_streams(
    pool: Pool, settings: Settings, fake: FakePeers, streams: int, fetch_rows: int
) -> None:
    # Inserted round by round, so each member's rows are spread over every id range:
    # member m uses store m % 9 + 1 at hour m on days 10..15, and store 1 at 01:00 on
    # day 16. Member 7 uses its store on 5 days only (6 rows: eligible), member 8 on 3
    # (4 rows: not eligible).
    rows = []
    for day in range(10, 17):
        for m in range(1, 9):
            if day == 16:
                rows += rows_of(m, 1, f"2025-10-{day} 01:00:00")
            elif day - 10 < {7: 5, 8: 3}.get(m, 6):
                rows += rows_of(m, m % 9 + 1, f"2025-10-{day} {m:02d}:30:00")
    await add_histories(pool, rows)
    job = job_settings(settings, fake, READ_STREAMS=streams, FETCH_ROWS=fetch_rows)
    execution = await run_job(job)
    assert execution.status == "COMPLETED", execution.exit_message
    expected = [(m, STORES[m % 9 + 1], m, DAY) for m in range(1, 8)]
    assert await stats(pool) == expected
    assert counts(execution) == {"read": 8, "written": 7, "filtered": 1, "skipped": 0}


CRASH_MEMBERS = range(1, 11)


async def add_crash_rows(pool: Pool) -> list[tuple]:
    """Member m: its own store 100 + m, 5 rows at hour m (member 5: 4 rows)."""
    rows = []
    expected = []
    for m in CRASH_MEMBERS:
        uses = 4 if m == 5 else 5
        rows += rows_of(m, 100 + m, *(f"2025-10-1{d} {m:02d}:00:00" for d in range(uses)))
        if uses == 5:
            expected.append((m, STORES[100 + m], m, DAY))
    await add_histories(pool, rows)
    return expected


async def test_crash_then_restart_from_the_checkpoint(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    expected = await add_crash_rows(pool)
    # One worker, one store call per chunk of 2 members. From the 3rd call on, the store
    # service answers 503: that call is held 50 ms, long enough to switch failures on.
    fake.control.latency_ms = 50
    job = job_settings(settings, fake, ENRICH_WORKERS=1, QUEUE_SIZE=1, SKIP_LIMIT=0)

    async def fail_from_third_call() -> None:
        async with waiting(60, "the store service's third call"):
            while len(fake.calls[REGIONS]) < 3:  # noqa: ASYNC110 (the fake has no event)
                await asyncio.sleep(0.001)
        fake.control.update({"fail_status": 503, "fail_times": -1})

    breaker = asyncio.create_task(fail_from_third_call())
    crashed = await run_job(job, rerun=False)
    await breaker
    assert crashed.status == "FAILED"
    assert crashed.exit_message == (
        "PeerUnavailable: store service /internal/v1/stores/regions: HTTP 503"
    )
    (step,) = crashed.steps
    assert step.status == "FAILED"
    assert step.checkpoint == 4  # chunks (1, 2) and (3, 4) committed
    assert counts(crashed) == {"read": 4, "written": 4, "filtered": 0, "skipped": 0}
    assert await stats(pool) == expected[:4]

    fake.control.update({"fail_status": None, "latency_ms": 0})
    resumed = await run_job(job, rerun=False)
    assert resumed.status == "COMPLETED", resumed.exit_message
    assert resumed.instance_id == crashed.instance_id
    assert counts(resumed) == {"read": 6, "written": 5, "filtered": 1, "skipped": 0}
    assert await stats(pool) == expected

    uninterrupted = await run_job(job, rerun=True)
    assert uninterrupted.status == "COMPLETED", uninterrupted.exit_message
    assert counts(uninterrupted) == {"read": 10, "written": 9, "filtered": 1, "skipped": 0}
    assert await stats(pool) == expected


async def test_concurrent_runs_on_a_pool_of_two_connections(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    # The streams have connections of their own, outside the pool: drawn from a pool
    # of two, one run's two streams would hold it all and wait on their own commits.
    expected = await add_crash_rows(pool)
    job = job_settings(settings, fake, DB_POOL_SIZE=2, READ_STREAMS=2, CHUNK_SIZE=1, QUEUE_SIZE=1)
    days = [date(2025, 10, 26), date(2025, 10, 27), date(2025, 10, 28)]
    async with open_resources(job, broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        spec = find_job(JOBS, "coupon-usage-stats")
        runs = [launcher.run(spec, {"runDate": day.isoformat()}, rerun=True) for day in days]
        async with waiting(60, "the three runs on a pool of two"):
            executions = await asyncio.gather(*runs)
    assert [execution.status for execution in executions] == ["COMPLETED"] * 3
    assert await stats(pool) == [
        (m, dong, hour, day) for day in days for m, dong, hour, _ in expected
    ]


async def test_store_service_fails_then_recovers_within_the_retries(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    await load_old_service_rows(pool)
    fake.control.update({"fail_status": 503, "fail_times": 1})
    execution = await run_job(job_settings(settings, fake, ENRICH_WORKERS=1))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == OLD_SERVICE_EXPECTED
    assert counts(execution) == {"read": 5, "written": 4, "filtered": 1, "skipped": 0}
    # the failed call's stores were asked again, and only those
    first, retry, *_ = fake.calls[REGIONS]
    assert sorted(first) == sorted(retry)
    assert len(asked_stores(fake)) == 8 + len(first)


async def test_store_service_down_briefly_is_retried_within_the_budget(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    await load_old_service_rows(pool)
    fake.control.update({"fail_status": 503, "fail_times": 3})
    job = job_settings(settings, fake, ENRICH_WORKERS=1, RETRY_BUDGET_SECONDS=5, SKIP_LIMIT=100)
    execution = await run_job(job)
    assert (execution.status, execution.exit_code) == ("COMPLETED", "COMPLETED")
    assert await stats(pool) == OLD_SERVICE_EXPECTED
    assert counts(execution) == {"read": 5, "written": 4, "filtered": 1, "skipped": 0}


async def test_store_service_down_the_whole_run_fails_the_step_and_skips_nothing(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """Before: every member skipped and the run COMPLETED (a night without stats that
    looked clean). An outage is an availability fault: the step fails, restartable."""
    await load_old_service_rows(pool)
    fake.control.update({"fail_status": 503, "fail_times": -1})
    execution = await run_job(job_settings(settings, fake, SKIP_LIMIT=5, RETRY_BUDGET_SECONDS=0.5))
    assert (execution.status, execution.exit_code) == ("FAILED", "FAILED")
    assert execution.exit_message == (
        "PeerUnavailable: store service /internal/v1/stores/regions: HTTP 503"
    )
    assert await stats(pool) == []
    # nothing committed: the restart reads every member again
    assert counts(execution) == {"read": 0, "written": 0, "filtered": 0, "skipped": 0}
    assert execution.steps[0].checkpoint is None

    fake.control.update({"fail_status": None})
    restarted = await run_job(job_settings(settings, fake))
    assert restarted.status == "COMPLETED", restarted.exit_message
    assert await stats(pool) == OLD_SERVICE_EXPECTED


async def test_a_malformed_answer_skips_its_members_and_the_run_completes_with_skips(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    await load_old_service_rows(pool)
    # a 400 to every lookup naming store 7, which members 1 and 2 used, and 3-5 did not
    fake.control.update({"reject": [7]})
    execution = await run_job(job_settings(settings, fake, CHUNK_SIZE=5, SKIP_LIMIT=100))
    assert (execution.status, execution.exit_code) == ("COMPLETED", "COMPLETED WITH SKIPS")
    assert execution.steps[0].status == "COMPLETED"
    assert execution.steps[0].context["skipped"] == [1, 2]
    # Why, in the exit message and the step's context (before: an empty message, the
    # cause in WARNING lines only).
    cause = "PeerAnswerError: store service /internal/v1/stores/regions: HTTP 400"
    assert execution.exit_message == f"2 skipped; member ids 1, 2: {cause}"
    assert execution.steps[0].exit_message == execution.exit_message
    assert execution.steps[0].context["skipCauses"] == [{"cause": cause, "keys": [1, 2]}]
    assert await stats(pool) == [(3, "서교동", 15, DAY), (5, "상도동", 13, DAY)]
    assert counts(execution) == {"read": 5, "written": 2, "filtered": 1, "skipped": 2}


async def test_a_400_that_does_not_recur_skips_nobody(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """The chunk's halves are asked again, and answered: nobody fails on their own."""
    await load_old_service_rows(pool)
    fake.control.update({"fail_status": 400, "fail_times": 1})
    execution = await run_job(job_settings(settings, fake, ENRICH_WORKERS=1, SKIP_LIMIT=100))
    assert (execution.status, execution.exit_code) == ("COMPLETED", "COMPLETED")
    assert await stats(pool) == OLD_SERVICE_EXPECTED
    assert counts(execution) == {"read": 5, "written": 4, "filtered": 1, "skipped": 0}


@pytest.mark.parametrize("chunk_size", [1, 2, 1000])
async def test_a_rerun_removes_members_who_no_longer_qualify_or_appear(
    pool: Pool, settings: Settings, fake: FakePeers, chunk_size: int
) -> None:
    """Before: only the members read were replaced, so a member whose USED rows all left
    the window (here: turned CANCELED) kept yesterday's row for the date. Member 2 sits
    between two checkpoints, member 5 after the last one."""
    await load_old_service_rows(pool)
    job = job_settings(settings, fake, CHUNK_SIZE=chunk_size)
    assert (await run_job(job)).status == "COMPLETED"
    assert await stats(pool) == OLD_SERVICE_EXPECTED
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "UPDATE coupon_histories SET coupon_status = 'CANCELED' WHERE member_id IN (2, 5)"
        )
    rerun = await run_job(job, rerun=True)
    assert rerun.status == "COMPLETED", rerun.exit_message
    assert await stats(pool) == [(1, "신대방동", 11, DAY), (3, "서교동", 15, DAY)]


async def test_a_rerun_over_an_empty_window_removes_the_dates_rows(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    await load_old_service_rows(pool)
    job = job_settings(settings, fake)
    assert (await run_job(job)).status == "COMPLETED"
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE coupon_histories SET coupon_status = 'CANCELED'")
    rerun = await run_job(job, rerun=True)
    assert rerun.status == "COMPLETED", rerun.exit_message
    assert counts(rerun) == {"read": 0, "written": 0, "filtered": 0, "skipped": 0}
    assert await stats(pool) == []


# ---- the window's ids (issue 14) ---------------------------------------------------

# Slack: WINDOW_SLACK_MINUTES, 60 by default; the window of RUN_DATE is
# 2025-10-06 00:00:00 .. 2025-10-26 23:59:59.
HISTORY_FROM, HISTORY_TO = datetime(2025, 8, 1), datetime(2025, 10, 28)
JITTER = timedelta(minutes=5)


def history() -> list[tuple[datetime, tuple]]:
    """(place in id order, row) for a log whose ids follow created_at, some rows up to
    5 minutes out of id order, and ISSUED rows every 20 minutes around them (never read).

    - member 1: 10-06 00:00:00 (the window's first second) placed at 10-05 23:55:01, so
      before rows created at 10-05 23:57; and 4 more rows: 5 rows, hour 0 three times:
      (1, 노량진동, 0).
    - member 2: 4 rows, and 10-05 23:57:00 placed after rows created at 10-06 00:00: 4
      rows in the window, not eligible.
    - member 3: 10-26 23:59:59 (the window's last second) placed at 10-27 00:04:58, after
      rows created at 10-27 00:00; and 4 more: (3, 상도동, 23).
    - member 4: 4 rows, and 10-27 00:00:00 placed at 10-26 23:55:01, before rows created
      at 10-26 23:59:59: not eligible.
    - member 5: 5 rows in the window in place, hour 14: (5, 대방동, 14).
    """
    later, earlier = JITTER - timedelta(seconds=2), -JITTER + timedelta(seconds=1)
    rows: list[tuple[datetime, tuple]] = []
    at = HISTORY_FROM
    while at < HISTORY_TO:
        rows.append((at, (999, 1, at, "ISSUED")))
        at += timedelta(minutes=20)

    def add(member: int, store: int, when: str, shift: timedelta = timedelta()) -> None:
        created = datetime.fromisoformat(when)
        rows.append((created + shift, (member, store, created, "USED")))

    add(1, 1, "2025-10-06 00:00:00", earlier)
    for day, hour in ((10, 0), (11, 0), (12, 9), (13, 9)):
        add(1, 1, f"2025-10-{day} {hour:02d}:30:00")
    add(2, 2, "2025-10-05 23:57:00", 4 * JITTER / 5)
    for day in range(10, 14):
        add(2, 2, f"2025-10-{day} 12:00:00")
    add(3, 3, "2025-10-26 23:59:59", later)
    for day in range(20, 24):
        add(3, 3, f"2025-10-{day} 23:10:00")
    add(4, 4, "2025-10-27 00:00:00", earlier)
    for day in range(20, 24):
        add(4, 4, f"2025-10-{day} 08:00:00")
    for day in range(15, 20):
        add(5, 5, f"2025-10-{day} 14:00:00")
    return rows


HISTORY_EXPECTED = [(1, "노량진동", 0, DAY), (3, "상도동", 23, DAY), (5, "대방동", 14, DAY)]


async def add_history(pool: Pool, rows: list[tuple[datetime, tuple]]) -> list[tuple]:
    """Insert in order of place, so the ids follow it; the rows with their ids."""
    ordered = [row for _, row in sorted(rows, key=itemgetter(0))]
    await add_histories(pool, ordered)
    ids = await fetch_all(pool, "SELECT id, created_at FROM coupon_histories ORDER BY id")
    assert [at for _, at in ids] == [row[2] for row in ordered]
    return [(row_id, *row) for (row_id, _), row in zip(ids, ordered, strict=True)]


def expected_span(rows: list[tuple]) -> tuple[int, int]:
    """The ids the window's read should cover: from after the last row created before
    the window's start - slack to before the first row created after its end + slack."""
    earliest, latest = datetime(2025, 10, 5, 23), datetime(2025, 10, 27, 0, 59, 59)
    below = max(row_id for row_id, _, _, at, _ in rows if at < earliest)
    above = min(row_id for row_id, _, _, at, _ in rows if at > latest)
    return below + 1, above - 1


@pytest.mark.parametrize("read", ["window", "full"])
@pytest.mark.parametrize("streams", [1, 2])
async def test_members_in_the_jitter_of_both_ends_of_the_window(
    pool: Pool,
    settings: Settings,
    fake: FakePeers,
    caplog: pytest.LogCaptureFixture,
    read: str,
    streams: int,
) -> None:
    rows = await add_history(pool, history())
    id_of = {(member, at): row_id for row_id, member, _, at, _ in rows if member != 999}
    # out of id order across both ends of the window
    assert id_of[1, datetime(2025, 10, 6)] < id_of[2, datetime(2025, 10, 5, 23, 57)]
    assert id_of[4, datetime(2025, 10, 27)] < id_of[3, datetime(2025, 10, 26, 23, 59, 59)]
    caplog.set_level(logging.INFO, logger="app.jobs.usage_stats")
    execution = await run_job(job_settings(settings, fake, STATS_READ=read, READ_STREAMS=streams))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == HISTORY_EXPECTED
    assert counts(execution) == {"read": 5, "written": 3, "filtered": 2, "skipped": 0}
    reads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stats read")]
    if read == "window":
        low, high = expected_span(rows)
        assert high - low < 1600  # 3 weeks of rows every 20 minutes, and 2 hours
        (message,) = reads
        pattern = rf"stats read: ids {low}\.\.{high} of coupon_histories \(\d+ rows looked up\)"
        assert re.fullmatch(pattern, message), message
    else:
        assert reads == []


async def test_a_row_out_of_place_beyond_the_slack_is_read_by_the_full_scan_only(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """The window's read reads the window's ids and nothing else: a row created in the
    window among the oldest ids (a backfill) is not read; STATS_READ=full reads it."""
    rows = history()
    rows.append((datetime(2025, 8, 2), (6, 6, datetime(2025, 10, 15, 7), "USED")))
    rows += [(at, (6, 6, at, "USED")) for at in (datetime(2025, 10, d, 7) for d in range(16, 20))]
    await add_history(pool, rows)
    window_run = await run_job(job_settings(settings, fake))
    assert window_run.status == "COMPLETED", window_run.exit_message
    assert await stats(pool) == HISTORY_EXPECTED  # member 6: 4 rows read
    full_run = await run_job(job_settings(settings, fake, STATS_READ="full"))
    assert full_run.status == "COMPLETED", full_run.exit_message
    assert await stats(pool) == [*HISTORY_EXPECTED, (6, "신대방동", 7, DAY)]


async def read_plan(settings: Settings) -> list[tuple[str, str | None, list]]:
    """The stats step's read queries from the first member on: (EXPLAIN's access type,
    its key, the query's arguments beside the window's)."""
    async with open_resources(settings, broker=False) as resources:
        step = UsageStatsStep(SPEC.context(resources, 0, {"runDate": RUN_DATE}))
        plan = []
        for bounds in await step.shares():
            sql, args = step._query(bounds, None)
            [explained] = await fetch_all(resources.pool, "EXPLAIN " + sql, args)
            plan.append((explained[3], explained[5], args[2:]))
        return plan


async def test_the_window_is_read_over_the_primary_key(pool: Pool, settings: Settings) -> None:
    rows = await add_history(pool, history())
    low, high = expected_span(rows)
    cut = low + (high - low + 1) // 2
    job = make_settings(DB_URL=settings.DB_URL, READ_STREAMS=2)
    assert await read_plan(job) == [
        ("range", "PRIMARY", [low, cut]),
        ("range", "PRIMARY", [cut, high + 1]),
    ]


async def test_an_index_on_created_at_is_used(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """Ids in no order of time at all: with an index on created_at, the window's time is
    shared between the streams and the server ranges over the index."""
    rows = history()
    # a whole year of older rows, so that the index is worth its lookups to the server
    rows += [
        (at, (999, 1, at, "ISSUED"))
        for at in (HISTORY_FROM - timedelta(hours=h) for h in range(1, 8760))
    ]
    shuffled = [
        (datetime(2000, 1, 1) + timedelta(seconds=(k * 7919) % len(rows)), row)
        for k, (_, row) in enumerate(sorted(rows, key=itemgetter(0)))
    ]
    await add_history(pool, shuffled)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("ALTER TABLE coupon_histories ADD INDEX by_time (created_at)")
        try:
            await cur.execute("ANALYZE TABLE coupon_histories")
            job = make_settings(DB_URL=settings.DB_URL, READ_STREAMS=2)
            middle = datetime(2025, 10, 16, 11, 59, 59)
            assert await read_plan(job) == [
                ("range", "by_time", [middle]),
                ("range", "by_time", [middle]),
            ]
            execution = await run_job(job_settings(settings, fake, READ_STREAMS=2))
            assert execution.status == "COMPLETED", execution.exit_message
            assert await stats(pool) == HISTORY_EXPECTED
        finally:
            await cur.execute("ALTER TABLE coupon_histories DROP INDEX by_time")
