"""Bad input, end to end: the admin API fuzzed from its own OpenAPI document, forged
tokens and odd requests over a real socket, and `coupon_histories` rows the stats rules
must survive through the real job, the store service over HTTP and MariaDB (utf8mb4)."""

from __future__ import annotations

import base64
import json
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta

import hypothesis

# The plugins' modules the fuzz imports lazily, imported here instead: pytest rewrites
# them on import (ast.parse), and CPython 3.11's AST state is shared between threads,
# so a parse in the middle of the run, while the live app's thread formats a traceback
# (which parses too), failed with "SystemError: AST constructor recursion depth mismatch".
import hypothesis.internal.conjecture.optimiser
import hypothesis.strategies._internal.random
import jwt
import pytest
import requests
import schemathesis
import schemathesis.generation.dictionaries
import schemathesis.specs.openapi.object_authorization
import schemathesis.wfc.escalation
from aiohttp import web
from asyncmy.pool import Pool
from schemathesis import Case, checks
from schemathesis.generation import GenerationMode
from yarl import URL

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.edges.peers import REGIONS
from app.web.openapi import openapi
from tests.conftest import DB_SERVER
from tests.integration.test_usage_stats_job import (
    add_histories,
    counts,
    job_settings,
    rows_of,
    run_job,
    stats,
)
from tests.integration.test_web_api import assert_error, rs256_token, token
from tests.reliability.support import LiveApp, is_error_body, live_app
from tests.settings import TEST_JWT_KEY, make_settings

STATS = "/api/v1/jobs/coupon-usage-stats"
FANOUT = "/api/v1/jobs/coupon-usage-stats-fcm-send"
STACK_TRACE_MARKS = ("Traceback", 'File "')
ADMIN = {"Authorization": f"Bearer {token(expires_in=24 * 3600)}"}


@pytest.fixture(scope="module")
def app(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """One live app for the module; tests that count launches take `pool` too, which
    empties the tables first."""
    settings = make_settings(DB_URL=f"{DB_SERVER}/{database}")
    dry_runs = tmp_path_factory.mktemp("dry-run")
    with live_app(settings, {1: "상도동"}, DRY_RUN_DIR=dry_runs) as live:
        yield live


def launches(app: LiveApp) -> tuple[int, int]:
    return app.count("BATCH_JOB_INSTANCE"), app.count("BATCH_JOB_EXECUTION")


# ---- the admin API fuzzed from /v3/api-docs --------------------------------------------

JOB_NAMES = ("coupon-usage-stats", "coupon-usage-stats-fcm-send", "couponUsageStatsJob")


def map_path_parameters(context: object, path_parameters: dict | None) -> dict | None:
    """A real job name in one case of two, so generated query parameters reach the job's
    own checks instead of stopping at the unknown job name."""
    if path_parameters and isinstance(path_parameters.get("jobName"), str):
        name = path_parameters["jobName"]
        if len(name) % 2 == 0:
            path_parameters["jobName"] = JOB_NAMES[len(name) % len(JOB_NAMES)]
    return path_parameters


# The document /v3/api-docs serves (test_the_fuzzed_document_is_the_served_one): parametrizing
# needs it at collection, before any server runs. (`schemathesis.pytest.from_fixture` would
# load it from the live app but fails under pytest 9: it sets `Function._nodeid`.)
OPENAPI = openapi(JOBS)
fuzz = schemathesis.openapi.from_dict(OPENAPI)
fuzz.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=100
)
fuzz.hook(map_path_parameters)

# Schemathesis' own checks, but for three that test the document's precision rather than
# the service: job names are not an enum and execution ids have no minimum in it (a valid
# looking `jobName=0` or `id=-1` is a 400: positive_data_acceptance); one launch operation
# serves both jobs, so the stats job ignores targetHour and dryRun (negative_data_rejection);
# times are Spring's LocalDateTime, without an offset, where the document says `date-time`
# (response_schema_conformance).
NOT_CHECKED = [
    checks.positive_data_acceptance,
    checks.negative_data_rejection,
    checks.response_schema_conformance,
]


def test_the_fuzzed_document_is_the_served_one(app: LiveApp) -> None:
    served = requests.get(f"{app.url}/v3/api-docs", timeout=10)
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(OPENAPI))


@fuzz.parametrize()
@hypothesis.settings(
    deadline=2000, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_admin_api_fuzzed(case: Case, app: LiveApp) -> None:
    """No 5xx, no stack trace, every error in the platform's JSON shape; an admin token
    on every call but the ones schemathesis sends to probe the auth."""
    response = case.call(base_url=app.url, headers=ADMIN, timeout=10)
    text = response.text
    request = f"{case.method} {response.request.url} -> {response.status_code}: {text[:300]}"
    assert response.status_code < 500, request
    assert not any(mark in text for mark in STACK_TRACE_MARKS), request
    if response.status_code >= 400:
        path = URL(response.request.url, encoded=True).path
        assert is_error_body(response.json(), response.status_code, path), request
    case.validate_response(response, headers=ADMIN, excluded_checks=NOT_CHECKED)


# ---- forged tokens: 401 with the right code, and never a launch ------------------------

INVALID, EXPIRED = "INVALID_TOKEN", "EXPIRED_TOKEN"
RUN_DATE = "2025-10-26"
# Every protected call; the launches would start a job if the token passed.
PROTECTED = (
    ("POST", f"{STATS}?runDate={RUN_DATE}"),
    ("POST", f"{FANOUT}?runDate={RUN_DATE}&targetHour=10&dryRun=true"),
    ("GET", f"{STATS}/executions"),
    ("GET", "/api/v1/jobs/executions/1"),
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims = {"sub": "1", "username": "operator", "memberType": "ADMIN", "iat": now}
    return {**claims, "exp": now + 3600, **changes}


def _unsigned(alg: str) -> str:
    """Header `alg` over admin claims, with an empty signature."""
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(_claims()).encode())}."


def _tampered(original: str, **changes: object) -> str:
    """`original` with claims changed and its signature kept."""
    header, payload, signature = original.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64url(json.dumps({**claims, **changes}).encode())}.{signature}"


def _signed(**claims: object) -> str:
    return jwt.encode(claims, TEST_JWT_KEY, algorithm="HS256")


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# (name, headers, code): minted when the test runs, so "expired one second ago" is.
FORGED = [
    ("alg none", lambda: _bearer(token(None, algorithm="none")), INVALID),
    ("alg None", lambda: _bearer(_unsigned("None")), INVALID),
    ("alg NONE", lambda: _bearer(_unsigned("NONE")), INVALID),
    ("alg HS256, signature stripped", lambda: _bearer(token().rsplit(".", 1)[0] + "."), INVALID),
    ("RS256", lambda: _bearer(rs256_token()), INVALID),
    # jjwt refuses an HMAC algorithm whose minimum key length the key does not reach
    ("HS512 with the 32-byte key", lambda: _bearer(token(algorithm="HS512")), INVALID),
    ("another key", lambda: _bearer(token(b"another-key-of-thirty-two-bytes!")), INVALID),
    (
        "tampered payload: USER made ADMIN",
        lambda: _bearer(_tampered(token(member_type="USER"), memberType="ADMIN")),
        INVALID,
    ),
    (
        "tampered payload: an expired token re-dated",
        lambda: _bearer(_tampered(token(expires_in=-60), exp=int(time.time()) + 3600)),
        INVALID,
    ),
    ("expired one second ago", lambda: _bearer(token(expires_in=-1)), EXPIRED),
    ("expires this very second", lambda: _bearer(token(expires_in=0)), EXPIRED),
    (
        "expired, and not an admin",
        lambda: _bearer(token(member_type="USER", expires_in=-1)),
        EXPIRED,
    ),
    ("no exp", lambda: _bearer(_signed(**_without("exp"))), INVALID),
    ("no sub", lambda: _bearer(_signed(**_without("sub"))), INVALID),
    ("exp as a string", lambda: _bearer(_signed(**_claims(exp="99999999999"))), INVALID),
    ("garbage", lambda: _bearer("not.a.jwt"), INVALID),
    ("garbage: three base64url parts", lambda: _bearer("eyJhbGciOi.eyJzdWIi.c2ln"), INVALID),
    ("garbage: JSON claims", lambda: _bearer(json.dumps(_claims())), INVALID),
    ("garbage: 4,000 characters", lambda: _bearer("A" * 4000), INVALID),
    ("garbage: Hangul (UTF-8)", lambda: {"Authorization": "Bearer 관리자".encode()}, INVALID),
    # The wrong header forms. The scheme is matched as the platform's filters match it,
    # `startsWith("Bearer ")`: case-sensitive (Spring Security's own resolver would take
    # `bearer`; this platform's jjwt filters do not).
    ("no scheme", lambda: {"Authorization": token()}, INVALID),
    ("Token scheme", lambda: {"Authorization": f"Token {token()}"}, INVALID),
    ("lowercase bearer", lambda: {"Authorization": f"bearer {token()}"}, INVALID),
    ("uppercase BEARER", lambda: {"Authorization": f"BEARER {token()}"}, INVALID),
    ("Bearer: with a colon", lambda: {"Authorization": f"Bearer: {token()}"}, INVALID),
    ("Bearer and no space", lambda: {"Authorization": f"Bearer{token()}"}, INVALID),
    ("Basic credentials", lambda: {"Authorization": "Basic YWRtaW46YWRtaW4="}, INVALID),
    ("token in X-Auth-Token", lambda: {"X-Auth-Token": token()}, INVALID),
    ("token in a cookie", lambda: {"Cookie": f"accessToken={token()}"}, INVALID),
]


def _without(name: str) -> dict[str, object]:
    return {k: v for k, v in _claims().items() if k != name}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 minting
@pytest.mark.parametrize(
    ("headers", "code"), [case[1:] for case in FORGED], ids=[case[0] for case in FORGED]
)
def test_forged_tokens_are_401_and_never_launch(
    app: LiveApp, pool: Pool, headers: object, code: str
) -> None:
    sent = headers()  # type: ignore[operator]
    for method, target in PROTECTED:
        response = requests.request(method, f"{app.url}{target}", headers=sent, timeout=10)
        assert response.status_code == 401, (method, target, response.text)
        assert_error(response.json(), "401 UNAUTHORIZED", code, target.split("?")[0])
    assert launches(app) == (0, 0)


def test_the_admin_token_itself_launches(app: LiveApp, pool: Pool) -> None:
    """The forged cases above differ from this one only in their token."""
    response = requests.post(f"{app.url}{STATS}?runDate={RUN_DATE}", headers=ADMIN, timeout=10)
    assert response.status_code == 202, response.text
    assert launches(app) == (1, 1)


# ---- odd requests ---------------------------------------------------------------------


def finished(app: LiveApp, location: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = requests.get(f"{app.url}{location}", headers=ADMIN, timeout=10).json()
        if body["status"] not in ("STARTING", "STARTED"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{location} still running after 30 s")


def test_oversized_request_line_or_header_is_refused_before_the_app(
    app: LiveApp, pool: Pool
) -> None:
    """aiohttp's HTTP parser refuses a request line or a header field over 8,190 bytes
    with its own plain-text 400, before any middleware: the one error body that is not
    the platform's JSON (as Tomcat's own 400 past max-http-request-header-size is not
    Spring's). Never a launch, never a stack trace."""
    launch = f"{STATS}?runDate={RUN_DATE}"
    for target, headers in (
        (f"{launch}&padding={'x' * 9000}", ADMIN),
        (launch, _bearer("A" * 9000)),
        (launch, {**ADMIN, "X-Padding": "x" * 9000}),
    ):
        response = requests.post(f"{app.url}{target}", headers=headers, timeout=10)
        assert response.status_code == 400
        assert response.text.startswith("Got more than 8190 bytes when reading")
        assert not any(mark in response.text for mark in STACK_TRACE_MARKS)
    assert launches(app) == (0, 0)


def test_authorization_bytes_that_are_not_utf8_are_401(app: LiveApp, pool: Pool) -> None:
    for method, target in PROTECTED:
        response = requests.request(
            method, f"{app.url}{target}", headers={"Authorization": b"Bearer \xff\xfe"}, timeout=10
        )
        assert response.status_code == 401, (method, target, response.text)
        assert_error(response.json(), "401 UNAUTHORIZED", INVALID, target.split("?")[0])
    assert launches(app) == (0, 0)


MAX_DIGITS = 4300  # sys.int_info.default_max_str_digits: int() refuses longer strings


@pytest.mark.parametrize(
    ("method", "target", "status", "code", "parameter"),
    [
        pytest.param(
            "GET",
            f"/api/v1/jobs/executions/{'9' * digits}",
            404,
            "EXECUTION_NOT_FOUND",
            None,
            id=f"id of {digits} digits",
        )
        for digits in (MAX_DIGITS, MAX_DIGITS + 1)
    ]
    + [
        pytest.param(
            "GET",
            f"{STATS}/executions?limit={'9' * digits}",
            400,
            "INVALID_PARAMETER",
            "limit",
            id=f"limit of {digits} digits",
        )
        for digits in (MAX_DIGITS, MAX_DIGITS + 1)
    ]
    + [
        pytest.param(
            "POST",
            f"{FANOUT}?runDate={RUN_DATE}&targetHour={'9' * digits}&dryRun=true",
            400,
            "INVALID_PARAMETER",
            "targetHour",
            id=f"targetHour of {digits} digits",
        )
        for digits in (MAX_DIGITS, MAX_DIGITS + 1)
    ],
)
def test_huge_numbers(
    app: LiveApp, pool: Pool, method: str, target: str, status: int, code: str, parameter: str
) -> None:
    response = requests.request(method, f"{app.url}{target}", headers=ADMIN, timeout=10)
    assert response.status_code == status, response.text[:300]
    phrase = "404 NOT_FOUND" if status == 404 else "400 BAD_REQUEST"
    error = assert_error(response.json(), phrase, code, target.split("?")[0])
    if parameter is not None:
        assert error["message"].startswith(f"{parameter}: ")
    assert launches(app) == (0, 0)


@pytest.mark.parametrize(
    ("target", "accepted"),
    [
        pytest.param(f"{STATS}?runDate=0001-01-21", True, id="stats, first whole window"),
        pytest.param(f"{STATS}?runDate=0001-01-20", False, id="stats, underflow"),
        pytest.param(f"{STATS}?runDate=9999-12-31", True, id="stats, last day"),
        pytest.param(
            f"{FANOUT}?runDate=0001-01-03&targetHour=0&dryRun=true",
            True,
            id="fan-out, first whole window",
        ),
        pytest.param(
            f"{FANOUT}?runDate=0001-01-02&targetHour=0&dryRun=true",
            False,
            id="fan-out, underflow",
        ),
        pytest.param(
            f"{FANOUT}?runDate=9999-12-31&targetHour=23&dryRun=true", True, id="fan-out, last hour"
        ),
    ],
)
def test_run_dates_at_the_ends_of_the_calendar(
    app: LiveApp, pool: Pool, target: str, accepted: bool
) -> None:
    response = requests.post(f"{app.url}{target}", headers=ADMIN, timeout=10)
    if accepted:
        assert response.status_code == 202, response.text
        done = finished(app, response.headers["Location"])
        assert (done["status"], done["exitMessage"]) == ("COMPLETED", "")
    else:
        assert response.status_code == 400, response.text
        error = assert_error(
            response.json(), "400 BAD_REQUEST", "INVALID_PARAMETER", target.split("?")[0]
        )
        assert error["message"].startswith("runDate: ")
        assert launches(app) == (0, 0)


# ---- coupon_histories rows the rules must survive (the real job, MariaDB utf8mb4) -------

DAY = date(2025, 10, 26)  # RUN_DATE: window 2025-10-06 00:00:00 .. 2025-10-26 23:59:59
NFC = "상도동"
NFD = unicodedata.normalize("NFD", NFC)  # the same name as jamo: other code points
DONGS = {
    10: "\U0001f35c동",  # 🍜동
    11: "\U0001f363동",  # 🍣동: equal to 🍜동 under MariaDB's utf8mb4_general_ci
    12: "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466동",  # a ZWJ family
    13: "\U0001f1f0\U0001f1f7동",  # the flag 🇰🇷: two regional indicators
    14: "\U0001f44d\U0001f3fd동",  # 👍 with a skin tone modifier
    15: "\U00020000동",  # CJK extension B
    16: NFC,
    17: NFD,
    18: "\U0001f35c" * 254 + "동",  # 255 characters, 1,019 bytes: what the column holds
}


@asynccontextmanager
async def raw_utf8_store_service(stores: dict[int, str]) -> AsyncIterator[str]:
    """A store service answering as Spring's Jackson does: UTF-8 bytes, not the \\u
    escapes of the fake, and `application/json` without a charset."""

    async def regions(request: web.Request) -> web.Response:
        asked = await request.json()
        data = [{"storeId": s, "dong": stores[s]} for s in asked if s in stores]
        body = json.dumps({"data": data}, ensure_ascii=False).encode()
        return web.Response(body=body, headers={"Content-Type": "application/json"})

    service = web.Application()
    service.router.add_post(REGIONS, regions)
    runner = web.AppRunner(service, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(params=["escaped", "raw-utf8"])
async def dong_store_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The store service knowing DONGS, answering in either JSON encoding."""
    if request.param == "escaped":
        data = {"stores": {str(k): v for k, v in DONGS.items()}, "tokens": {}}
        async with run_fake_peers(data) as fake:
            yield fake.store_url
    else:
        async with raw_utf8_store_service(DONGS) as url:
            yield url


async def test_dong_names_beyond_the_bmp_round_trip_exactly(
    pool: Pool, settings: Settings, dong_store_url: str
) -> None:
    rows: list[tuple] = []
    expected = []
    for i, store in enumerate(DONGS):  # members 100..108: 5 rows in their store each
        rows += rows_of(100 + i, store, *(f"2025-10-1{d} {i + 5:02d}:00:00" for d in range(5)))
        expected.append((100 + i, DONGS[store], i + 5, DAY))
    # 120: 🍜동 and 🍣동 tie on count and latest row: the greater code point, 🍣 (U+1F363
    # over U+1F35C), though the column's collation holds them equal
    rows += rows_of(120, 10, "2025-10-11 08:00:00", "2025-10-26 07:00:00")
    rows += rows_of(120, 11, "2025-10-10 07:00:00", "2025-10-26 07:00:00")
    rows += rows_of(120, 16, "2025-10-12 09:00:00")
    expected.append((120, DONGS[11], 7, DAY))
    # 121: NFC and NFD 상도동 are two dongs, tied: NFC's 상 (U+C0C1) is greater than ᄉ (U+1109)
    rows += rows_of(121, 16, "2025-10-10 06:00:00", "2025-10-26 06:00:00")
    rows += rows_of(121, 17, "2025-10-11 08:00:00", "2025-10-26 06:00:00")
    rows += rows_of(121, 10, "2025-10-12 09:00:00")
    expected.append((121, NFC, 6, DAY))
    await add_histories(pool, rows)

    job = make_settings(DB_URL=settings.DB_URL, STORE_SERVICE_URL=dong_store_url, CHUNK_SIZE=2)
    execution = await run_job(job)
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == expected
    assert counts(execution) == {"read": 11, "written": 11, "filtered": 0, "skipped": 0}
    # the bytes themselves, as stored: 4-byte sequences, nothing replaced or normalized
    stored = await fetch_all(
        pool,
        "SELECT member_id, HEX(top_dong), CHAR_LENGTH(top_dong), LENGTH(top_dong)"
        " FROM coupon_usage_stats ORDER BY member_id",
    )
    assert [tuple(row) for row in stored] == [
        (member, dong.encode().hex().upper(), len(dong), len(dong.encode()))
        for member, dong, _, _ in expected
    ]


@pytest.mark.parametrize("bad_dong", ["가" * 256, "\ud83c동"], ids=["256 characters", "surrogate"])
async def test_a_dong_the_column_cannot_hold_skips_its_chunk(
    pool: Pool, settings: Settings, bad_dong: str
) -> None:
    data = {"stores": {"1": "노량진동", "2": bad_dong}, "tokens": {}}
    times = [f"2025-10-1{d} 10:00:00" for d in range(5)]
    await add_histories(pool, rows_of(1, 1, *times) + rows_of(2, 2, *times) + rows_of(3, 1, *times))
    async with run_fake_peers(data) as fake:
        execution = await run_job(job_settings(settings, fake, CHUNK_SIZE=1, SKIP_LIMIT=10))
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [(1, "노량진동", 10, DAY), (3, "노량진동", 10, DAY)]
    assert counts(execution) == {"read": 3, "written": 2, "filtered": 0, "skipped": 1}


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    data = {"stores": {"1": "노량진동", "2": "풍무동", str(2**63 - 1): "끝동", "0": "영동"}}
    async with run_fake_peers({**data, "tokens": {}}) as peers:
        yield peers


UNKNOWN = 99


@pytest.mark.parametrize("chunk_size", [1, 4])
@pytest.mark.parametrize("fetch_rows", [1, 2, 3, 5000])
async def test_four_and_five_usable_rows_across_fetches_and_chunks(
    pool: Pool, settings: Settings, fake: FakePeers, fetch_rows: int, chunk_size: int
) -> None:
    """A member's rows split over several fetches of the cursor and members split over
    chunks: the count of usable rows is the member's whole count all the same."""
    days = [f"2025-10-1{d}" for d in range(7)]
    await add_histories(
        pool,
        # 70: exactly 5 usable rows
        rows_of(70, 1, *(f"{d} 10:00:00" for d in days[:5]))
        # 71: exactly 4 usable, and 2 of an unknown store
        + rows_of(71, 1, *(f"{d} 10:00:00" for d in days[:4]))
        + rows_of(71, UNKNOWN, *(f"{d} 10:00:00" for d in days[4:6]))
        # 72: exactly 5 usable beside an unknown store's row, an ISSUED and a CANCELED one
        + rows_of(72, 2, *(f"{d} 11:00:00" for d in days[:5]))
        + rows_of(72, UNKNOWN, "2025-10-20 11:00:00")
        + rows_of(72, 2, "2025-10-20 11:00:00", status="ISSUED")
        + rows_of(72, 2, "2025-10-21 11:00:00", status="CANCELED")
        # 73: 5 identical rows count 5
        + rows_of(73, 1, *["2025-10-15 12:34:56"] * 5)
        # 74: 5 with both ends of the window: hours 12 and 23 tie at 2, the last second of
        # the window makes 23 the latest; a second outside either end would change it
        + rows_of(74, 2, "2025-10-06 00:00:00", "2025-10-26 23:59:59")
        + rows_of(74, 2, "2025-10-10 12:00:00", "2025-10-11 12:30:00", "2025-10-12 23:00:00")
        + rows_of(74, 2, "2025-10-05 23:59:59", "2025-10-27 00:00:00", "2025-10-27 00:00:01")
        # 75: exactly 4 in the window, the 5th a second before it
        + rows_of(75, 1, "2025-10-05 23:59:59", *(f"{d} 10:00:00" for d in days[:4]))
        # 76: 5 rows on the first second of the window: hour 0 is a top hour like others
        + rows_of(76, 1, *["2025-10-06 00:00:00"] * 5),
    )
    job = job_settings(settings, fake, FETCH_ROWS=fetch_rows, CHUNK_SIZE=chunk_size)
    execution = await run_job(job)
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [
        (70, "노량진동", 10, DAY),
        (72, "풍무동", 11, DAY),
        (73, "노량진동", 12, DAY),
        (74, "풍무동", 23, DAY),
        (76, "노량진동", 0, DAY),
    ]
    assert counts(execution) == {"read": 7, "written": 5, "filtered": 2, "skipped": 0}


async def test_unknown_stores_and_extreme_ids(
    pool: Pool, settings: Settings, fake: FakePeers
) -> None:
    """BIGINT ids at both ends, 0 and negative ids, and a member of 250 unknown stores
    (two lookups of 200 and 50, all answered empty)."""
    lowest, highest = -(2**63), 2**63 - 1
    times = [f"2025-10-1{d} 0{d}:00:00" for d in range(5)]
    await add_histories(
        pool,
        rows_of(lowest, highest, *(f"2025-10-1{d} 01:00:00" for d in range(5)))
        + rows_of(0, 0, *(f"2025-10-1{d} 02:00:00" for d in range(5)))
        + rows_of(0, -1, *(f"2025-10-2{d} 03:00:00" for d in range(6)))  # unknown, else top
        + [(1, store, times[store % 5], "USED") for store in range(1000, 1250)]
        + rows_of(highest, highest - 1, *times),
    )
    expected = [(lowest, "끝동", 1, DAY), (0, "영동", 2, DAY)]
    job = job_settings(settings, fake, CHUNK_SIZE=1)
    for _ in range(2):  # the rerun replaces the rows of these member ids exactly
        before = len(fake.calls[REGIONS])
        execution = await run_job(job)
        assert execution.status == "COMPLETED", execution.exit_message
        assert await stats(pool) == expected
        assert counts(execution) == {"read": 4, "written": 2, "filtered": 2, "skipped": 0}
        (step,) = execution.steps
        assert step.checkpoint == highest  # past 2**53: the JSON context keeps it exact
        calls = fake.calls[REGIONS][before:]
        assert sorted(len(body) for body in calls) == [1, 1, 2, 50, 200]
        asked = sorted(store for body in calls for store in body)
        assert asked == [-1, 0, *range(1000, 1250), highest - 1, highest]  # each once a run


@pytest.mark.parametrize(
    ("run_date", "before_start", "after_end"),
    [
        ("2024-03-20", "2024-02-28 23:59:59", "2024-03-21 00:00:00"),  # starts on a leap day
        ("2024-12-31", "2024-12-10 23:59:59", "2025-01-01 00:00:00"),  # ends with the year
        ("0001-01-21", None, "0001-01-22 00:00:00"),  # starts on the calendar's first second
        ("9999-12-31", "9999-12-10 23:59:59", None),  # ends on the calendar's last second
    ],
)
async def test_window_edges_at_calendar_boundaries(
    pool: Pool,
    settings: Settings,
    fake: FakePeers,
    run_date: str,
    before_start: str | None,
    after_end: str | None,
) -> None:
    day = date.fromisoformat(run_date)
    start = datetime.combine(day - timedelta(days=20), datetime.min.time())
    end = datetime.combine(day, datetime.max.time()).replace(microsecond=0)
    mid = [start + timedelta(days=1, hours=12), start + timedelta(days=2, hours=12, minutes=30)]
    late = start + timedelta(days=3, hours=23)
    outside = [at for at in (before_start, after_end) if at is not None]
    await add_histories(
        pool,
        # 80: both ends make 5 rows; hours 12 and 23 tie at 2, the window's last second
        # is the latest: 23
        rows_of(80, 1, str(start), str(end), *map(str, mid), str(late))
        # 81: 4 rows inside, the others a second outside
        + rows_of(81, 1, *map(str, mid), str(late), str(late), *outside),
    )
    execution = await run_job(job_settings(settings, fake), run_date)
    assert execution.status == "COMPLETED", execution.exit_message
    assert await stats(pool) == [(80, "노량진동", 23, day)]
    assert counts(execution) == {"read": 2, "written": 1, "filtered": 1, "skipped": 0}
