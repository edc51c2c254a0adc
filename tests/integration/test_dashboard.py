"""deploy/grafana/couponpop-batch.json: every query parses (promtool), and every metric and
label it uses is one that `/actuator/prometheus` really exposes after both jobs ran through
the admin API (the stats job meeting one peer failure, the fan-out publishing)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import jwt
from asyncmy.pool import Pool
from prometheus_client.parser import text_string_to_metric_families

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.db import fetch_all
from app.edges.peers import REGIONS
from app.metrics import QUEUE_DEPTH, REGISTRY
from app.replicas import ReplicaRegistry
from app.runtime.automation import RestartPolicy
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.runtime.scheduler import Scheduler
from app.web.app import LAUNCHER
from tests.dashboard import DASHBOARD, dashboard_queries, resolved
from tests.integration.test_fcm_send_job import NORYANGJIN_10, queue_depth
from tests.integration.test_fcm_send_job import load_old_service_rows as load_fanout_rows
from tests.integration.test_usage_stats_job import OLD_SERVICE_EXPECTED
from tests.integration.test_usage_stats_job import load_old_service_rows as load_stats_rows
from tests.integration.test_web_health_metrics import serving
from tests.samples import SAMPLE_STORES
from tests.settings import TEST_JWT_KEY, make_settings

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
IDENTIFIER = re.compile(r"[a-zA-Z_:][\w:]*")


def names_in(query: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(metric names, label names matched per metric, grouping labels) of a PromQL query."""
    grouping = {
        label.strip() for found in GROUPING.findall(query) for label in found.split(",")
    } - {""}
    rest = GROUPING.sub(" ", query)
    matched: dict[str, set[str]] = defaultdict(set)
    for metric, matchers in SELECTOR.findall(rest):
        matched[metric].update(MATCHER.findall(matchers))
    rest = re.sub(r"\[[^\]]*\]", " ", SELECTOR.sub(r" \1 ", rest))
    rest = re.sub(r"(?<![\w:])\d[\w.]*", " ", rest)  # numbers and durations
    metrics = {
        found.group()
        for found in IDENTIFIER.finditer(rest)
        if found.group() not in KEYWORDS and not re.match(r"\s*\(", rest[found.end() :])
    }
    return metrics, dict(matched), grouping


def test_names_in_reads_metrics_matchers_and_grouping() -> None:
    query = (
        'histogram_quantile(0.95, sum by (peer, le) (rate(a_bucket{application="x",'
        'peer=~"s.*"}[1m]))) / on() group_left max without (instance) (b offset 5m) or c'
    )
    assert names_in(query) == (
        {"a_bucket", "b", "c"},
        {"a_bucket": {"application", "peer"}},
        {"peer", "le", "instance"},
    )


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run scripts/bootstrap (Debian package prometheus)"
    queries = dashboard_queries()
    assert len(queries) == 27
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard_query_{i}", "expr": resolved(q)}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(json.dumps(rules), encoding="utf-8")  # YAML 1.2
    result = subprocess.run(
        [promtool, "check", "rules", "queries.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_panels_are_laid_out_without_overlap() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    cells: set[tuple[int, int]] = set()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not mine & cells, panel["title"]
        cells |= mine


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_dashboard_metric_is_exposed(
    settings: Settings, pool: Pool, queue: str
) -> None:
    await load_stats_rows(pool)
    await load_fanout_rows(pool)
    confirmed = sample("batch_messages_total", outcome="confirmed")
    store_5xx = sample("batch_peer_errors_total", peer="store", uri=REGIONS, kind="status_5xx")
    before = time.time()
    issued = int(before)
    admin = {"sub": "1", "memberType": "ADMIN", "iat": issued, "exp": issued + 300}
    headers = {"Authorization": "Bearer " + jwt.encode(admin, TEST_JWT_KEY)}
    peers = {
        "stores": {str(k): v for k, v in SAMPLE_STORES.items()},
        "tokens": {"101": ["token-101-a", "token-101-b"]},
    }
    async with run_fake_peers(peers, key=TEST_JWT_KEY) as fake:
        job_settings = make_settings(
            DB_URL=settings.DB_URL,
            RABBITMQ_VHOST=queue,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
        )
        fake.control.update({"fail_status": 503, "fail_times": 1})  # retried
        async with serving(job_settings, broker=True) as client:
            final: dict[str, dict[str, Any]] = {}
            for path in (
                "/api/v1/jobs/coupon-usage-stats?runDate=2025-10-26",
                "/api/v1/jobs/coupon-usage-stats-fcm-send?runDate=2025-10-25&targetHour=10",
            ):
                resp = await client.post(path, headers=headers)
                assert resp.status == 202, await resp.text()
                running = client.server.app[LAUNCHER].running.values()
                await asyncio.gather(*(run.task for run in running))
                done = await client.get(resp.headers["Location"], headers=headers)
                body = await done.json()
                final[body["jobName"]] = body
            resp = await client.get("/actuator/prometheus")
            assert resp.status == 200
            text = await resp.text()
    after = time.time()

    assert {name: body["status"] for name, body in final.items()} == {
        "couponUsageStatsJob": "COMPLETED",
        "couponUsageStatsFcmSendJob": "COMPLETED",
    }
    rows = await fetch_all(
        pool,
        "SELECT member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats"
        " WHERE aggregated_at = %s ORDER BY member_id",
        (date(2025, 10, 26),),
    )
    # Exactly the stats job's rows: the fan-out fixture's row of member 101 for the date
    # (no USED rows in the window) is replaced away, as a first run would have it
    assert [tuple(row) for row in rows] == OLD_SERVICE_EXPECTED
    assert await queue_depth(queue) == len(NORYANGJIN_10)
    assert sample("batch_messages_total", outcome="confirmed") - confirmed == 2
    assert (
        sample("batch_peer_errors_total", peer="store", uri=REGIONS, kind="status_5xx") - store_5xx
        == 1
    )

    exposed: dict[str, set[str]] = defaultdict(set)  # sample name -> its label names
    values: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            exposed[s.name].update(s.labels)
            values[s.name, frozenset(s.labels.items())] = s.value
    # Queue depths exist only while a step runs (each execution's series is removed at
    # its end): declared, with these labels, but without samples once the runs are over.
    assert "batch_pipeline_queue_depth" not in exposed
    assert "# TYPE batch_pipeline_queue_depth gauge" in text
    exposed["batch_pipeline_queue_depth"] = {"application", *QUEUE_DEPTH._labelnames}
    for job in ("couponUsageStatsJob", "couponUsageStatsFcmSendJob"):
        labels = frozenset({"application": "batch-service", "spring_batch_job_name": job}.items())
        assert before <= values["batch_job_last_start_timestamp_seconds", labels] <= after
        assert before <= values["batch_job_last_success_timestamp_seconds", labels] <= after

    queries = dashboard_queries()
    used_metrics: set[str] = set()
    for query in queries:
        metrics, matched, grouping = names_in(resolved(query))
        assert metrics, query
        used_metrics |= metrics
        for metric in metrics:
            assert metric in exposed, f"{metric} is not exposed (query: {query})"
        for metric, labels in matched.items():
            assert labels <= exposed[metric], f"{metric} has no {labels - exposed[metric]}"
        on_some_metric = set().union(*(exposed[m] for m in metrics))
        assert grouping <= on_some_metric, f"{grouping - on_some_metric} in {query}"
    assert {
        "batch_job_executions_total",
        "batch_job_duration_seconds_sum",
        "batch_items_total",
        "batch_pipeline_queue_depth",
        "batch_peer_request_seconds_bucket",
        "batch_peer_errors_total",
        "batch_messages_total",
        "batch_job_repository_executions",
        "batch_job_unrecovered_instances",
        "batch_job_last_success_timestamp_seconds",
        "process_resident_memory_bytes",
        # The old service's names
        "spring_batch_job_seconds_sum",
        "spring_batch_job_active_seconds_count",
        "spring_batch_step_seconds_count",
        "spring_batch_step_active_seconds_count",
        "spring_batch_item_read_seconds_sum",
        "spring_batch_item_process_seconds_sum",
        "spring_batch_chunk_write_seconds_count",
        "http_server_requests_seconds_count",
    } <= used_metrics


async def test_the_scheduler_gauge_follows_the_scheduler(settings: Settings) -> None:
    policy = RestartPolicy(attempts=0, backoff_seconds=1, misfire_grace=timedelta(0))
    async with open_resources(settings, broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        registry = ReplicaRegistry(resources.pool, lease_seconds=120)
        scheduler = Scheduler(launcher, settings.timezone, (), policy, registry, every=60)
        await scheduler.run_pass()  # no schedule: it agrees on the zone, and that is all
        running = sample("batch_scheduler_enabled")
        await scheduler.stop()
    assert (running, sample("batch_scheduler_enabled")) == (1, 0)
