"""Fill a database with realistic synthetic data for the benchmarks, fast and repeatably;
small options make the sample rows of an operator's first hour (README, "From scratch").

    .venv/bin/python scripts/gen_data.py [--database couponpop_bench]
        [--shape year|sparse|month] [--histories 10000000] [--history-days 400]

Rows are made by the server (INSERT ... SELECT over a 100,000-row counting table
joined to itself; portable to MySQL 8), in parallel chunks with explicit ids, from
CRC32 hashes of a fixed seed: the same options give the same rows, byte for byte.

- `coupon_histories`, shape `year` (production's, the default): N rows over
  --history-days days up to 01:00 after --run-date (when the nightly run starts), ids
  in time order but each row's time off its place by up to 5 minutes either way (a
  row whose place is within 5 minutes of an end of the stats window lands exactly on
  that end or across it): the window holds the newest rows, 21 days' worth.
  Members: by default one per 10 rows of the window. At 11:00-20:59, 90% of the rows
  go to members whose favourite hour it is (member m: 11 + (m - 1) % 10).
- `coupon_histories`, shape `sparse` (issue 30: most members occasional): the year
  shape's times (over 320 days by default), but a quarter of the rows go to --regulars
  members (a fourteenth of --members; every --members // --regulars-th id), at their
  favourite hour as above, and the others to the occasional members in turn: each may
  have one row in every (members - regulars) rows, 3-4 such places in the default
  window, so 0-4 uses there. About 7% of the window's members have 5 uses or more.
- `coupon_histories`, shape `month` (the benchmarks of issue 6, and issue 30's crowded
  month: 200,000 members with about 8 uses each at the default 2M rows): N rows over
  the 21 days of the stats window in random time order (a few rows just outside, a few
  exactly on its two ends); members: one per 10 rows; member `1 + hash % members`,
  each with a favourite hour.
- All shapes: ~80% USED (then ISSUED, CANCELED); each member has 2-4 stores (mostly in one
  dong, some in a neighbouring one); 0.5% of the rows name one of 10 stores the store
  service does not know (ids after --stores).
- `coupon_events`: 4 per store, 1-21 days each, ~15% sold out; every store of one
  dong in 60 has only past events (its members are filtered for NO_ACTIVE_EVENT).
- `coupon_usage_stats` for the fan-out job (--fanout-date, --target-hour), 2 x
  --fanout-members members: the odd ids' latest row of the 3-day window is at the
  target hour (exactly --fanout-members members); the even ids are not pushed: other
  hour, an older row at the target hour overtaken by a later date or by a greater id
  on the same date, or the target hour only before the window. Every member has older
  rows too. 1% of the odd ids name a dong without stores, 2% have no push token.
  The fan-out date defaults to a week after --run-date, clear of the stats job's
  writes at --run-date. Shapes `year` and `sparse`: before the window, --stats-days
  days of daily rows, one a member a day (what a year of nightly runs leaves), oldest
  first.
- The fake peers' data file (`var/bench/<database>.peers.json`): the stores' dongs
  (5,000 stores over 300 Hangul dongs such as 상도1동) and 1-3 FCM tokens (~1.55 on
  average, 163 characters like real ones) for every member the fan-out job may ask for.

What was generated, with the numbers a correct job must reproduce (eligible members,
expected messages, mean body size), is recorded in the table `bench_generated`; a
second run with the same options only checks it (and rewrites a missing data file).
Prints the record as JSON on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncmy
from asyncmy.pool import Pool

from app.config import Settings, load_settings
from app.contracts import PushRequest, encode_body
from app.edges.db import open_pool
from app.schema.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 2  # bump when the generated rows change for the same options
MARKER_TABLE = "bench_generated"
SEQ_TABLE = "bench_seq"  # 0..99,999
DONG_TABLE = "bench_dongs"  # idx -> dong name
SEQ_BLOCK = 100_000
CHUNK_BLOCKS = 5  # 500,000 rows a statement
WINDOW_DAYS = 20  # the stats window: run-date - 20 days 00:00:00 .. run-date 23:59:59
JITTER_SECONDS = 300  # shape year: a row's time is off its place in id order by up to this
FANOUT_LOOKBACK_DAYS = 2
EVENTS_PER_STORE = 4
UNKNOWN_STORES = 10  # store ids after --stores, unknown to the store service
DONGS_WITHOUT_STORES = 3  # dong names after --dongs, no store is in them
DEAD_DONG_EVERY = 60  # dong idx % 60 == 7: every event of its stores is over
SPARSE_REGULAR_PERCENT = 25  # shape sparse: the share of the rows that go to the regulars
SPARSE_PRIME = 1_000_003  # shape sparse: spreads the occasional members' rows (see there)

# Dong names of Seoul; numbered like the real ones (상도1동) to reach --dongs.
_BASES = (
    "상도", "노량진", "대방", "신대방", "흑석", "사당", "방배", "서초", "반포", "잠원",
    "역삼", "삼성", "대치", "청담", "논현", "압구정", "신사", "한남", "이태원", "후암",
    "효창", "공덕", "도화", "합정", "망원", "연남", "서교", "성산", "상암", "풍무",
)  # fmt: skip


def dong_names(count: int) -> list[str]:
    names = []
    for i in range(count):
        base, number = _BASES[i % len(_BASES)], i // len(_BASES)
        names.append(f"{base}동" if number == 0 else f"{base}{number}동")
    return names


@dataclass(frozen=True)
class Plan:
    """What to generate: the options, all of them. Its JSON identifies a data set."""

    shape: str  # year | sparse | month
    histories: int
    history_days: int  # year: days of history; month: the window's 21
    stats_days: int  # year: days of daily coupon_usage_stats rows before the fan-out window
    members: int
    stores: int
    dongs: int
    run_date: date
    fanout_members: int
    fanout_date: date
    target_hour: int
    seed: int
    version: int = GENERATOR_VERSION
    regulars: int = 0  # shape sparse: the members most rows go to

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON; `regulars` only for the sparse shape, so that the data sets
        of the other shapes generated before it existed are still recognised."""
        raw = dataclasses.asdict(self)
        if self.shape != "sparse":
            del raw["regulars"]
        return {k: v.isoformat() if isinstance(v, date) else v for k, v in raw.items()}

    @property
    def window(self) -> tuple[datetime, datetime]:
        start = datetime.combine(self.run_date - timedelta(days=WINDOW_DAYS), datetime.min.time())
        return start, datetime.combine(self.run_date, datetime.max.time().replace(microsecond=0))

    @property
    def history(self) -> tuple[datetime, int]:
        """Shapes year and sparse: the place in time of the first row, and the seconds to
        the last."""
        end = datetime.combine(self.run_date + timedelta(days=1), datetime.min.time())
        end += timedelta(hours=1)
        return end - timedelta(days=self.history_days), self.history_days * 86400

    @property
    def fanout_window(self) -> tuple[date, date]:
        return self.fanout_date - timedelta(days=FANOUT_LOOKBACK_DAYS), self.fanout_date

    @property
    def reference_time(self) -> datetime:
        return datetime.combine(self.fanout_date, datetime.min.time()).replace(
            hour=self.target_hour
        )


def log(message: str) -> None:
    print(f"gen_data: {message}", file=sys.stderr, flush=True)


# ---- SQL building blocks -------------------------------------------------------------


def _h(plan: Plan, tag: str, expr: str) -> str:
    """A 32-bit pseudo-random number from `expr` (an integer), independent per tag.

    CRC32 alone will not do: it is linear, so the CRCs of two tags and the same number
    differ by a constant XOR and their low bits move together. Multiplying modulo a
    prime (no overflow: the product stays under 2^63) breaks that.
    """
    return f"(CRC32(CONCAT('{plan.seed}{tag}:', {expr})) * 1103515245 % 4294967291)"


def _ts(value: datetime) -> str:
    return f"TIMESTAMP'{value:%Y-%m-%d %H:%M:%S}'"


def _day(value: date) -> str:
    return f"DATE'{value.isoformat()}'"


def _numbers(lo: int, hi: int) -> str:
    """FROM/WHERE producing `n` for lo <= n < hi, from the counting table joined to itself."""
    b0, b1 = lo // SEQ_BLOCK, (hi - 1) // SEQ_BLOCK
    n = f"(blk.n * {SEQ_BLOCK} + s.n)"
    return (
        f"FROM {SEQ_TABLE} blk JOIN {SEQ_TABLE} s"
        f" WHERE blk.n BETWEEN {b0} AND {b1} AND {n} >= {lo} AND {n} < {hi}"
    )


def _histories_sql(plan: Plan, lo: int, hi: int) -> str:
    n = f"(blk.n * {SEQ_BLOCK} + s.n)"
    if plan.shape == "month":
        m = f"(1 + {_h(plan, 'm', n)} % {plan.members})"
        created = _month_created(plan, n, m)
    else:
        first, seconds = plan.history
        place = f"({n} * {seconds} DIV {plan.histories})"  # seconds after `first`
        hour = f"((3600 * {first.hour} + {place}) % 86400 DIV 3600)"
        m = _year_member(plan, n, hour) if plan.shape == "year" else _sparse_member(plan, n, hour)
        start, end = (round((t - first).total_seconds()) for t in plan.window)
        he, jitter = _h(plan, "e", n), JITTER_SECONDS
        # Near an end of the window: exactly on it, or across it from the row's place.
        off = ["(CASE"]
        for edge in (start, end):
            near = f"ABS({place} - {edge}) <= {jitter}"
            off.append(f" WHEN {near} AND {he} % 2 = 0 THEN {edge}")
            off.append(f" WHEN {near} THEN {place} + IF({place} < {edge}, {jitter}, -{jitter})")
        off.append(f" ELSE {place} + CAST({he} DIV 2 % {2 * jitter + 1} AS SIGNED) - {jitter} END)")
        off = "".join(off)
        created = f"({_ts(first)} + INTERVAL {off} SECOND)"
    # The member's stores: 2-4 of base, base+D (same dong), base+1 (next dong), base+2D.
    k = f"({_h(plan, 'k', n)} % (2 + {_h(plan, 'n', m)} % 3))"
    own_store = f"1 + ({_h(plan, 'b', m)} + ELT(1 + {k}, 0, {plan.dongs}, 1, {2 * plan.dongs}))"
    own_store = f"({own_store} % {plan.stores})"
    hu = _h(plan, "u", n)
    store = (
        f"(CASE WHEN {hu} % 200 = 0 THEN {plan.stores} + 1 + {hu} DIV 200 % {UNKNOWN_STORES}"
        f" ELSE {own_store} END)"
    )
    per_store = EVENTS_PER_STORE
    event = f"((LEAST({store}, {plan.stores}) - 1) * {per_store} + 1 + {n} % {per_store})"
    hs = _h(plan, "s", n)
    status = (
        f"(CASE WHEN {hs} % 100 < 80 THEN 'USED' WHEN {hs} % 100 < 92 THEN 'ISSUED'"
        " ELSE 'CANCELED' END)"
    )
    return (
        "INSERT INTO coupon_histories"
        " (id, member_id, coupon_id, store_id, coupon_event_id, coupon_status, created_at)"
        f" SELECT {n} + 1, {m}, {n} + 1, {store}, {event}, {status}, {created} " + _numbers(lo, hi)
    )


def _favourite_member(plan: Plan, n: str, hour: str, members: int) -> str:
    """One of members 1..`members`: at 11:00-20:59, 90% of the time one whose favourite
    hour it is (member m: 11 + (m - 1) % 10), otherwise any."""
    hm = _h(plan, "m", n)
    favourite = (
        f"(1 + ({hour} - 11 + 10 * ({hm} DIV 100 % GREATEST(1, {members} DIV 10))) % {members})"
    )
    return (
        f"(CASE WHEN {hour} BETWEEN 11 AND 20 AND {hm} % 100 < 90 THEN {favourite}"
        f" ELSE 1 + {hm} % {members} END)"
    )


def _year_member(plan: Plan, n: str, hour: str) -> str:
    return _favourite_member(plan, n, hour, plan.members)


def _sparse_member(plan: Plan, n: str, hour: str) -> str:
    """Shape sparse: a quarter of the rows to the regulars, ids every `step` (regular k
    is member k * step); the rest to the occasional members, the ids between, in turn:
    occasional c (0-based) has row n when n * K = c modulo their number, K a prime
    larger than it (so every one of them has a row every that many rows)."""
    step = plan.members // plan.regulars
    occasional = plan.members - plan.regulars
    regular = f"({_favourite_member(plan, n, hour, plan.regulars)} * {step})"
    c = f"({n} * {SPARSE_PRIME} % {occasional})"
    return (
        f"(CASE WHEN {_h(plan, 'r', n)} % 100 < {SPARSE_REGULAR_PERCENT} THEN {regular}"
        f" ELSE {c} + 1 + {c} DIV {step - 1} END)"
    )


def _month_created(plan: Plan, n: str, m: str) -> str:
    """Shape month: a time in the window, at the member's favourite hour more than half
    the time, or just outside the window, or exactly on one of its ends."""
    start, end = plan.window
    ht, hh = _h(plan, "t", n), _h(plan, "h", n)
    hour = (
        f"(CASE WHEN {hh} % 100 < 55 THEN 11 + {_h(plan, 'p', m)} % 10"
        f" ELSE 8 + {hh} DIV 100 % 15 END)"
    )
    days = WINDOW_DAYS + 1
    return (
        f"(CASE WHEN {n} % 100003 = 0 THEN {_ts(start)}"
        f" WHEN {n} % 100019 = 0 THEN {_ts(end)}"
        f" WHEN {ht} % 1000 < 7 THEN {_ts(start)} - INTERVAL (1 + {ht} DIV 1000 % 604800) SECOND"
        f" WHEN {ht} % 1000 < 10 THEN {_ts(end)} + INTERVAL (1 + {ht} DIV 1000 % 86400) SECOND"
        f" ELSE {_ts(start)} + INTERVAL ({ht} DIV 1000 % {days} * 86400 + {hour} * 3600"
        f" + {ht} DIV {1000 * days} % 3600) SECOND END)"
    )


def _events_sql(plan: Plan) -> str:
    n = f"(blk.n * {SEQ_BLOCK} + s.n)"
    store = f"({n} DIV {EVENTS_PER_STORE} + 1)"
    dead = f"(({store} - 1) % {plan.dongs} % {DEAD_DONG_EVERY} = 7)"
    base = datetime.combine(plan.run_date - timedelta(days=30), datetime.min.time())
    duration = f"(86400 + {_h(plan, 'd', n)} % (20 * 86400))"
    live_start = f"{_ts(base)} + INTERVAL ({_h(plan, 'a', n)} % (50 * 86400)) SECOND"
    dead_end = f"{_ts(plan.reference_time)} - INTERVAL (3600 + {_h(plan, 'a', n)} % 864000) SECOND"
    start = f"(CASE WHEN {dead} THEN {dead_end} - INTERVAL {duration} SECOND ELSE {live_start} END)"
    total = f"(50 + {_h(plan, 'c', n)} % 451)"
    hi = _h(plan, "i", n)
    issued = f"(CASE WHEN {hi} % 100 < 15 THEN {total} ELSE {hi} DIV 100 % {total} END)"
    return (
        "INSERT INTO coupon_events"
        " (id, store_id, event_start_at, event_end_at, total_count, issued_count)"
        f" SELECT {n} + 1, {store}, {start}, {start} + INTERVAL {duration} SECOND,"
        f" {total}, {issued} " + _numbers(0, plan.stores * EVENTS_PER_STORE)
    )


def _fanout_sql(plan: Plan) -> list[str]:
    """Three statements, in this order (the ids grow with it): each member's main row,
    the rows that test the latest-row rule, one older row each."""
    m = f"(blk.n * {SEQ_BLOCK} + s.n)"
    hour = plan.target_hour
    c = f"({m} DIV 2 % 4)"  # the even members' case
    d0 = plan.fanout_date

    def dong(tag: str) -> str:
        h = _h(plan, tag, m)
        return (
            f"(SELECT name FROM {DONG_TABLE} WHERE idx = CASE WHEN {h} % 100 = 0"
            f" THEN {plan.dongs} + {h} DIV 100 % {DONGS_WITHOUT_STORES}"
            f" ELSE {h} DIV 100 % {plan.dongs} END)"
        )

    other = f"(({hour} + 1 + {_h(plan, 'o', m)} % 23) % 24)"
    main_days_back = f"({_h(plan, 'a', m)} % 3)"
    insert = "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
    population = _numbers(1, 2 * plan.fanout_members + 1)
    main = (
        f"{insert} SELECT {m}, {dong('d')},"
        f" CASE WHEN {m} % 2 = 1 THEN {hour} WHEN {c} = 0 THEN {other} ELSE {hour} END,"
        f" {_day(d0)} - INTERVAL (CASE WHEN {m} % 2 = 1 THEN {main_days_back}"
        f" WHEN {c} = 0 THEN {_h(plan, 'b', m)} % 3 WHEN {c} = 1 THEN 2"
        f" WHEN {c} = 2 THEN 3 + {_h(plan, 'b', m)} % 4 ELSE 0 END) DAY "
        f"{population} ORDER BY 1"
    )
    # Later ids, other hours: an odd member's older row (the later id must not win over
    # the later date); case 1 overtaken the next day; case 3 overtaken on the same date.
    second = (
        f"{insert} SELECT {m}, {dong('e')}, {other},"
        f" {_day(d0)} - INTERVAL (CASE WHEN {m} % 2 = 1"
        f" THEN {main_days_back} + 1 + {_h(plan, 'b', m)} % 3"
        f" WHEN {c} = 1 THEN 1 ELSE 0 END) DAY "
        f"{population} AND ({m} % 2 = 0 AND {c} IN (1, 3)"
        f" OR {m} % 2 = 1 AND {_h(plan, 'g', m)} % 2 = 0) ORDER BY 1"
    )
    if plan.shape != "month":
        return [main, second]  # the daily rows come first (_daily_stats_sql)
    older = (
        f"{insert} SELECT {m}, {dong('d')}, {_h(plan, 'r', m)} % 24,"
        f" {_day(d0)} - INTERVAL (4 + {_h(plan, 'w', m)} % 14) DAY "
        f"{population} ORDER BY 1"
    )
    return [main, second, older]


def _daily_stats_sql(plan: Plan, lo: int, hi: int) -> str:
    """Shapes year and sparse: row n (lo <= n < hi) of the daily rows before the fan-out
    window, day by day from the oldest, every member each day; explicit ids n + 1, so
    that the ids follow the dates as the nightly runs leave them."""
    n = f"(blk.n * {SEQ_BLOCK} + s.n)"
    members = 2 * plan.fanout_members
    m = f"(1 + {n} % {members})"
    back = f"({plan.stats_days + FANOUT_LOOKBACK_DAYS} - {n} DIV {members})"
    h = _h(plan, "y", n)
    return (
        "INSERT INTO coupon_usage_stats (id, member_id, top_dong, top_hour, aggregated_at)"
        f" SELECT {n} + 1, {m}, (SELECT name FROM {DONG_TABLE} WHERE idx = {h} % {plan.dongs}),"
        f" {h} DIV 1000 % 24, {_day(plan.fanout_date)} - INTERVAL {back} DAY " + _numbers(lo, hi)
    )


# ---- the fake peers' data (Python: it never touches the database) --------------------


def _token(seed: int, member: int, k: int) -> str:
    """A token shaped like an FCM registration token: 163 characters."""
    raw = hashlib.blake2b(f"{seed}:{member}:{k}".encode(), digest_size=64).digest()
    raw += hashlib.blake2b(raw, digest_size=64).digest()
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{text[:22]}:APA91b{text[22:156]}"


def _tokens_of(plan: Plan, member: int) -> int:
    """How many tokens the fan-out population's member has (0..3)."""
    h = zlib.crc32(f"{plan.seed}t:{member}".encode())
    if member % 2 == 1 and h % 50 == 0:
        return 0  # 2% of the pushed members: no token
    if member % 2 == 0 and member // 2 % 4 == 0:
        return 0  # their latest row names another hour: never asked
    share = h // 50 % 100
    return 1 if share < 55 else 2 if share < 90 else 3


def peer_data(plan: Plan) -> dict[str, Any]:
    names = dong_names(plan.dongs)
    stores = {str(s): names[(s - 1) % plan.dongs] for s in range(1, plan.stores + 1)}
    tokens = {}
    for member in range(1, 2 * plan.fanout_members + 1):
        count = _tokens_of(plan, member)
        if count:
            tokens[str(member)] = [_token(plan.seed, member, k) for k in range(count)]
    return {"stores": stores, "tokens": tokens}


def write_peer_data(plan: Plan, path: Path) -> dict[str, Any]:
    data = peer_data(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    partial.replace(path)
    return data


# ---- generation ----------------------------------------------------------------------


async def _execute(pool: Pool, sql: str, args: tuple[Any, ...] | None = None) -> int:
    """`sql` on a connection of its own (autocommit); `%` is literal without `args`."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return await cur.execute(sql, args)


async def _fetch(pool: Pool, sql: str, args: tuple[Any, ...] | None = None) -> list[tuple]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def _counting_tables(pool: Pool, plan: Plan) -> None:
    await _execute(pool, f"DROP TABLE IF EXISTS {SEQ_TABLE}, {DONG_TABLE}, bench_digits")
    await _execute(pool, "CREATE TABLE bench_digits (d INT NOT NULL PRIMARY KEY)")
    await _execute(pool, "INSERT INTO bench_digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)")
    await _execute(pool, f"CREATE TABLE {SEQ_TABLE} (n INT NOT NULL PRIMARY KEY)")
    digits = " CROSS JOIN ".join(f"bench_digits d{i}" for i in range(5))
    number = " + ".join(f"d{i}.d * {10**i}" for i in range(5))
    await _execute(pool, f"INSERT INTO {SEQ_TABLE} SELECT {number} FROM {digits}")
    await _execute(
        pool,
        f"CREATE TABLE {DONG_TABLE} (idx INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL)"
        " DEFAULT CHARSET=utf8mb4",
    )
    names = dong_names(plan.dongs + DONGS_WITHOUT_STORES)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(f"INSERT INTO {DONG_TABLE} VALUES (%s, %s)", list(enumerate(names)))


async def _generate(pool: Pool, plan: Plan, jobs: int) -> None:
    for table in ("coupon_histories", "coupon_events", "coupon_usage_stats", MARKER_TABLE):
        await _execute(pool, f"TRUNCATE TABLE {table}")
    await _counting_tables(pool, plan)

    started = time.perf_counter()
    await _in_chunks(pool, plan.histories, lambda lo, hi: _histories_sql(plan, lo, hi), jobs)
    log(f"coupon_histories: {plan.histories:,} rows in {time.perf_counter() - started:.1f}s")

    started = time.perf_counter()
    await _execute(pool, _events_sql(plan))
    if plan.shape != "month":
        daily = plan.stats_days * 2 * plan.fanout_members
        await _in_chunks(pool, daily, lambda lo, hi: _daily_stats_sql(plan, lo, hi), jobs)
    for statement in _fanout_sql(plan):
        await _execute(pool, statement)
    log(f"coupon_events, coupon_usage_stats: {time.perf_counter() - started:.1f}s")
    # Scaffolding: the database keeps the service's tables and the record alone (it may be
    # an operator's, README "From scratch").
    await _execute(pool, f"DROP TABLE {SEQ_TABLE}, {DONG_TABLE}, bench_digits")


async def _in_chunks(pool: Pool, rows: int, sql: Callable[[int, int], str], jobs: int) -> None:
    """The statements `sql(lo, hi)` over 0..rows in chunks, `jobs` of them at a time."""
    chunk = CHUNK_BLOCKS * SEQ_BLOCK
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for lo in range(0, rows, chunk):
        queue.put_nowait((lo, min(lo + chunk, rows)))

    async def worker() -> None:
        while not queue.empty():
            lo, hi = queue.get_nowait()
            await _execute(pool, sql(lo, hi))

    await asyncio.gather(*(worker() for _ in range(jobs)))


async def _expectations(pool: Pool, plan: Plan, peers: dict[str, Any]) -> dict[str, Any]:
    """The numbers a correct run must reproduce, computed here from the rules of issues
    4 and 5, independently of the jobs' code."""
    start, end = plan.window
    window = "coupon_status = 'USED' AND created_at BETWEEN %s AND %s"
    ((window_rows,),) = await _fetch(
        pool, f"SELECT COUNT(*) FROM coupon_histories WHERE {window}", (start, end)
    )
    # Every row of the window, whatever its status, and the span of their ids
    ((window_all, first_id, last_id),) = await _fetch(
        pool,
        "SELECT COUNT(*), MIN(id), MAX(id) FROM coupon_histories"
        " WHERE created_at BETWEEN %s AND %s",
        (start, end),
    )
    # Every store up to --stores has a dong; the unknown ones' rows are dropped.
    ((eligible,),) = await _fetch(
        pool,
        "SELECT COUNT(*) FROM (SELECT member_id FROM coupon_histories"
        f" WHERE {window} AND store_id <= %s GROUP BY member_id HAVING COUNT(*) >= 5) e",
        (start, end, plan.stores),
    )

    first, last = plan.fanout_window
    rows = await _fetch(
        pool,
        "SELECT id, member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats"
        " WHERE aggregated_at BETWEEN %s AND %s",
        (first, last),
    )
    latest: dict[int, tuple[date, int, str, int]] = {}
    for row_id, member, dong, hour, day in rows:
        key = (day, row_id, dong, hour)
        if member not in latest or key[:2] > latest[member][:2]:
            latest[member] = key
    at = plan.reference_time
    active = dict(
        await _fetch(
            pool,
            "SELECT store_id, COUNT(*) FROM coupon_events WHERE event_start_at <= %s"
            " AND event_end_at >= %s AND total_count > issued_count GROUP BY store_id",
            (at, at),
        )
    )
    stores_of: dict[str, list[int]] = {}
    for store, dong in peers["stores"].items():
        stores_of.setdefault(dong, []).append(int(store))
    tokens = peers["tokens"]
    filtered = {"no_tokens": 0, "no_store": 0, "no_active_event": 0}
    targets = pushed = messages = body_bytes = 0
    for member, (day, _, dong, hour) in latest.items():
        if hour != plan.target_hour:
            continue
        targets += 1
        member_tokens = tokens.get(str(member))
        if not member_tokens:
            filtered["no_tokens"] += 1
            continue
        if dong not in stores_of:
            filtered["no_store"] += 1
            continue
        events = sum(int(active.get(s, 0)) for s in stores_of[dong])
        if not events:
            filtered["no_active_event"] += 1
            continue
        pushed += 1
        for token in dict.fromkeys(member_tokens):
            messages += 1
            request = PushRequest.for_token(day, member, token, dong, hour, events)
            body_bytes += len(encode_body(request))
    ((fanout_rows,),) = await _fetch(
        pool,
        "SELECT COUNT(*) FROM coupon_usage_stats WHERE aggregated_at BETWEEN %s AND %s",
        (first, last),
    )
    ((events_active,),) = await _fetch(
        pool,
        "SELECT COUNT(*) FROM coupon_events WHERE event_start_at <= %s AND event_end_at >= %s"
        " AND total_count > issued_count",
        (at, at),
    )
    ((stats_rows,),) = await _fetch(pool, "SELECT COUNT(*) FROM coupon_usage_stats")
    return {
        "stats": {
            "run_date": plan.run_date.isoformat(),
            "window": [f"{start:%Y-%m-%d %H:%M:%S}", f"{end:%Y-%m-%d %H:%M:%S}"],
            "window_rows": window_rows,
            "window_all_rows": window_all,
            "window_ids": [first_id, last_id],
            "histories": plan.histories,
            "eligible_members": eligible,
        },
        "fanout": {
            "run_date": plan.fanout_date.isoformat(),
            "target_hour": plan.target_hour,
            "window_rows": fanout_rows,
            "target_members": targets,
            "pushed_members": pushed,
            "filtered": filtered,
            "messages": messages,
            "mean_body_bytes": round(body_bytes / messages) if messages else 0,
            "events_active": events_active,
            "events": plan.stores * EVENTS_PER_STORE,
            "stats_rows": stats_rows,
        },
        "peers": {
            "stores": len(peers["stores"]),
            "dongs": len(stores_of),
            "members_with_tokens": len(tokens),
            "tokens": sum(len(t) for t in tokens.values()),
        },
    }


async def _create_database(settings: Settings, database: str) -> None:
    target = settings.database.target
    conn = await asyncmy.connect(
        host=target.host, port=target.port, user=target.user, password=target.password
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION sql_notes = 0")
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
    finally:
        conn.close()


async def generate(
    settings: Settings,
    database: str,
    plan: Plan,
    peers_file: Path,
    *,
    force: bool = False,
    jobs: int = 2,
) -> dict[str, Any]:
    """Generate `plan` into `database` unless it is there already; the record."""
    await _create_database(settings, database)
    async with open_pool(settings.database, database=database) as pool:
        await migrate(pool, dev_schema=True)
        await _execute(
            pool,
            f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (id INT NOT NULL PRIMARY KEY,"
            " plan TEXT NOT NULL, expected TEXT NOT NULL, seconds DOUBLE NOT NULL,"
            " created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP) DEFAULT CHARSET=utf8mb4",
        )
        wanted = plan.to_json()
        found = await _fetch(pool, f"SELECT plan, expected, seconds FROM {MARKER_TABLE}")
        if found and json.loads(found[0][0]) == wanted and not force:
            if not await asyncio.to_thread(peers_file.is_file):
                await asyncio.to_thread(write_peer_data, plan, peers_file)
                log(f"rewrote {peers_file}")
            log(f"{database}: already generated with these options")
            return _record(wanted, json.loads(found[0][1]), found[0][2], peers_file, False)

        log(f"{database}: generating {plan.histories:,} histories")
        started = time.perf_counter()
        await _generate(pool, plan, jobs)
        peers = await asyncio.to_thread(write_peer_data, plan, peers_file)
        seconds = time.perf_counter() - started
        expected = await _expectations(pool, plan, peers)
        await _execute(
            pool,
            f"INSERT INTO {MARKER_TABLE} (id, plan, expected, seconds) VALUES (1, %s, %s, %s)",
            (json.dumps(wanted), json.dumps(expected, ensure_ascii=False), seconds),
        )
        log(f"{database}: generated in {seconds:.1f}s (expectations computed after)")
        return _record(wanted, expected, seconds, peers_file, True)


def _record(
    plan: dict[str, Any], expected: dict[str, Any], seconds: float, peers: Path, generated: bool
) -> dict[str, Any]:
    return {
        "plan": plan,
        "expected": expected,
        "seconds": round(seconds, 2),
        "peers_file": str(peers),
        "generated": generated,
    }


def bench_settings(database: str | None = None) -> Settings:
    """This machine's settings (DB_*, RABBITMQ_*); a benchmark needs no real JWT key.
    With `database`, DB_URL names it instead."""
    environ = {"JWT_SECRET_KEY": base64.b64encode(bytes(32)).decode(), **os.environ}
    settings = load_settings(environ)
    if database is not None:
        target = settings.database.target
        url = f"mysql://{target.host}:{target.port}/{database}"
        settings = dataclasses.replace(settings, DB_URL=url)
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="couponpop_bench")
    parser.add_argument("--shape", choices=("year", "sparse", "month"), default="year")
    parser.add_argument("--histories", type=int, help="default: 10,000,000 (month: 2,000,000)")
    parser.add_argument(
        "--history-days", type=int, help="shapes year and sparse: default 400 (sparse: 320)"
    )
    parser.add_argument(
        "--members",
        type=int,
        help="default: a tenth of the window's rows (month: of all; sparse: 27%%)",
    )
    parser.add_argument("--regulars", type=int, help="shape sparse: default members // 14")
    parser.add_argument("--stores", type=int, default=5000)
    parser.add_argument("--dongs", type=int, default=300)
    parser.add_argument("--run-date", type=date.fromisoformat, default=date(2025, 10, 31))
    parser.add_argument("--fanout-members", type=int, help="default: 10,000 (month: 240,000)")
    parser.add_argument(
        "--stats-days", type=int, default=362, help="shape year: daily rows before the window"
    )
    parser.add_argument("--fanout-date", type=date.fromisoformat, help="default: run-date + 7")
    parser.add_argument("--target-hour", type=int, default=18)
    parser.add_argument("--seed", type=int, default=20251031)
    parser.add_argument("--peers-file", type=Path, help="default: var/bench/<database>.peers.json")
    parser.add_argument("--jobs", type=int, default=2, help="concurrent INSERT statements")
    parser.add_argument("--force", action="store_true", help="generate even if already there")
    args = parser.parse_args(argv)
    month = args.shape == "month"
    if args.histories is None:
        args.histories = 2_000_000 if month else 10_000_000
    if args.fanout_members is None:
        args.fanout_members = 240_000 if month else 10_000
    if args.histories < 1 or args.stores < 1 or args.dongs < 1 or args.fanout_members < 0:
        parser.error("counts must be positive")
    if args.history_days is None:
        args.history_days = 320 if args.shape == "sparse" else 400
    if args.history_days <= WINDOW_DAYS or args.stats_days < 0:
        parser.error(f"--history-days must be over {WINDOW_DAYS}, --stats-days at least 0")
    if not 0 <= args.target_hour <= 23:
        parser.error("--target-hour must be 0..23")
    return args


def plan_of(args: argparse.Namespace) -> Plan:
    month = args.shape == "month"
    days = WINDOW_DAYS + 1 if month else args.history_days
    window_rows = args.histories * (WINDOW_DAYS + 1) // days
    members = args.members or max(1, window_rows // 10)
    regulars = 0
    if args.shape == "sparse":
        members = args.members or max(2, window_rows * 27 // 100)
        regulars = args.regulars or max(1, members // 14)
        if not 1 <= regulars <= members // 2:
            raise SystemExit("gen_data: --regulars must be 1 to half of --members")
    return Plan(
        shape=args.shape,
        histories=args.histories,
        history_days=days,
        stats_days=0 if month else args.stats_days,
        members=members,
        stores=args.stores,
        dongs=args.dongs,
        run_date=args.run_date,
        fanout_members=args.fanout_members,
        fanout_date=args.fanout_date or args.run_date + timedelta(days=7),
        target_hour=args.target_hour,
        seed=args.seed,
        regulars=regulars,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    peers_file = args.peers_file or ROOT / "var" / "bench" / f"{args.database}.peers.json"
    record = asyncio.run(
        generate(
            bench_settings(args.database),
            args.database,
            plan_of(args),
            peers_file,
            force=args.force,
            jobs=args.jobs,
        )
    )
    print(json.dumps(record, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
