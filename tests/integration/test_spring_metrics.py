"""Spring Batch's and Spring MVC's metrics as the old Spring Boot 3.5 service exposed them
at /actuator/prometheus (docs/metrics.md): the names, types and tags of Spring Batch 5.2's
observations and timers under Micrometer's Prometheus naming, with counts that follow
a real run of the stats job through the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.web.app import LAUNCHER
from tests.integration.test_repository_metrics import scrape
from tests.integration.test_web_api import bearer
from tests.integration.test_web_health_metrics import serving
from tests.settings import make_settings
from tests.waits import waiting

STATS = "couponUsageStatsJob"
STEP = "couponUsageStatsStep"
MEMBERS = range(1, 8)  # member m: rows at store 100 + m; member 7 has too few to count


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    stores = {str(100 + m): f"{m}동" for m in MEMBERS}
    async with run_fake_peers({"stores": stores, "tokens": {}}) as peers:
        yield peers


async def histories(pool: Pool) -> None:
    rows = [
        (m, 1, 100 + m, 1, "USED", f"2025-10-2{n} 1{m}:00:00")
        for m in MEMBERS
        for n in range(5 if m < 7 else 2)
    ]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


Samples = dict[tuple[str, frozenset], float]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def labelled(samples: Samples, prefix: str) -> dict[str, set[frozenset]]:
    """The label names of each sample whose name starts with `prefix`."""
    found: dict[str, set[frozenset]] = {}
    for name, labels in samples:
        if name.startswith(prefix):
            found.setdefault(name, set()).add(frozenset(key for key, _ in labels))
    return found


async def test_spring_batch_metrics_follow_a_run(
    settings: Settings, pool: Pool, fake: FakePeers
) -> None:
    await histories(pool)
    job_settings = make_settings(
        DB_URL=settings.DB_URL,
        STORE_SERVICE_URL=fake.store_url,
        NOTIFICATION_SERVICE_URL=fake.notification_url,
        CHUNK_SIZE=2,
        ENRICH_WORKERS=1,
    )
    read, process, write = (
        {f"spring_batch_{timer}_job_name": STATS, f"spring_batch_{timer}_step_name": STEP}
        for timer in ("item_read", "item_process", "chunk_write")
    )
    async with serving(job_settings, broker=False) as client:
        before = await scrape(client)
        # The first store lookup fails once (retried): a processing attempt that failed
        fake.control.update({"fail_status": 503, "fail_times": 1, "latency_ms": 300})
        resp = await client.post(
            "/api/v1/jobs/coupon-usage-stats?runDate=2025-10-26", headers=bearer()
        )
        assert resp.status == 202, await resp.text()
        # While it runs, the long task timers count it
        active_step = {
            "spring_batch_step_name": STEP,
            "spring_batch_step_job_name": STATS,
            "spring_batch_step_status": "EXECUTING",
        }
        async with waiting(20, "the step active in spring_batch_step_active_seconds"):
            while True:
                running = await scrape(client)
                if value(running, "spring_batch_step_active_seconds_count", **active_step) == 1:
                    break
                await asyncio.sleep(0.02)
        job_name = {"spring_batch_job_active_name": STATS}
        assert value(running, "spring_batch_job_active_seconds_count", **job_name) == 1
        assert value(running, "spring_batch_job_active_seconds_sum", **job_name) > 0
        launched = client.server.app[LAUNCHER].running.values()
        await asyncio.gather(*(run.task for run in launched))
        done = await client.get(resp.headers["Location"], headers=bearer())
        execution: dict[str, Any] = await done.json()
        after = await scrape(client)
        text = await (await client.get("/actuator/prometheus")).text()

    assert execution["status"] == "COMPLETED", execution
    (step,) = execution["steps"]
    assert (step["readCount"], step["writeCount"], step["filterCount"]) == (7, 6, 1)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    job = {
        "spring_batch_job_name": STATS,
        "spring_batch_job_status": "COMPLETED",
        "error": "none",
    }
    assert delta("spring_batch_job_launch_count_total") == 1
    assert delta("spring_batch_job_seconds_count", **job) == 1
    assert 0.3 < delta("spring_batch_job_seconds_sum", **job) < 60
    assert 0.3 < value(after, "spring_batch_job_seconds_max", **job) < 60
    step_labels = {
        "spring_batch_step_name": STEP,
        "spring_batch_step_job_name": STATS,
        "spring_batch_step_status": "COMPLETED",
        "error": "none",
    }
    assert delta("spring_batch_step_seconds_count", **step_labels) == 1
    assert delta("spring_batch_step_seconds_sum", **step_labels) > 0.3
    # Done: the long task timers are back to none running
    assert value(after, "spring_batch_job_active_seconds_count", **job_name) == 0
    assert value(after, "spring_batch_job_active_seconds_max", **job_name) == 0

    # Items: each chunk read counts as its items, and the read that finds the end as one;
    # processing as its items (and the attempt the 503 failed as one FAILURE); a chunk's
    # writing once per commit
    commits = step["commitCount"]
    assert commits == 4
    assert delta("spring_batch_item_read_seconds_count", **read, **status("item_read")) == 8
    assert (
        delta("spring_batch_item_process_seconds_count", **process, **status("item_process")) == 7
    )
    failed = status("item_process", "FAILURE")
    assert delta("spring_batch_item_process_seconds_count", **process, **failed) == 1
    assert delta("spring_batch_chunk_write_seconds_count", **write, **status("chunk_write")) == 4
    # The 300 ms of each store lookup are processing time (two lookups: the failed one
    # and its retry)
    assert delta("spring_batch_item_process_seconds_sum", **process, **status("item_process")) > 0.3

    # Names, types and tags, as Micrometer's Prometheus registry writes them
    for name, kind in (
        ("spring_batch_job_seconds", "summary"),
        ("spring_batch_job_seconds_max", "gauge"),
        ("spring_batch_job_active_seconds", "summary"),
        ("spring_batch_job_active_seconds_max", "gauge"),
        ("spring_batch_step_seconds", "summary"),
        ("spring_batch_step_active_seconds", "summary"),
        ("spring_batch_item_read_seconds", "summary"),
        ("spring_batch_item_process_seconds", "summary"),
        ("spring_batch_chunk_write_seconds", "summary"),
        ("spring_batch_chunk_write_seconds_max", "gauge"),
        ("http_server_requests_seconds", "summary"),
        ("http_server_requests_seconds_max", "gauge"),
    ):
        assert f"# TYPE {name} {kind}\n" in text
    job_tags = frozenset({"spring_batch_job_name", "spring_batch_job_status", "error"})
    step_tags = {"spring_batch_step_name", "spring_batch_step_job_name", "spring_batch_step_status"}
    item_tags = {
        timer: frozenset(
            f"spring_batch_{timer}_{tag}" for tag in ("job_name", "step_name", "status")
        )
        for timer in ("item_read", "item_process", "chunk_write")
    }
    assert labelled(after, "spring_batch_") == {
        "spring_batch_job_launch_count_total": {frozenset()},
        "spring_batch_job_launch_count_created": {frozenset()},
        "spring_batch_job_seconds_count": {job_tags},
        "spring_batch_job_seconds_sum": {job_tags},
        "spring_batch_job_seconds_max": {job_tags},
        **{
            f"spring_batch_job_active_seconds{suffix}": {
                frozenset({"spring_batch_job_active_name"})
            }
            for suffix in ("_count", "_sum", "_max")
        },
        **{
            f"spring_batch_step_seconds{suffix}": {frozenset({*step_tags, "error"})}
            for suffix in ("_count", "_sum", "_max")
        },
        **{
            f"spring_batch_step_active_seconds{suffix}": {frozenset(step_tags)}
            for suffix in ("_count", "_sum", "_max")
        },
        **{
            f"spring_batch_{timer}_seconds{suffix}": {tags}
            for timer, tags in item_tags.items()
            for suffix in ("_count", "_sum", "_max")
        },
    }


def status(timer: str, value: str = "SUCCESS") -> dict[str, str]:
    return {f"spring_batch_{timer}_status": value}


async def test_http_server_requests_carry_spring_mvcs_tags(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(settings, broker=False) as client:
        before = await scrape(client)
        assert (await client.get("/api/v1/jobs", headers=bearer())).status == 200
        assert (await client.get("/api/v1/jobs")).status == 401
        assert (await client.get("/no/such/page/31337")).status == 404
        repository = client.server.app[LAUNCHER].repository

        async def broken(*args: object, **kwargs: object) -> None:
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr(repository, "find_executions", broken)
        assert (await client.get("/api/v1/jobs/executions", headers=bearer())).status == 500
        after = await scrape(client)

    def requests(**labels: str) -> float:
        name = "http_server_requests_seconds_count"
        return value(after, name, **labels) - value(before, name, **labels)

    def tags(method: str, uri: str, status: int, outcome: str, error: str) -> dict[str, str]:
        return {
            "method": method,
            "uri": uri,
            "status": str(status),
            "outcome": outcome,
            "exception": error,
            "error": error,
        }

    assert requests(**tags("GET", "/api/v1/jobs", 200, "SUCCESS", "none")) == 1
    assert requests(**tags("GET", "/api/v1/jobs", 401, "CLIENT_ERROR", "none")) == 1
    assert requests(**tags("GET", "NOT_FOUND", 404, "CLIENT_ERROR", "none")) == 1
    broken_call = tags("GET", "/api/v1/jobs/executions", 500, "SERVER_ERROR", "ZeroDivisionError")
    assert requests(**broken_call) == 1
    assert value(after, "http_server_requests_seconds_max", **broken_call) > 0
    assert {
        frozenset(key for key, _ in labels)
        for name, labels in after
        if name.startswith("http_server_requests_seconds")
    } == {frozenset({"method", "uri", "status", "outcome", "exception", "error"})}
