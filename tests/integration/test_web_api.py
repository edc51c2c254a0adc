"""The admin API over real HTTP: real tokens, a real launcher on MariaDB, the stats job
against the fake store service."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.model import Status
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.job import JobSpec, find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.web.app import LAUNCHER, create_app
from tests.settings import TEST_JWT_KEY, make_settings
from tests.unit.test_error_hierarchy import TOY
from tests.waits import waiting

STATS = "/api/v1/jobs/coupon-usage-stats"
FANOUT = "/api/v1/jobs/coupon-usage-stats-fcm-send"
RUN_DATE = "2025-10-26"  # window 2025-10-06 .. 2025-10-26
STORES = {1: "노량진동", 2: "풍무동", 3: "상도동"}

Client = Callable[..., Awaitable[TestClient]]


def token(
    key: bytes | None = TEST_JWT_KEY,
    *,
    algorithm: str = "HS256",
    member_type: str = "ADMIN",
    expires_in: int = 3600,
) -> str:
    now = int(time.time())
    claims = {
        "sub": "1",
        "username": "operator",
        "memberType": member_type,
        "iat": now,
        "exp": now + expires_in,
    }
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer(value: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {value or token()}"}


def _b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def rs256_token() -> str:
    """An RS256 header over valid claims; the signature is junk (no RSA key needed: the
    algorithm alone must be refused)."""
    now = int(time.time())
    header = _b64url({"alg": "RS256", "typ": "JWT"})
    payload = _b64url({"sub": "1", "memberType": "ADMIN", "iat": now, "exp": now + 3600})
    return f"{header}.{payload}.{base64.urlsafe_b64encode(b'x' * 256).rstrip(b'=').decode()}"


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    data = {"stores": {str(k): v for k, v in STORES.items()}, "tokens": {}}
    async with run_fake_peers(data, key=TEST_JWT_KEY) as peers:
        yield peers


@pytest.fixture
async def client(settings: Settings, fake: FakePeers, pool: Pool) -> AsyncIterator[Client]:
    """`await client(**setting_overrides)`: a test client of the app over a real launcher."""
    async with AsyncExitStack() as stack:

        async def make(*, jobs: Sequence[JobSpec] = JOBS, **overrides: object) -> TestClient:
            job_settings = make_settings(
                DB_URL=settings.DB_URL,
                STORE_SERVICE_URL=fake.store_url,
                NOTIFICATION_SERVICE_URL=fake.notification_url,
                CHUNK_SIZE=1,
                ENRICH_WORKERS=1,
                QUEUE_SIZE=1,
                **overrides,
            )
            resources = await stack.enter_async_context(open_resources(job_settings, broker=False))
            launcher = Launcher(resources, jobs)
            stack.push_async_callback(launcher.shutdown, 5)
            return await stack.enter_async_context(TestClient(TestServer(create_app(launcher, {}))))

        yield make


async def add_members(pool: Pool, members: range, rows_each: int = 5) -> None:
    """USED rows in the window: each member `rows_each` at store 1 + member % 3."""
    rows = [
        (m, 1, 1 + m % 3, 1, "USED", f"2025-10-2{i % 6} 1{m % 10}:00:00")
        for m in members
        for i in range(rows_each)
    ]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


async def until_finished(client: TestClient, location: str) -> dict:
    async with waiting(30, f"{location} finished"):
        while True:
            resp = await client.get(location, headers=bearer())
            assert resp.status == 200
            body = await resp.json()
            if body["status"] not in ("STARTING", "STARTED"):
                return body
            await asyncio.sleep(0.05)


def assert_error(body: dict, status: str, code: str, path: str) -> dict:
    error = body["error"]
    assert set(error) == {"status", "code", "message", "requestUrl", "timestamp"}
    assert (error["status"], error["code"], error["requestUrl"]) == (status, code, path)
    # The service's zone (Asia/Seoul, no daylight saving) with its offset
    assert datetime.fromisoformat(error["timestamp"]).utcoffset() == timedelta(hours=9)
    return error


# ---- auth ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [(TEST_JWT_KEY, "HS256"), (b"k" * 48, "HS384"), (b"k" * 64, "HS512")],
)
@pytest.mark.parametrize("member_type", ["ADMIN", "ROLE_ADMIN", "role_admin", "admin"])
async def test_admin_tokens_accepted(
    client: Client, key: bytes, algorithm: str, member_type: str
) -> None:
    api = await client(JWT_SECRET_KEY=base64.b64encode(key).decode())
    resp = await api.get(
        f"{STATS}/executions",
        headers=bearer(token(key, algorithm=algorithm, member_type=member_type)),
    )
    assert resp.status == 200
    assert (await resp.json())["executions"] == []


def _rejections() -> list[tuple[str, dict[str, str], int, str]]:
    other_key = b"another-key-of-thirty-two-bytes!"
    return [
        ("no token", {}, 401, "INVALID_TOKEN"),
        ("empty header", {"Authorization": ""}, 401, "INVALID_TOKEN"),
        ("no scheme", {"Authorization": token()}, 401, "INVALID_TOKEN"),
        ("basic scheme", {"Authorization": "Basic YWRtaW46YWRtaW4="}, 401, "INVALID_TOKEN"),
        ("bearer, no token", {"Authorization": "Bearer "}, 401, "INVALID_TOKEN"),
        ("garbage", bearer("not.a.jwt"), 401, "INVALID_TOKEN"),
        ("alg none", bearer(token(None, algorithm="none")), 401, "INVALID_TOKEN"),
        ("RS256 header", bearer(rs256_token()), 401, "INVALID_TOKEN"),
        ("other key", bearer(token(other_key)), 401, "INVALID_TOKEN"),
        ("expired one second ago", bearer(token(expires_in=-1)), 401, "EXPIRED_TOKEN"),
        ("member", bearer(token(member_type="USER")), 403, "ACCESS_DENIED"),
        ("system", bearer(token(member_type="SYSTEM")), 403, "ACCESS_DENIED"),
    ]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [case[1:] for case in _rejections()],
    ids=[case[0] for case in _rejections()],
)
async def test_rejected_tokens(client: Client, headers: dict, status: int, code: str) -> None:
    api = await client()
    for method, path in (("POST", f"{STATS}?runDate={RUN_DATE}"), ("GET", f"{STATS}/executions")):
        resp = await api.request(method, path, headers=headers)
        assert resp.status == status
        phrase = "UNAUTHORIZED" if status == 401 else "FORBIDDEN"
        assert_error(await resp.json(), f"{status} {phrase}", code, path.split("?")[0])
    # nothing was launched
    resp = await api.get(f"{STATS}/executions", headers=bearer())
    assert (await resp.json())["executions"] == []


async def test_actuator_and_docs_need_no_token(client: Client) -> None:
    api = await client()
    for path in ("/actuator/health", "/actuator/prometheus", "/v3/api-docs"):
        resp = await api.get(path)
        assert resp.status == 200, path


# ---- parameters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        (STATS, "runDate"),
        (f"{STATS}?runDate=", "runDate"),
        (f"{STATS}?runDate=2024-13-01", "runDate"),
        (f"{STATS}?runDate=20241201", "runDate"),
        (f"{STATS}?runDate=2024-2-1", "runDate"),
        (f"{STATS}?runDate=yesterday", "runDate"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=24", "targetHour"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=-1", "targetHour"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=x", "targetHour"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=1.5", "targetHour"),
        (f"{FANOUT}?runDate=2024-12-32&targetHour=1", "runDate"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=1&dryRun=maybe", "dryRun"),
        ("/api/v1/jobs/no-such-job?runDate=2024-12-01", "jobName"),
        ("/api/v1/jobs/no-such-job/executions", "jobName"),
        ("/api/v1/jobs/executions/abc", "id"),
        ("/api/v1/jobs/executions/-1", "id"),
        (f"{STATS}/executions?limit=0", "limit"),
        (f"{STATS}/executions?limit=x", "limit"),
        ("/api/v1/jobs/executions?status=RUNNING", "status"),
        ("/api/v1/jobs/executions?status=started", "status"),
        ("/api/v1/jobs/executions?status=", "status"),
        ("/api/v1/jobs/executions?limit=101", "limit"),
        ("/api/v1/jobs/executions?job=nope", "job"),
        ("/api/v1/jobs/executions?job=", "job"),
        ("/api/v1/jobs/executions?runDate=2025-13-01", "runDate"),
        ("/api/v1/jobs/executions?runDate=", "runDate"),
        ("/api/v1/jobs/executions?before=x", "before"),
        ("/api/v1/jobs/executions?before=-1", "before"),
        ("/api/v1/jobs/executions?before=99999999999999999999", "before"),
        (f"{FANOUT}/estimate?runDate=2024-12-01&targetHour=24", "targetHour"),
        (f"{FANOUT}/estimate?runDate=20241201", "runDate"),
        ("/api/v1/jobs/no-such-job/estimate", "jobName"),
        # Given twice, or not the job's (issue 26): before, the first of repeats was
        # taken and the rest ignored, and an undeclared name was dropped.
        (f"{STATS}?runDate=2024-12-01&runDate=2024-12-02", "runDate"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=1&targetHour=2", "targetHour"),
        (f"{STATS}?runDate=2024-12-01&targetHour=3", "targetHour"),
        (f"{STATS}?runDate=2024-12-01&rundate=2024-12-02", "rundate"),
        (f"{FANOUT}?runDate=2024-12-01&targetHour=1&dryrun=true", "dryrun"),
        (f"{FANOUT}?from=2024-12-01&to=2024-12-02", "from"),
        ("/api/v1/jobs/executions?limit=5&limit=6", "limit"),
        ("/api/v1/jobs/executions?jobName=coupon-usage-stats", "jobName"),
        (f"{STATS}/executions?status=FAILED", "status"),
        (f"{FANOUT}/estimate?runDate=2024-12-01&dryRun=true", "dryRun"),
    ],
)
async def test_bad_input_is_400_naming_the_parameter(
    client: Client, path: str, parameter: str
) -> None:
    api = await client()
    method = "GET" if "executions" in path or "estimate" in path else "POST"
    resp = await api.request(method, path, headers=bearer())
    assert resp.status == 400
    error = assert_error(
        await resp.json(), "400 BAD_REQUEST", "INVALID_PARAMETER", path.split("?")[0]
    )
    assert error["message"].startswith(f"{parameter}: ")


@pytest.mark.parametrize(
    ("path", "takes"),
    [
        (f"{STATS}?runDate=2024-12-01&foo=1", "runDate, dryRun, from, to"),
        (f"{FANOUT}?runDate=2024-12-01&foo=1", "runDate, dryRun, targetHour, from, to"),
        ("/api/v1/jobs/no-such-job?foo=1", "runDate, dryRun, targetHour, from, to"),
    ],
)
async def test_an_unknown_parameter_s_400_lists_the_job_s_own(
    client: Client, path: str, takes: str
) -> None:
    """Before, the stats job's listed targetHour, which it refuses (the fan-out's)."""
    api = await client()
    resp = await api.post(path, headers=bearer())
    assert resp.status == 400
    error = assert_error(
        await resp.json(), "400 BAD_REQUEST", "INVALID_PARAMETER", path.split("?")[0]
    )
    assert error["message"] == f"foo: not a parameter of this call (it takes {takes})"


async def test_a_bad_value_for_a_job_s_integer_parameter_is_400_naming_it(
    client: Client, pool: Pool
) -> None:
    """A job whose parse reads `int(raw["limit"])`: before, `limit=x` answered 500."""
    api = await client(jobs=[*JOBS, TOY])
    resp = await api.post("/api/v1/jobs/toy-count?limit=x", headers=bearer())
    assert resp.status == 400
    error = assert_error(
        await resp.json(), "400 BAD_REQUEST", "INVALID_PARAMETER", "/api/v1/jobs/toy-count"
    )
    assert error["message"] == "limit: must be an integer, got 'x'"
    [(count,)] = await fetch_all(pool, "SELECT COUNT(*) FROM BATCH_JOB_EXECUTION")
    assert count == 0


async def test_unknown_routes_and_methods(client: Client) -> None:
    api = await client()
    resp = await api.get("/api/v1/nothing", headers=bearer())
    assert resp.status == 404
    assert_error(await resp.json(), "404 NOT_FOUND", "NOT_FOUND", "/api/v1/nothing")

    resp = await api.get("/api/v1/nothing")  # under /api/: the token comes first
    assert resp.status == 401

    resp = await api.get("/favicon.ico")
    assert resp.status == 404
    assert_error(await resp.json(), "404 NOT_FOUND", "NOT_FOUND", "/favicon.ico")

    resp = await api.get(STATS, headers=bearer())
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert_error(await resp.json(), "405 METHOD_NOT_ALLOWED", "METHOD_NOT_ALLOWED", STATS)

    resp = await api.post("/api/v1/jobs/executions", headers=bearer())
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET,HEAD"

    resp = await api.get("/api/v1/jobs/executions/987654", headers=bearer())
    assert resp.status == 404
    path = "/api/v1/jobs/executions/987654"
    assert_error(await resp.json(), "404 NOT_FOUND", "EXECUTION_NOT_FOUND", path)

    resp = await api.get("/api/v1/jobs/executions/99999999999999999999999", headers=bearer())
    assert resp.status == 404


# ---- launching --------------------------------------------------------------------


async def test_launch_runs_the_job_and_reports_it(client: Client, pool: Pool) -> None:
    await add_members(pool, range(1, 5))
    await add_members(pool, range(5, 7), rows_each=2)  # too few rows: filtered
    api = await client()

    resp = await api.post(f"{STATS}?runDate={RUN_DATE}", headers=bearer())
    assert resp.status == 202
    accepted = await resp.json()
    execution_id = accepted["executionId"]
    assert accepted == {
        "executionId": execution_id,
        "jobName": "couponUsageStatsJob",
        "status": "STARTED",
        "parameters": {"runDate": RUN_DATE},
    }
    location = resp.headers["Location"]
    assert location == f"/api/v1/jobs/executions/{execution_id}"

    done = await until_finished(api, location)
    assert done["status"] == "COMPLETED"
    assert done["exitCode"] == "COMPLETED"
    assert done["parameters"] == {"runDate": RUN_DATE}
    assert (done["readCount"], done["writeCount"], done["filterCount"], done["skipCount"]) == (
        6,
        4,
        2,
        0,
    )
    # A chunk a member (CHUNK_SIZE=1), but the two with too few rows ride in one chunk
    # after member 4: chunks count only members with 5 uses or more (issue 30)
    assert done["commitCount"] == 5
    assert done["startTime"] and done["endTime"] and done["endTime"] >= done["startTime"]
    assert done["steps"][0]["stepName"] == "couponUsageStatsStep"
    assert done["progress"] is None  # no longer running here

    # a completed instance runs again: that is what operators call the API for
    resp = await api.post(f"{STATS}?runDate={RUN_DATE}", headers=bearer())
    assert resp.status == 202
    again = (await resp.json())["executionId"]
    assert again != execution_id
    assert (await until_finished(api, resp.headers["Location"]))["status"] == "COMPLETED"

    resp = await api.get("/api/v1/jobs/couponUsageStatsJob/executions", headers=bearer())
    listed = await resp.json()
    assert listed["jobName"] == "couponUsageStatsJob"
    assert [e["executionId"] for e in listed["executions"]] == [again, execution_id]
    resp = await api.get(f"{STATS}/executions?limit=1", headers=bearer())
    assert [e["executionId"] for e in (await resp.json())["executions"]] == [again]


async def test_a_dry_run_of_the_stats_job_stores_nothing_and_completes_no_real_instance(
    client: Client, pool: Pool, tmp_path: Path
) -> None:
    """Before: dryRun=true of the stats job was a real run (issue 26): its rows stored,
    the run date's instance COMPLETED."""
    await add_members(pool, range(1, 3))
    api = await client(DRY_RUN_DIR=tmp_path)
    resp = await api.post(f"{STATS}?runDate={RUN_DATE}&dryRun=true", headers=bearer())
    assert resp.status == 202, await resp.text()
    done = await until_finished(api, resp.headers["Location"])
    execution_id = done["executionId"]
    assert (done["status"], done["dryRun"], done["writeCount"]) == ("COMPLETED", True, 2)
    assert done["parameters"] == {
        "runDate": RUN_DATE,
        "dryRun": "true",
        "run.id": done["parameters"]["run.id"],
    }
    output = tmp_path / f"coupon-usage-stats-{execution_id}.jsonl"
    assert done["dryRunOutput"] == str(output)
    assert [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()] == [
        {"member_id": 1, "top_dong": "풍무동", "top_hour": 11, "aggregated_at": RUN_DATE},
        {"member_id": 2, "top_dong": "상도동", "top_hour": 12, "aggregated_at": RUN_DATE},
    ]
    assert await fetch_all(pool, "SELECT COUNT(*) FROM coupon_usage_stats") == [(0,)]
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    spec = find_job(JOBS, "coupon-usage-stats")
    real = spec.parse({"runDate": RUN_DATE}, datetime(2025, 10, 27, 1, 0))
    assert await repository.instance_status(spec.name, real) is None


async def record(pool: Pool, job: str, status: Status | None = None, **raw: str) -> int:
    """An execution recorded as a launch records it (parsed at 2025-10-26 10:00), not
    run; ended in `status` if given."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    spec = find_job(JOBS, job)
    parsed = spec.parse(raw, datetime(2025, 10, 26, 10, 0))
    execution = await repository.start_execution(spec.name, parsed, rerun_completed=True)
    if status is not None:
        await repository.finish_execution(execution.id, status)
    return execution.id


async def test_recent_executions_of_every_job_newest_first_by_status(
    client: Client, pool: Pool
) -> None:
    api = await client()
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)

    def start(job: str, **raw: str) -> Awaitable[int]:
        return record(pool, job, **raw)

    completed = await start("coupon-usage-stats", runDate="2025-10-25")
    await repository.finish_execution(completed, Status.COMPLETED)
    running = await start("coupon-usage-stats-fcm-send", runDate=RUN_DATE, targetHour="10")
    failed = await start("coupon-usage-stats", runDate=RUN_DATE)
    await repository.finish_execution(failed, Status.FAILED, "boom <b>")

    async def listed(query: str) -> list[tuple[int, str, str]]:
        resp = await api.get(f"/api/v1/jobs/executions{query}", headers=bearer())
        assert resp.status == 200
        body = await resp.json()
        assert set(body) == {"executions", "nextBefore"}
        return [(e["executionId"], e["jobName"], e["status"]) for e in body["executions"]]

    assert await listed("") == [
        (failed, "couponUsageStatsJob", "FAILED"),
        (running, "couponUsageStatsFcmSendJob", "STARTED"),
        (completed, "couponUsageStatsJob", "COMPLETED"),
    ]
    assert await listed("?limit=2") == [
        (failed, "couponUsageStatsJob", "FAILED"),
        (running, "couponUsageStatsFcmSendJob", "STARTED"),
    ]
    assert await listed("?status=STARTED") == [(running, "couponUsageStatsFcmSendJob", "STARTED")]
    assert await listed("?status=COMPLETED&limit=1") == [
        (completed, "couponUsageStatsJob", "COMPLETED")
    ]
    assert await listed("?status=STOPPED") == []
    resp = await api.get("/api/v1/jobs/executions?status=FAILED", headers=bearer())
    (view,) = (await resp.json())["executions"]
    assert (view["exitMessage"], view["parameters"]) == ("boom <b>", {"runDate": RUN_DATE})

    resp = await api.get("/api/v1/jobs/executions")
    assert resp.status == 401


async def test_executions_filtered_by_job_status_and_run_date_a_page_at_a_time(
    client: Client, pool: Pool
) -> None:
    api = await client()
    start = functools.partial(record, pool)

    stats = [
        await start("coupon-usage-stats", Status.COMPLETED, runDate=f"2025-10-{day}")
        for day in range(10, 15)
    ]
    failed = await start("coupon-usage-stats", Status.FAILED, runDate="2025-10-12")
    fanout = await start(
        "coupon-usage-stats-fcm-send", Status.COMPLETED, runDate="2025-10-12", targetHour="9"
    )

    async def page(query: str) -> tuple[list[int], int | None]:
        resp = await api.get(f"/api/v1/jobs/executions?{query}", headers=bearer())
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return [e["executionId"] for e in body["executions"]], body["nextBefore"]

    assert await page("") == ([fanout, failed, *reversed(stats)], None)
    assert await page("job=coupon-usage-stats") == ([failed, *reversed(stats)], None)
    assert await page("job=couponUsageStatsFcmSendJob") == ([fanout], None)
    assert await page("runDate=2025-10-12") == ([fanout, failed, stats[2]], None)
    assert await page("runDate=2025-10-12&job=coupon-usage-stats&status=COMPLETED") == (
        [stats[2]],
        None,
    )
    assert await page("runDate=2025-10-09") == ([], None)

    # pages of 3, each `before` the last id of the page before it
    assert await page("limit=3") == ([fanout, failed, stats[4]], stats[4])
    assert await page(f"limit=3&before={stats[4]}") == ([stats[3], stats[2], stats[1]], stats[1])
    assert await page(f"limit=3&before={stats[1]}") == ([stats[0]], None)
    assert await page("limit=2&status=COMPLETED&job=coupon-usage-stats") == (
        [stats[4], stats[3]],
        stats[3],
    )
    # exactly a page left: no next page
    assert await page(f"limit=3&before={stats[3]}") == ([stats[2], stats[1], stats[0]], None)


async def test_the_fan_out_estimate_counts_the_members_it_would_read(
    client: Client, pool: Pool
) -> None:
    # (member, top_hour, aggregated_at): the window of 2025-10-26 is 10-24 .. 10-26, and a
    # member counts when their latest row of the window names the hour
    rows = [
        (1, 10, "2025-10-26"),
        (2, 10, "2025-10-24"),
        (3, 10, "2025-10-25"),
        (3, 11, "2025-10-26"),  # latest names 11: not at 10
        (4, 11, "2025-10-25"),
        (4, 10, "2025-10-26"),  # latest names 10
        (5, 10, "2025-10-23"),  # outside the window
        (6, 10, "2025-10-27"),  # after runDate
    ]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (%s, '상도동', %s, %s)",
            rows,
        )
    api = await client()

    async def estimate(query: str) -> dict:
        resp = await api.get(f"{FANOUT}/estimate?{query}", headers=bearer())
        assert resp.status == 200, await resp.text()
        return await resp.json()

    assert await estimate("runDate=2025-10-26&targetHour=10") == {
        "jobName": "couponUsageStatsFcmSendJob",
        "parameters": {"runDate": "2025-10-26", "targetHour": "10"},
        "count": 3,
        "unit": "members",
    }
    assert (await estimate("runDate=2025-10-26&targetHour=11"))["count"] == 1
    assert (await estimate("runDate=2025-10-27&targetHour=10"))["count"] == 3  # 1, 4, 6
    assert (await estimate("runDate=2025-10-22&targetHour=10"))["count"] == 0
    # the launch's defaults: today and this hour in APP_TIMEZONE
    defaults = (await estimate(""))["parameters"]
    now = datetime.now(ZoneInfo("Asia/Seoul"))
    assert defaults["runDate"] in {
        now.date().isoformat(),
        (now - timedelta(hours=1)).date().isoformat(),
    }
    assert set(defaults) == {"runDate", "targetHour"}

    resp = await api.get(f"{STATS}/estimate?runDate=2025-10-26", headers=bearer())
    assert resp.status == 404
    error = assert_error(await resp.json(), "404 NOT_FOUND", "NO_ESTIMATE", f"{STATS}/estimate")
    assert error["message"] == "job coupon-usage-stats has no estimate"
    resp = await api.get(f"{FANOUT}/estimate?runDate=2025-10-26&targetHour=10")
    assert resp.status == 401


async def test_a_step_retrying_through_an_outage_shows_it_in_its_progress(
    client: Client, pool: Pool, fake: FakePeers
) -> None:
    await add_members(pool, range(1, 3))
    api = await client(RETRY_BUDGET_SECONDS=60, RETRY_MAX_WAIT_SECONDS=0.1)
    fake.control.update({"fail_status": 503, "fail_times": -1})
    resp = await api.post(f"{STATS}?runDate={RUN_DATE}", headers=bearer())
    assert resp.status == 202
    location = resp.headers["Location"]

    async def retrying(attempts: int) -> dict:
        async with waiting(30, f"{attempts} attempts in the live progress's retrying"):
            while True:
                body = await (await api.get(location, headers=bearer())).json()
                assert body["status"] == "STARTED"
                retries = body["progress"]["retrying"]
                if retries and retries[0]["attempts"] >= attempts:
                    return retries
                await asyncio.sleep(0.02)

    first = await retrying(1)
    (retry,) = first  # one enrich worker: one chunk retrying
    assert retry["what"] == "step couponUsageStatsStep: a chunk"
    assert retry["error"].startswith("store service ")
    assert retry["error"].endswith(": HTTP 503")
    since = datetime.fromisoformat(retry["since"])
    assert since.utcoffset() == timedelta(hours=9)
    assert 0 < retry["budgetLeftSeconds"] <= 60
    later = await retrying(first[0]["attempts"] + 1)
    assert later[0]["since"] == retry["since"]  # the same retry, its budget running down
    assert later[0]["budgetLeftSeconds"] <= retry["budgetLeftSeconds"]

    fake.control.update({"fail_status": None})
    done = await until_finished(api, location)
    assert (done["status"], done["readCount"], done["progress"]) == ("COMPLETED", 2, None)


async def test_second_launch_while_running_is_409(
    client: Client, pool: Pool, fake: FakePeers
) -> None:
    await add_members(pool, range(1, 7))
    fake.control.latency_ms = 300
    api = await client()

    resp = await api.post(f"{STATS}?runDate={RUN_DATE}", headers=bearer())
    assert resp.status == 202
    running_id = (await resp.json())["executionId"]

    resp = await api.post(f"{STATS}?runDate={RUN_DATE}", headers=bearer())
    assert resp.status == 409
    error = assert_error(await resp.json(), "409 CONFLICT", "JOB_ALREADY_RUNNING", STATS)
    assert f"execution {running_id}" in error["message"]
    assert resp.headers["Location"] == f"/api/v1/jobs/executions/{running_id}"

    # live progress while it runs in this process
    async with waiting(10, "live progress with items read"):
        while True:
            resp = await api.get(f"/api/v1/jobs/executions/{running_id}", headers=bearer())
            live = await resp.json()
            if live["progress"] and live["progress"]["read"] > 0:
                break
            await asyncio.sleep(0.05)
    assert live["status"] == "STARTED"
    assert live["endTime"] is None
    assert set(live["progress"]) == {
        "read", "written", "filtered", "skipped", "commits", "itemsPerSecond", "retrying",
    }  # fmt: skip
    assert live["progress"]["retrying"] == []  # slow, not failing

    fake.control.latency_ms = 0
    done = await until_finished(api, f"/api/v1/jobs/executions/{running_id}")
    assert done["status"] == "COMPLETED"
    assert done["writeCount"] == 6


async def test_launch_while_shutting_down_is_503(client: Client) -> None:
    api = await client()
    await api.server.app[LAUNCHER].shutdown(0)
    resp = await api.post(f"{STATS}?runDate={RUN_DATE}", headers=bearer())
    assert resp.status == 503
    assert_error(await resp.json(), "503 SERVICE_UNAVAILABLE", "SHUTTING_DOWN", STATS)


async def test_unexpected_error_is_a_generic_500_and_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    api = await client()
    launcher = api.server.app[LAUNCHER]

    async def broken(execution_id: int) -> None:
        raise RuntimeError("password=hunter2 at db-7")

    launcher.repository.get_execution = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        resp = await api.get("/api/v1/jobs/executions/1", headers=bearer())
    assert resp.status == 500
    text = await resp.text()
    assert "hunter2" not in text and "Traceback" not in text
    error = assert_error(
        json.loads(text), "500 INTERNAL_SERVER_ERROR", "INTERNAL_SERVER_ERROR",
        "/api/v1/jobs/executions/1",
    )  # fmt: skip
    assert error["message"] == "an unexpected error occurred"
    assert any("hunter2" in (r.exc_text or "") for r in caplog.records)


@pytest.mark.parametrize(
    ("requests", "logged"),
    [
        (
            [b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n"],
            "Invalid method encountered: b'BREW / HTTP/1.1'",
        ),
        (
            # after a good request on the same connection (aiohttp logged ERROR there)
            [b"GET /v3/api-docs HTTP/1.1\r\nHost: x\r\n\r\n", b"BREW / HTTP/1.1\r\n\r\n"],
            "Invalid method encountered: b'BREW / HTTP/1.1'",
        ),
        ([b"\x00\xffgarbage\r\n\r\n"], "Invalid method encountered: b'\\x00\\xffgarbage'"),
        (
            [b"GET /v3/api-docs HTTP/1.1\r\nBad Header\r\n\r\n"],
            "Invalid header token: b'Bad Header'",
        ),
    ],
)
async def test_a_request_that_is_not_http_is_a_400_and_one_info_line(
    client: Client, caplog: pytest.LogCaptureFixture, requests: list[bytes], logged: str
) -> None:
    server = (await client()).server
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        statuses = []
        for request in requests:
            writer.write(request)
            status_line = await reader.readline()
            statuses.append(status_line.split(b" ", 2)[1])
            headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = int(headers.split("content-length: ", 1)[1].split("\r\n", 1)[0])
            await reader.readexactly(length)
    finally:
        writer.close()
    assert statuses == [b"200"] * (len(requests) - 1) + [b"400"]
    # (the daemon runs without aiohttp.access; the test server logs access lines)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in records] == [
        ("INFO", f"Error handling request from 127.0.0.1: 400 {logged}", None)
    ]
