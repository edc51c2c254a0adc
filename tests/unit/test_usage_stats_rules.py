"""The rules of couponUsageStatsJob (issue 4) as table tests of its pure functions."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime

import pytest

from app.jobs.usage_stats import (
    MIN_ROWS,
    favourite,
    hour_of,
    id_ranges,
    time_ranges,
    window,
)
from app.jobs.usage_stats_spec import SPEC
from app.runtime.parameters import ParameterError

EPOCH = datetime(1, 1, 1)
EPOCH_SECONDS = 86400 * 366  # MariaDB's TO_SECONDS('0001-01-01 00:00:00')


def to_seconds(at: str) -> int:
    """MariaDB's TO_SECONDS of a 'YYYY-MM-DD HH:MM:SS' datetime."""
    delta = datetime.fromisoformat(at) - EPOCH
    return EPOCH_SECONDS + delta.days * 86400 + delta.seconds


def fav(*uses: tuple[str, str]) -> tuple[str, int] | None:
    """favourite() of (dong, created_at) rows, one store per dong, in the given order
    and in reverse: the order of rows must not matter."""
    store_of = {dong: number for number, dong in enumerate(dict.fromkeys(d for d, _ in uses))}
    dong_of = {number: dong for dong, number in store_of.items()}
    rows = [(7, store_of[dong], to_seconds(at)) for dong, at in uses]
    found = favourite(rows, dong_of)
    assert favourite(rows[::-1], dong_of) == found
    return found


@pytest.mark.parametrize(
    ("run_date", "first", "last"),
    [
        (date(2025, 10, 26), datetime(2025, 10, 6, 0, 0, 0), datetime(2025, 10, 26, 23, 59, 59)),
        (date(2024, 3, 1), datetime(2024, 2, 10, 0, 0, 0), datetime(2024, 3, 1, 23, 59, 59)),
        (date(2025, 1, 5), datetime(2024, 12, 16, 0, 0, 0), datetime(2025, 1, 5, 23, 59, 59)),
    ],
)
def test_window_is_runDate_minus_20_days_to_the_end_of_runDate(run_date, first, last) -> None:
    assert window(run_date) == (first, last)


@pytest.mark.parametrize(
    ("at", "hour"),
    [
        ("2025-10-26 00:00:00", 0),
        ("2025-10-26 00:59:59", 0),
        ("2025-10-26 13:00:00", 13),
        ("2025-10-26 23:59:59", 23),
        ("2024-02-29 07:30:00", 7),
    ],
)
def test_hour_of_to_seconds(at: str, hour: int) -> None:
    assert hour_of(to_seconds(at)) == hour


def test_to_seconds_helper_matches_mariadb() -> None:
    # SELECT TO_SECONDS('2025-10-26 13:00:00') on MariaDB 10.11
    assert to_seconds("2025-10-26 13:00:00") == 63_928_702_800


D = "2025-10-2"  # days 20..26 below: f"{D}0 10:00:00" is 2025-10-20 10:00:00

CASES = {
    "fewer than 5 rows: not eligible": (
        [("상도동", f"{D}0 10:00:00")] * 4,
        None,
    ),
    "exactly 5 rows: eligible": (
        [("상도동", f"{D}{d} 10:00:00") for d in range(5)],
        ("상도동", 10),
    ),
    "most rows wins over the most recent": (
        [
            *(("상도동", f"{D}{d} 10:00:00") for d in range(3)),
            *(("흑석동", f"{D}{d} 11:00:00") for d in range(4, 6)),
        ],
        ("상도동", 10),
    ),
    "dong tie: the most recent row wins over the greater name": (
        [
            ("가동", f"{D}0 10:00:00"),
            ("가동", f"{D}5 10:00:00"),
            ("하동", f"{D}1 10:00:00"),
            ("하동", f"{D}4 23:59:59"),
            ("나동", f"{D}2 09:00:00"),
        ],
        ("가동", 10),
    ),
    "dong tie on count and latest: the greater name in code points": (
        [
            ("가동", f"{D}0 10:00:00"),
            ("가동", f"{D}5 10:00:00"),
            ("하동", f"{D}1 10:00:00"),
            ("하동", f"{D}5 10:00:00"),
            ("나동", f"{D}2 09:00:00"),
        ],
        ("하동", 10),
    ),
    "code points, not a collation: 'b' > 'B' > 'A', Hangul > ASCII": (
        [
            ("B", f"{D}5 10:00:00"),
            ("b", f"{D}5 10:00:00"),
            ("A", f"{D}5 10:00:00"),
            ("Z", f"{D}1 10:00:00"),
            ("Y", f"{D}1 10:00:00"),
        ],
        ("b", 10),
    ),
    "Hangul beats ASCII in code points": (
        [
            ("Zdong", f"{D}5 10:00:00"),
            ("상도동", f"{D}5 11:00:00"),
            ("x", f"{D}1 10:00:00"),
            ("y", f"{D}1 10:00:00"),
            ("z", f"{D}1 10:00:00"),
        ],
        ("상도동", 11),
    ),
    "emoji beyond the BMP beats Hangul": (
        [
            ("🍜동", f"{D}5 10:00:00"),
            ("힣동", f"{D}5 10:00:00"),
            ("x", f"{D}1 10:00:00"),
            ("y", f"{D}1 10:00:00"),
            ("z", f"{D}1 10:00:00"),
        ],
        ("🍜동", 10),
    ),
    "the top hour counts only the top dong's rows": (
        [
            ("상도동", f"{D}0 09:00:00"),
            ("상도동", f"{D}1 10:00:00"),
            ("상도동", f"{D}2 11:00:00"),
            ("흑석동", f"{D}3 18:00:00"),
            ("흑석동", f"{D}4 18:30:00"),
        ],
        ("상도동", 11),
    ),
    "hour: most rows wins over the most recent": (
        [
            *(("상도동", f"{D}{d} 09:00:00") for d in range(3)),
            *(("상도동", f"{D}{d} 21:00:00") for d in range(4, 6)),
        ],
        ("상도동", 9),
    ),
    "hour tie: the most recent row wins over the greater hour": (
        [
            ("상도동", f"{D}0 22:00:00"),
            ("상도동", f"{D}1 22:59:59"),
            ("상도동", f"{D}2 08:00:00"),
            ("상도동", f"{D}3 08:00:00"),
            ("상도동", f"{D}3 05:00:00"),
        ],
        ("상도동", 8),
    ),
    # "Then the greater hour" cannot decide anything: rows with the same latest
    # created_at have the same hour. The rule is kept in the code as written.
    "minutes and seconds do not matter to the hour": (
        [("상도동", f"{D}{d} 13:{d}5:{d}9") for d in range(5)],
        ("상도동", 13),
    ),
    "midnight and the last second of the day": (
        [
            ("상도동", f"{D}0 00:00:00"),
            ("상도동", f"{D}1 00:30:00"),
            ("상도동", f"{D}2 23:59:59"),
            ("상도동", f"{D}3 23:00:00"),
            ("상도동", f"{D}4 12:00:00"),
        ],
        ("상도동", 23),
    ),
    "the fixture's member 1: four dongs tie at 2, the latest is 신대방동": (
        [
            ("서교동", "2025-10-07 08:15:00"),
            ("노량진동", "2025-10-08 12:30:00"),
            ("풍무동", "2025-10-09 16:10:00"),
            ("상도동", "2025-10-10 18:30:00"),
            ("흑석동", "2025-10-11 09:40:00"),
            ("대방동", "2025-10-12 21:05:00"),
            ("신대방동", "2025-10-13 11:00:00"),
            ("사당동", "2025-10-14 15:00:00"),
            ("노량진동", "2025-10-20 09:00:00"),
            ("상도동", "2025-10-22 13:00:00"),
            ("흑석동", "2025-10-24 18:30:00"),
            ("신대방동", "2025-10-26 11:00:00"),
        ],
        ("신대방동", 11),
    ),
}


@pytest.mark.parametrize(("uses", "expected"), list(CASES.values()), ids=list(CASES))
def test_favourite(uses: list[tuple[str, str]], expected: tuple[str, int] | None) -> None:
    assert fav(*uses) == expected


def test_favourite_equal_latest_times_in_either_order() -> None:
    early = [("x", f"{D}0 10:00:00"), ("y", f"{D}1 10:00:00"), ("z", f"{D}2 10:00:00")]
    tie = [("가동", f"{D}5 10:00:00"), ("하동", f"{D}5 10:00:00")]
    assert fav(*early, *tie) == ("하동", 10)
    assert fav(*tie, *early) == ("하동", 10)
    assert fav(*tie[::-1], *early) == ("하동", 10)


STORES = {1: "상도동", 2: "흑석동", 3: "노량진동", 99: None}  # 99: the store service has none


def rows_of(*uses: tuple[int, str]) -> list[tuple[int, int, int]]:
    """Rows as read: (member_id, store_id, TO_SECONDS)."""
    return [(7, store, to_seconds(at)) for store, at in uses]


MEMBER_CASES = {
    "5 rows, all known": (
        rows_of(*[(1, f"{D}{d} 10:00:00") for d in range(5)]),
        ("상도동", 10),
    ),
    "5 rows, one of an unknown store: 4 usable, not eligible": (
        rows_of(*[(1, f"{D}{d} 10:00:00") for d in range(4)], (99, f"{D}5 11:00:00")),
        None,
    ),
    "6 rows, one of an unknown store: 5 usable, eligible": (
        rows_of(*[(2, f"{D}{d} 10:00:00") for d in range(5)], (99, f"{D}5 11:00:00")),
        ("흑석동", 10),
    ),
    "unknown stores would have been the top: dropped before counting": (
        rows_of(
            *[(99, f"{D}{d} 20:00:00") for d in range(6)],
            *[(1, f"{D}{d} 10:00:00") for d in range(3)],
            *[(3, f"{D}{d} 11:00:00") for d in range(3, 5)],
        ),
        ("상도동", 10),
    ),
    "only unknown stores": (
        rows_of(*[(99, f"{D}{d} 10:00:00") for d in range(7)]),
        None,
    ),
}


@pytest.mark.parametrize(("rows", "expected"), list(MEMBER_CASES.values()), ids=list(MEMBER_CASES))
def test_favourite_drops_unknown_stores_first(rows, expected) -> None:
    assert favourite(rows, STORES) == expected


def test_a_store_not_looked_up_yet_is_a_key_error_not_a_store_without_dong() -> None:
    """The job looks a member's stores up and computes it again (UsageStatsStep.process):
    counted as a store without a dong, it would change the member's favourite."""
    rows = rows_of(*[(1, f"{D}{d} 10:00:00") for d in range(5)], (4, f"{D}6 11:00:00"))
    with pytest.raises(KeyError):
        favourite(rows, STORES)


def test_fewer_than_min_rows_is_not_eligible_and_needs_no_store_looked_up() -> None:
    """Issue 30: such a member can never qualify, so none of its stores is needed."""
    short = rows_of(*[(4, f"{D}{d} 10:00:00") for d in range(MIN_ROWS - 1)])
    assert favourite(short, STORES) is None
    assert favourite(rows_of(*[(1, f"{D}{d} 10:00:00") for d in range(MIN_ROWS - 1)]), {}) is None
    with pytest.raises(KeyError):
        favourite([*short, *rows_of((4, f"{D}6 10:00:00"))], STORES)


def reference(rows, dong_of) -> tuple[str, int] | None:
    """favourite() as its docstring states it, written plainly (Counter, sort keys)."""
    known = [(dong_of[store], at) for _, store, at in rows if dong_of.get(store) is not None]
    if len(known) < MIN_ROWS:
        return None

    def top(pairs: list[tuple[object, int]]) -> object:
        counts = Counter(key for key, _ in pairs)
        latest = {key: max(at for k, at in pairs if k == key) for key in counts}
        return max(counts, key=lambda key: (counts[key], latest[key], key))

    dong = top(known)
    return dong, top([(hour_of(at), at) for d, at in known if d == dong])


def test_favourite_equals_the_plain_reference_on_random_members() -> None:
    """Few stores, dongs, hours and times per member: ties of every kind are common."""
    draw = random.Random(20251031)
    dong_of = {1: "상도동", 2: "상도동", 3: "흑석동", 4: "사당동", 5: None, 6: "가동", 7: None}
    start = to_seconds(f"{D}0 00:00:00")
    for _ in range(3000):
        rows = [
            (7, draw.randint(1, 7), start + 3600 * draw.randint(0, 40) + draw.choice((0, 59)))
            for _ in range(draw.randint(0, 12))
        ]
        assert favourite(rows, dong_of) == reference(rows, dong_of), rows


def test_min_rows_is_five() -> None:
    assert MIN_ROWS == 5


def test_parse_requires_runDate() -> None:
    now = datetime(2025, 10, 27, 1, 0)
    (parameter,) = SPEC.parse({"runDate": "2025-10-26"}, now)
    assert (parameter.name, parameter.type, parameter.value, parameter.identifying) == (
        "runDate",
        "java.time.LocalDate",
        "2025-10-26",
        True,
    )
    for raw in ({}, {"runDate": ""}, {"runDate": "2025-13-01"}, {"runDate": "26/10/2025"}):
        with pytest.raises(ParameterError):
            SPEC.parse(raw, now)


@pytest.mark.parametrize(
    ("low", "high", "parts", "expected"),
    [
        (1, 100, 1, [(None, None)]),
        (1, 100, 2, [(None, 51), (51, None)]),
        (1, 10, 3, [(None, 4), (4, 7), (7, None)]),
        (1001, 1004, 4, [(None, 1002), (1002, 1003), (1003, 1004), (1004, None)]),
        # fewer ids than parts: no range is asked for twice
        (5, 5, 3, [(None, 5), (5, None)]),
    ],
)
def test_id_ranges_cover_every_id_once(
    low: int, high: int, parts: int, expected: list[tuple[int | None, int | None]]
) -> None:
    assert id_ranges(low, high, parts) == expected


@pytest.mark.parametrize(
    ("low", "high", "parts", "ends", "expected"),
    [
        (40, 99, 2, (40, None), [(40, 70), (70, None)]),
        (40, 99, 3, (40, 100), [(40, 60), (60, 80), (80, 100)]),
        (40, 40, 3, (40, 41), [(40, 41)]),
        (40, 41, 3, (40, 42), [(40, 41), (41, 42)]),
    ],
)
def test_id_ranges_of_a_span_start_and_end_on_its_ends(
    low: int, high: int, parts: int, ends: tuple, expected: list[tuple]
) -> None:
    assert id_ranges(low, high, parts, ends) == expected


def test_time_ranges_split_the_window_to_the_second() -> None:
    start, end = datetime(2025, 10, 6), datetime(2025, 10, 26, 23, 59, 59)
    assert time_ranges(start, end, 1) == [(None, None)]
    assert time_ranges(start, end, 2) == [
        (None, datetime(2025, 10, 16, 11, 59, 59)),
        (datetime(2025, 10, 16, 11, 59, 59), None),
    ]
    assert len(time_ranges(start, end, 3)) == 3
    assert time_ranges(start, start, 3) == [(None, None)]
