"""The fan-out job's rules, as tables: window, reference time, per-member decision, parameters."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.contracts import PushRequest
from app.jobs.fcm_send import (
    Filtered,
    LatestStats,
    active_event_count,
    decide,
    reference_time,
    stats_window,
)
from app.jobs.fcm_send_spec import SPEC
from app.model import JobParameter
from app.runtime.parameters import ParameterError
from app.spring_format import job_key

SEOUL = ZoneInfo("Asia/Seoul")


@pytest.mark.parametrize(
    ("run_date", "window"),
    [
        (date(2025, 10, 25), (date(2025, 10, 23), date(2025, 10, 25))),
        (date(2025, 3, 1), (date(2025, 2, 27), date(2025, 3, 1))),
        (date(2024, 3, 1), (date(2024, 2, 28), date(2024, 3, 1))),  # leap year
        (date(2026, 1, 1), (date(2025, 12, 30), date(2026, 1, 1))),
    ],
)
def test_stats_window(run_date: date, window: tuple[date, date]) -> None:
    assert stats_window(run_date) == window


@pytest.mark.parametrize(
    ("run_date", "hour", "at"),
    [
        (date(2025, 10, 25), 10, datetime(2025, 10, 25, 10, 0)),
        (date(2025, 10, 26), 16, datetime(2025, 10, 26, 16, 0)),
        (date(2025, 10, 26), 0, datetime(2025, 10, 26, 0, 0)),
        (date(2025, 12, 31), 23, datetime(2025, 12, 31, 23, 0)),
    ],
)
def test_reference_time(run_date: date, hour: int, at: datetime) -> None:
    assert reference_time(run_date, hour) == at


@pytest.mark.parametrize(
    ("store_ids", "events", "count"),
    [
        ([1], {1: 3}, 3),
        ([1, 2], {1: 3, 2: 2}, 5),
        ([1, 2], {2: 2}, 2),
        ([7], {1: 3}, 0),
        ([], {1: 3}, 0),
    ],
)
def test_active_event_count(store_ids: list[int], events: dict[int, int], count: int) -> None:
    assert active_event_count(store_ids, events) == count


STATS = LatestStats(101, "노량진동", 10, date(2025, 10, 25))


def push(token: str, count: int) -> PushRequest:
    return PushRequest.for_token(date(2025, 10, 25), 101, token, "노량진동", 10, count)


@pytest.mark.parametrize(
    ("tokens", "store_ids", "active", "expected"),
    [
        (None, [1], 3, Filtered.NO_TOKENS),
        ([], [1], 3, Filtered.NO_TOKENS),
        (None, None, 0, Filtered.NO_TOKENS),  # tokens are checked first
        (["t"], None, 3, Filtered.NO_STORE),
        (["t"], [], 0, Filtered.NO_STORE),
        (["t"], [1], 0, Filtered.NO_ACTIVE_EVENT),
        (["t"], [1], -1, Filtered.NO_ACTIVE_EVENT),
        (["token-101-a"], [1], 3, [push("token-101-a", 3)]),
        (
            ["token-101-a", "token-101-b"],
            [1, 2],
            4,
            [push("token-101-a", 4), push("token-101-b", 4)],
        ),
        (["t", "t"], [1], 1, [push("t", 1)]),  # the same token is pushed once
    ],
)
def test_decide(
    tokens: list[str] | None,
    store_ids: list[int] | None,
    active: int,
    expected: Filtered | list[PushRequest],
) -> None:
    assert decide(STATS, tokens, store_ids, active) == expected


def test_decide_message_uses_the_rows_date_for_the_trace_id() -> None:
    [request] = decide(STATS, ["token-101-a"], [1], 3)
    assert request.trace_id == "f85971b0-2d71-3dc0-b533-047f9a578d93"
    assert (request.member_id, request.token, request.top_dong) == (101, "token-101-a", "노량진동")
    assert (request.top_hour, request.active_event_count) == (10, 3)


NOW = datetime(2025, 10, 25, 9, 59, 30, tzinfo=SEOUL)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, ("2025-10-25", "9", "false")),
        ({"runDate": "2025-10-26"}, ("2025-10-26", "9", "false")),
        ({"targetHour": "0"}, ("2025-10-25", "0", "false")),
        ({"targetHour": "23", "dryRun": "true"}, ("2025-10-25", "23", "true")),
        ({"runDate": "", "targetHour": ""}, ("2025-10-25", "9", "false")),
        ({"targetHour": "07", "dryRun": "TRUE"}, ("2025-10-25", "7", "true")),
    ],
)
def test_parse(raw: dict[str, str], expected: tuple[str, str, str]) -> None:
    parsed = SPEC.parse(raw, NOW)
    assert parsed[:2] == [
        JobParameter("runDate", "java.time.LocalDate", expected[0]),
        JobParameter("targetHour", "java.lang.Integer", expected[1]),
    ]
    if expected[2] == "false":  # the real run's instance: dryRun does not identify it
        assert parsed[2:] == [JobParameter("dryRun", "java.lang.Boolean", "false", False)]
    else:  # a dry run is an instance of its own
        [dry, run_id] = parsed[2:]
        assert dry == JobParameter("dryRun", "java.lang.Boolean", "true", identifying=True)
        assert (run_id.name, run_id.type, run_id.identifying) == ("run.id", "java.lang.Long", True)
        assert int(run_id.value) > 0


def test_every_dry_run_is_a_new_instance() -> None:
    first, second = (SPEC.parse({"dryRun": "true"}, NOW) for _ in range(2))
    assert job_key(first) != job_key(second) != job_key(SPEC.parse({}, NOW))


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ({"runDate": "2025-13-01"}, "runDate"),
        ({"runDate": "20251025"}, "runDate"),
        ({"targetHour": "24"}, "targetHour"),
        ({"targetHour": "-1"}, "targetHour"),
        ({"targetHour": "ten"}, "targetHour"),
        ({"dryRun": "yes"}, "dryRun"),
    ],
)
def test_parse_refuses(raw: dict[str, str], parameter: str) -> None:
    with pytest.raises(ParameterError) as refused:
        SPEC.parse(raw, NOW)
    assert refused.value.parameter == parameter


def test_spec_names() -> None:
    assert (SPEC.name, SPEC.path, SPEC.publishes) == (
        "couponUsageStatsFcmSendJob",
        "coupon-usage-stats-fcm-send",
        True,
    )
