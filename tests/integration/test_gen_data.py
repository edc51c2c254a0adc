"""scripts/gen_data.py at a tiny scale: the shapes and counts it promises, run by its CLI.

The month shape (the benchmarks of issue 6) first, then the year shape (production's:
ids in time order up to a jitter, the window the newest rows; issue 14)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.edges.db import fetch_all, open_pool
from tests.conftest import DB_SERVER
from tests.settings import make_settings

ROOT = Path(__file__).resolve().parents[2]
HISTORIES, MEMBERS, STORES, DONGS, FANOUT = 2000, 200, 200, 70, 300
RUN_DATE, FANOUT_DATE, HOUR = date(2025, 10, 31), date(2025, 11, 7), 18
WINDOW = (datetime(2025, 10, 11), datetime(2025, 10, 31, 23, 59, 59))


def query(database: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple]:
    async def go() -> list[tuple]:
        async with open_pool(make_settings(DB_URL=f"{DB_SERVER}/{database}").database) as pool:
            return await fetch_all(pool, sql, args)

    return asyncio.run(go())


def generate(database: str, peers: Path, *extra: str) -> dict[str, Any]:
    argv = [sys.executable, str(ROOT / "scripts" / "gen_data.py"), "--database", database]
    argv += ["--histories", str(HISTORIES), "--stores", str(STORES), "--dongs", str(DONGS)]
    argv += ["--fanout-members", str(FANOUT), "--peers-file", str(peers), *extra]
    env = {**os.environ, "DB_URL": f"{DB_SERVER}/{database}"}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=True, timeout=120)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    database = f"cpb_gen_{os.getpid()}"
    peers = tmp_path_factory.mktemp("gen") / "peers.json"
    try:
        record = generate(database, peers, "--shape", "month")
        yield database, peers, record
    finally:
        query("information_schema", f"DROP DATABASE IF EXISTS {database}")


def test_it_leaves_no_scaffolding(generated: Any) -> None:
    """The database may be an operator's (README, "From scratch"): its counting tables go
    once the rows are made; the record of what was made stays."""
    database, _, _ = generated
    tables = {name for (name,) in query(database, "SHOW TABLES") if name.startswith("bench_")}
    assert tables == {"bench_generated"}


def test_histories(generated: Any) -> None:
    database, _, record = generated
    assert record["generated"] is True
    rows = query(
        database,
        "SELECT id, member_id, coupon_id, store_id, coupon_event_id, coupon_status, created_at"
        " FROM coupon_histories ORDER BY id",
    )
    assert [r[0] for r in rows] == list(range(1, HISTORIES + 1))
    assert all(1 <= r[1] <= MEMBERS for r in rows)
    assert all(r[2] == r[0] for r in rows)
    statuses = Counter(r[5] for r in rows)
    assert set(statuses) == {"USED", "ISSUED", "CANCELED"}
    assert 0.75 < statuses["USED"] / HISTORIES < 0.85
    unknown = [r for r in rows if r[3] > STORES]
    assert all(r[3] <= STORES + 10 for r in rows)
    assert len(unknown) < HISTORIES * 0.02
    # each event belongs to its store (4 events a store)
    assert all((min(r[3], STORES) - 1) * 4 < r[4] <= min(r[3], STORES) * 4 for r in rows)
    # a member uses a small set of stores
    stores: dict[int, set[int]] = {}
    for r in rows:
        if r[3] <= STORES:
            stores.setdefault(r[1], set()).add(r[3])
    sizes = Counter(len(s) for s in stores.values())
    assert max(sizes) <= 4 and sizes[2] and sizes[3] and sizes[4]
    # the window, a few rows outside, the first row exactly on its first second
    inside = [r for r in rows if WINDOW[0] <= r[6] <= WINDOW[1]]
    assert 0 < HISTORIES - len(inside) < HISTORIES * 0.03
    assert rows[0][6] == WINDOW[0]
    used = sum(1 for r in inside if r[5] == "USED")
    assert record["expected"]["stats"]["window_rows"] == used


def test_eligible_members(generated: Any) -> None:
    database, _, record = generated
    rows = query(
        database,
        "SELECT member_id, store_id FROM coupon_histories"
        " WHERE coupon_status = 'USED' AND created_at BETWEEN %s AND %s",
        WINDOW,
    )
    per_member = Counter(member for member, store in rows if store <= STORES)
    eligible = sum(1 for count in per_member.values() if count >= 5)
    assert record["expected"]["stats"]["eligible_members"] == eligible
    assert 0 < eligible < len(per_member)  # some members have fewer than 5 rows


def test_events(generated: Any) -> None:
    database, _, record = generated
    rows = query(
        database,
        "SELECT id, store_id, event_start_at, event_end_at, total_count, issued_count"
        " FROM coupon_events",
    )
    assert len(rows) == STORES * 4
    assert Counter(r[1] for r in rows) == {s: 4 for s in range(1, STORES + 1)}
    assert all(r[2] < r[3] and 0 <= r[5] <= r[4] for r in rows)
    at = datetime(2025, 11, 7, HOUR)
    active = [r for r in rows if r[2] <= at <= r[3] and r[4] > r[5]]
    assert record["expected"]["fanout"]["events_active"] == len(active)
    assert 0.1 < len(active) / len(rows) < 0.35
    # the stores of dong index 7 (one in 60) have only past events
    assert not [r for r in active if (r[1] - 1) % DONGS == 7]


def test_fanout_rows(generated: Any) -> None:
    database, _, record = generated
    rows = query(
        database,
        "SELECT id, member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats",
    )
    assert {r[1] for r in rows} == set(range(1, 2 * FANOUT + 1))
    latest: dict[int, tuple] = {}
    for row in rows:
        if date(2025, 11, 5) <= row[4] <= FANOUT_DATE:
            key = (row[4], row[0])
            if row[1] not in latest or key > (latest[row[1]][4], latest[row[1]][0]):
                latest[row[1]] = row
    targets = {m for m, row in latest.items() if row[3] == HOUR}
    assert targets == set(range(1, 2 * FANOUT + 1, 2))  # exactly the odd members
    # even members with a row at the hour in the window that a later one overtakes
    overtaken = {r[1] for r in rows if r[1] % 2 == 0 and r[3] == HOUR and date(2025, 11, 5) <= r[4]}
    assert len(overtaken) > FANOUT // 4
    # older rows outside the window, for everyone
    assert {r[1] for r in rows if r[4] < date(2025, 11, 5)} == set(range(1, 2 * FANOUT + 1))
    fanout = record["expected"]["fanout"]
    assert fanout["target_members"] == FANOUT
    assert fanout["pushed_members"] + sum(fanout["filtered"].values()) == FANOUT
    assert all(fanout["filtered"].values())  # each reason occurs
    assert fanout["pushed_members"] <= fanout["messages"] <= 3 * fanout["pushed_members"]


def test_peers_file(generated: Any) -> None:
    database, peers, record = generated
    data = json.loads(peers.read_text(encoding="utf-8"))
    assert set(data["stores"]) == {str(s) for s in range(1, STORES + 1)}
    dongs = set(data["stores"].values())
    assert len(dongs) == DONGS
    assert all(d.endswith("동") and "가" <= d[0] <= "힣" for d in dongs)
    tokens = data["tokens"]
    assert all(1 <= len(t) <= 3 and all(len(x) == 163 for x in t) for t in tokens.values())
    assert all(1 <= int(m) <= 2 * FANOUT for m in tokens)
    per_member = sum(len(t) for t in tokens.values()) / len(tokens)
    assert 1.3 < per_member < 1.8
    stats_dongs = {
        r[0] for r in query(database, "SELECT DISTINCT top_dong FROM coupon_usage_stats")
    }
    assert len(stats_dongs - dongs) == 3  # the dongs without stores
    assert record["expected"]["peers"]["tokens"] == sum(len(t) for t in tokens.values())


def test_second_run_only_checks_and_rewrites_a_missing_file(generated: Any) -> None:
    database, peers, record = generated
    before = peers.read_bytes()
    checksums = query(database, "CHECKSUM TABLE coupon_histories, coupon_events")
    peers.unlink()
    again = generate(database, peers, "--shape", "month")
    assert again["generated"] is False
    assert again["expected"] == record["expected"]
    assert peers.read_bytes() == before
    # forced: the same rows again, byte for byte
    forced = generate(database, peers, "--shape", "month", "--force")
    assert forced["generated"] is True and forced["expected"] == record["expected"]
    assert query(database, "CHECKSUM TABLE coupon_histories, coupon_events") == checksums


# ---- shape year ---------------------------------------------------------------------

YEAR_DAYS, STATS_DAYS = 25, 30  # 800 rows a day: a few within 5 minutes of every second
FIRST_PLACE = datetime(2025, 10, 7, 1)  # 25 days before 01:00 after the run date
SECONDS = YEAR_DAYS * 86400
YEAR_MEMBERS = 10 * HISTORIES * 21 // YEAR_DAYS // 10  # a tenth of the window's rows


def generated_histories(
    tmp_path_factory: pytest.TempPathFactory, shape: str, *extra: str
) -> Iterator[tuple[str, dict[str, Any], list[tuple]]]:
    """A database of 10 x HISTORIES rows over YEAR_DAYS days: its name, the record and
    its histories (id, member_id, store_id, coupon_status, created_at) in id order."""
    database = f"cpb_gen_{shape}_{os.getpid()}"
    peers = tmp_path_factory.mktemp("gen") / "peers.json"
    extra = ("--shape", shape, "--histories", str(10 * HISTORIES), *extra)
    try:
        record = generate(database, peers, "--history-days", str(YEAR_DAYS), *extra)
        rows = query(
            database,
            "SELECT id, member_id, store_id, coupon_status, created_at FROM coupon_histories"
            " ORDER BY id",
        )
        yield database, record, rows
    finally:
        query("information_schema", f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from generated_histories(tmp_path_factory, "year", "--stats-days", str(STATS_DAYS))


def test_year_ids_follow_time_up_to_five_minutes(year: Any) -> None:
    _, record, rows = year
    count = 10 * HISTORIES
    assert [r[0] for r in rows] == list(range(1, count + 1))
    places = [FIRST_PLACE + timedelta(seconds=n * SECONDS // count) for n in range(count)]
    offsets = [(r[4] - place).total_seconds() for r, place in zip(rows, places, strict=True)]
    assert max(map(abs, offsets)) <= 300
    assert min(offsets) < -250 and max(offsets) > 250  # the jitter spans both ways
    # out of id order, at most twice the jitter
    latest, behind = rows[0][4], []
    for r in rows:
        if r[4] < latest:
            behind.append((latest - r[4]).total_seconds())
        latest = max(latest, r[4])
    assert len(behind) > count // 10 and max(behind) <= 600
    assert record["plan"]["members"] == YEAR_MEMBERS
    assert {r[1] for r in rows} == set(range(1, YEAR_MEMBERS + 1))


def test_year_window_is_the_newest_rows_with_jitter_at_both_ends(year: Any) -> None:
    _, record, rows = year
    start, end = WINDOW
    inside = [r for r in rows if start <= r[4] <= end]
    after = [r for r in rows if r[4] > end]
    # the window, then the hour up to 01:00 when the nightly run starts
    assert all(r[4] <= end + timedelta(hours=1, minutes=5) for r in after)
    assert 0 < len(after) < 60 and min(r[0] for r in after) > min(r[0] for r in inside)
    # rows exactly on both ends; ids out of order across both
    assert [r[4] for r in rows].count(start) >= 1 and [r[4] for r in rows].count(end) >= 1
    assert min(r[0] for r in inside) < max(r[0] for r in rows if r[4] < start)
    assert min(r[0] for r in after) < max(r[0] for r in inside)
    stats = record["expected"]["stats"]
    assert stats["window_all_rows"] == len(inside)
    assert stats["window_ids"] == [min(r[0] for r in inside), max(r[0] for r in inside)]
    assert stats["window_rows"] == sum(1 for r in inside if r[3] == "USED")
    assert abs(len(inside) - 10 * HISTORIES * 21 / YEAR_DAYS) < 10 * HISTORIES / YEAR_DAYS / 12


def test_year_members_favourite_hours_and_eligibility(year: Any) -> None:
    _, record, rows = year
    start, end = WINDOW
    used = [r for r in rows if r[3] == "USED" and start <= r[4] <= end]
    per_member = Counter(r[1] for r in used if r[2] <= STORES)
    eligible = sum(1 for count in per_member.values() if count >= 5)
    assert record["expected"]["stats"]["eligible_members"] == eligible
    assert 0.5 < eligible / YEAR_MEMBERS < 1
    hours: dict[int, Counter[int]] = {}
    for r in used:
        hours.setdefault(r[1], Counter())[r[4].hour] += 1
    top = [m for m, c in hours.items() if c.total() >= 10]
    favourite = [m for m in top if hours[m].most_common(1)[0][0] == 11 + (m - 1) % 10]
    assert len(favourite) > 0.8 * len(top)


def test_year_daily_stats_rows(year: Any) -> None:
    database, record, _ = year
    rows = query(
        database,
        "SELECT id, member_id, aggregated_at FROM coupon_usage_stats"
        " WHERE aggregated_at < %s ORDER BY id",
        (date(2025, 11, 5),),
    )
    members = range(1, 2 * FANOUT + 1)
    days = [date(2025, 11, 4) - timedelta(days=k) for k in range(STATS_DAYS)]
    daily = [r for r in rows if r[2] < days[-1] or r[0] <= STATS_DAYS * len(members)]
    # one row a member a day, day after day in id order, from id 1
    assert [(r[0], r[1], r[2]) for r in daily] == [
        (i + 1, m, day)
        for i, (day, m) in enumerate((day, m) for day in reversed(days) for m in members)
    ]
    assert record["expected"]["fanout"]["target_members"] == FANOUT


# ---- shape sparse -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield from generated_histories(tmp_path_factory, "sparse", "--fanout-members", "0")


def test_sparse_members_mostly_occasional(sparse: Any) -> None:
    """Issue 30's shape: most members of the window have 1-4 uses, under 10% have 5 or
    more, and those are the regulars (every `step`-th id), whose uses are the most."""
    _, record, rows = sparse
    plan = record["plan"]
    members, regulars = plan["members"], plan["regulars"]
    assert (members, regulars) == (YEAR_MEMBERS * 27 // 10, YEAR_MEMBERS * 27 // 10 // 14)
    step = members // regulars
    start, end = WINDOW
    uses = Counter(r[1] for r in rows if r[3] == "USED" and start <= r[4] <= end)
    counts = Counter(min(n, 5) for n in uses.values())
    assert counts[1] and counts[2] and counts[3] and counts[4]
    assert 0.03 < counts[5] / len(uses) < 0.10
    assert all(n <= 4 for m, n in uses.items() if m % step)  # the occasional members
    assert sum(n for m, n in uses.items() if m % step == 0) / sum(uses.values()) > 0.2
    assert {r[1] for r in rows} <= set(range(1, members + 1))
    used = [r for r in rows if r[3] == "USED" and start <= r[4] <= end]
    usable = Counter(r[1] for r in used if r[2] <= STORES)
    eligible = sum(1 for n in usable.values() if n >= 5)
    assert record["expected"]["stats"]["eligible_members"] == eligible
    # ids follow time as in the year shape: the window is the newest rows
    assert min(r[0] for r in rows if start <= r[4] <= end) > 10 * HISTORIES * 3 // YEAR_DAYS
