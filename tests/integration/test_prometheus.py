"""The monitoring as shipped, under a real Prometheus: Debian's `prometheus` binary with
deploy/prometheus/prometheus.yml (its default scrape: no honor_labels) and the shipped
alerting rules scrapes a live `python -m app serve` of a fresh database while both jobs
run through the admin API. Then every query of the Grafana dashboard returns series
through Prometheus's HTTP API, no series carries a label renamed `exported_*`, every
series of the service keeps `application`, every alerting rule evaluates, and none
fires: a fresh deployment with runs that went well raises nothing (not even for the runs
that were due before it existed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import open_pool
from app.schema.migrate import migrate
from tests.dashboard import dashboard_queries, resolved
from tests.integration.test_daemon_serve import admin_headers, serve
from tests.reliability.support import free_port, until_ready
from tests.samples import SAMPLE_STORES
from tests.settings import make_settings
from tests.waits import waiting

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
DB_SERVER = os.environ.get("TEST_DB_SERVER", "mysql://127.0.0.1:3306")
SCRAPE_EVERY = "250ms"
RATE_INTERVAL = "5s"  # Grafana's $__rate_interval for that scrape interval
MEMBERS = range(1, 301)
RUN_DATE = "2025-10-26"
WITHIN = 60  # seconds: every wait below is for a state, bounded by this


def store_of(member: int) -> int:
    return member % len(SAMPLE_STORES) + 1


@pytest.fixture
def fresh_settings() -> Iterator[Settings]:
    """A database of the test's own, migrated and empty: a fresh deployment, with no
    job history from other tests."""
    name = f"cpb_test_{os.getpid()}_prometheus"
    admin = make_settings(DB_URL=f"{DB_SERVER}/mysql").database
    settings = make_settings(DB_URL=f"{DB_SERVER}/{name}")

    async def execute(sql: str) -> None:
        async with open_pool(admin) as pool, pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql)

    async def create() -> None:
        await execute(f"DROP DATABASE IF EXISTS {name}")
        await execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        async with open_pool(settings.database) as pool:
            await migrate(pool, dev_schema=True)

    asyncio.run(create())
    try:
        yield settings
    finally:
        asyncio.run(execute(f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture
async def world(fresh_settings: Settings) -> AsyncIterator[Pool]:
    """Each member uses coupons at 10:00 at a store of the sample world (its favourite
    hour is 10), every store runs a coupon event, members 1 and 2 have a push token."""
    histories = sorted(  # in created_at order, as the platform inserts them
        (
            (m, store_of(m), f"2025-10-2{day} 10:{m % 60:02d}:00")
            for m in MEMBERS
            for day in range(5)
        ),
        key=lambda row: row[2],
    )
    events = [(store, "2025-10-01", "2025-11-01") for store in SAMPLE_STORES]
    async with open_pool(fresh_settings.database) as pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
                " coupon_status, created_at) VALUES (%s, 1, %s, 1, 'USED', %s)",
                histories,
            )
            await cur.executemany(
                "INSERT INTO coupon_events (store_id, event_start_at, event_end_at,"
                " total_count, issued_count) VALUES (%s, %s, %s, 100, 0)",
                events,
            )
        yield pool


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    data = {
        "stores": {str(store): dong for store, dong in SAMPLE_STORES.items()},
        "tokens": {"1": ["token-1-a"], "2": ["token-2-a"]},
    }
    async with run_fake_peers(data) as peers:
        yield peers


class Prometheus:
    """Debian's Prometheus on a port and a storage folder of its own."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def api(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        return (await self.api("query", query=expr))["result"]

    async def until(self, expr: str) -> None:
        """Until the query has series."""
        await self._until(expr, lambda result: bool(result))

    async def until_sampled_twice(self, selector: str, window: str) -> None:
        """Until every series of `selector` in the last `window` has two samples there
        (a counter appears at its first increment, and a rate needs two)."""
        await self._until(
            f"{selector}[{window}]", lambda result: all(len(s["values"]) > 1 for s in result)
        )

    async def _until(self, expr: str, done: Callable[[list[dict[str, Any]]], bool]) -> None:
        async with waiting(WITHIN, f"Prometheus answering {expr} as expected"):
            while True:
                if done(await self.query(expr)):
                    return
                await asyncio.sleep(0.2)


def prometheus_config(target: str, folder: Path) -> Path:
    """The shipped prometheus.yml with the test's own target, intervals and rule path."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (scrape,) = config["scrape_configs"]
    assert "honor_labels" not in scrape  # the default scrape
    assert config["rule_files"] == ["alerts.yml"]
    scrape["static_configs"] = [{"targets": [target]}]
    config["global"] = {"scrape_interval": SCRAPE_EVERY, "evaluation_interval": "500ms"}
    config["rule_files"] = [str(DEPLOY / "alerts.yml")]
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


@asynccontextmanager
async def running_prometheus(target: str, folder: Path) -> AsyncIterator[Prometheus]:
    """Debian's Prometheus scraping `target`, ready; stopped on exit."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run scripts/bootstrap (Debian package prometheus)"
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={prometheus_config(target, folder)}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await until_ready(f"{url}/-/ready", process, lambda: log.read_text(encoding="utf-8"))
        async with aiohttp.ClientSession() as http:
            yield Prometheus(url, http)
    finally:
        process.terminate()
        await process.wait()


async def run(http: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    """Launch through the admin API and wait for the execution's end."""
    async with http.post(path) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    async with waiting(WITHIN, f"{location} finished"):
        while True:
            async with http.get(location) as resp:
                execution = await resp.json()
            if execution["status"] not in ("STARTING", "STARTED", "STOPPING"):
                return execution
            await asyncio.sleep(0.1)


async def test_the_shipped_monitoring_under_a_real_prometheus(
    fresh_settings: Settings,
    world: Pool,
    fake: FakePeers,
    queue: str,
    tmp_path: Path,
) -> None:
    started = time.time()
    async with (
        serve(fresh_settings, fake, queue, tmp_path / "serve.log", CHUNK_SIZE="10") as daemon,
        aiohttp.ClientSession(daemon.url, headers=admin_headers()) as http,
    ):
        target = daemon.url.removeprefix("http://")
        async with running_prometheus(target, tmp_path) as prometheus:
            await scraped_while_running_both_jobs(prometheus, http, fake, started)
            await check_everything_shipped(prometheus, target, started)
    assert "Traceback" not in daemon.log_text()


async def scraped_while_running_both_jobs(
    prometheus: Prometheus, http: aiohttp.ClientSession, fake: FakePeers, started: float
) -> None:
    """Both jobs run while Prometheus scrapes; on return, it has scraped their end."""
    await prometheus.until('up{job="couponpop-batch"} == 1')
    # The stats job meets one 503 of the store service (retried)
    fake.control.update({"fail_status": 503, "fail_times": 1})
    stats = await run(http, f"/api/v1/jobs/coupon-usage-stats?runDate={RUN_DATE}")
    assert (stats["status"], stats["steps"][0]["writeCount"]) == ("COMPLETED", len(MEMBERS))
    # The fan-out waits on the notification service (3 s a call, within
    # PEER_TIMEOUT_SECONDS) until Prometheus has seen its pipeline's queues for 1.5 s (6
    # scrapes): the dashboard's range query below steps by 1 s, and a gauge seen for less
    # may fall between two steps (under load it did)
    fake.control.update({"latency_ms": 3000})
    fanout = asyncio.create_task(
        run(http, f"/api/v1/jobs/coupon-usage-stats-fcm-send?runDate={RUN_DATE}&targetHour=10")
    )
    await prometheus.until("count_over_time(batch_pipeline_queue_depth[10s]) >= 6")
    fake.control.update({"latency_ms": 0})
    execution = await fanout
    assert (execution["status"], execution["messages"]) == (
        "COMPLETED",
        {"published": 2, "confirmed": 2},
    )
    # The end of both runs, the figures read from BATCH_* included
    fanout_job = 'spring_batch_job_name="couponUsageStatsFcmSendJob"'
    await prometheus.until(f"batch_job_last_success_timestamp_seconds{{{fanout_job}}} > {started}")
    await prometheus.until(f"spring_batch_job_seconds_count{{{fanout_job}}}")
    await prometheus.until_sampled_twice('{job="couponpop-batch"}', RATE_INTERVAL)


async def evaluated_rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    """The alerting rules, once each has been evaluated on what is scraped by now."""
    since = time.time()
    async with waiting(WITHIN, "every alerting rule evaluated"):
        while True:
            groups = (await prometheus.api("rules"))["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if rules and all(_evaluated_at(rule) > since for rule in rules):
                return rules
            await asyncio.sleep(0.2)


def _evaluated_at(rule: dict[str, Any]) -> float:
    """The rule's last evaluation as Unix time (RFC 3339, to the nanosecond)."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", rule["lastEvaluation"])
    return datetime.fromisoformat(stamp).timestamp()


async def check_everything_shipped(prometheus: Prometheus, target: str, started: float) -> None:
    rules = await evaluated_rules(prometheus)

    # Every query of the dashboard has series over the test's time: a rate needs two
    # samples of its series, which a loaded machine may scrape a few seconds late
    empty = [resolved(query, RATE_INTERVAL) for query in dashboard_queries()]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WITHIN):
            while empty:
                now = time.time()
                empty = [
                    expr
                    for expr in empty
                    if not (
                        await prometheus.api(
                            "query_range", query=expr, start=str(started), end=str(now), step="1"
                        )
                    )["result"]
                ]
                if empty:
                    await asyncio.sleep(0.5)
    assert empty == []

    # No label renamed by the scrape; `application` on every series of the service
    labels = await prometheus.api("labels")
    assert [label for label in labels if label.startswith("exported_")] == []
    series = await prometheus.api("series", **{"match[]": '{job="couponpop-batch"}'})
    assert {s["instance"] for s in series} == {target}
    service = [
        s for s in series if s["__name__"] != "up" and not s["__name__"].startswith("scrape_")
    ]
    assert len(service) > 100
    assert [s for s in service if s.get("application") != "batch-service"] == []

    # Every alerting rule evaluates, and none fires: not even for a run due before the
    # deployment existed (the scheduler runs, and its figure is scraped)
    assert sorted(rule["name"] for rule in rules) == [
        "BatchExecutionFailed",
        "BatchInstanceNotRecovered",
        "BatchItemsSkipped",
        "BatchJobRepositoryUnread",
        "BatchPeerErrorRateHigh",
        "BatchPublishNackedOrReturned",
        "BatchScheduledRunNotCompleted",
    ]
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in rules] == [
        (r["name"], "ok", "") for r in rules
    ]
    assert await prometheus.query("batch_scheduler_enabled == 1")
    assert await prometheus.query('ALERTS{alertstate="firing"}') == []
