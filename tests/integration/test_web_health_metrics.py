"""`/actuator/health` against the real MariaDB and RabbitMQ, and `/actuator/prometheus`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import jwt
from aiohttp.test_utils import TestClient, TestServer
from asyncmy.pool import Pool
from prometheus_client.parser import text_string_to_metric_families

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.web.app import LAUNCHER, HealthCheck, create_app, resource_checks
from tests.settings import TEST_JWT_KEY, make_settings
from tests.waits import waiting

RABBIT_PORT = make_settings().RABBITMQ_PORT


@asynccontextmanager
async def relay(port: int) -> AsyncIterator[tuple[int, Callable[[], Awaitable[None]]]]:
    """A TCP relay to 127.0.0.1:`port`: (its port, `cut`), where `cut()` closes the relay's
    port and every connection through it, as if the broker went away."""
    writers: set[asyncio.StreamWriter] = set()
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writers.update((writer, up_writer))
        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            pipes.add(asyncio.create_task(task))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)

    async def cut() -> None:
        server.close()
        await server.wait_closed()
        for writer in writers:
            writer.close()
        if pipes:
            await asyncio.wait(pipes)

    try:
        yield server.sockets[0].getsockname()[1], cut
    finally:
        await cut()


@asynccontextmanager
async def serving(
    settings: Settings,
    *,
    broker: bool,
    extra: dict[str, HealthCheck] | None = None,
    **app_options: Any,
) -> AsyncIterator[TestClient]:
    async with AsyncExitStack() as stack:
        resources = await stack.enter_async_context(open_resources(settings, broker=broker))
        launcher = Launcher(resources, JOBS)
        stack.push_async_callback(launcher.shutdown, 5)
        checks = {**resource_checks(resources), **(extra or {})}
        app = create_app(launcher, checks, **app_options)
        yield await stack.enter_async_context(TestClient(TestServer(app)))


async def timed_health(client: TestClient) -> tuple[float, int, dict]:
    started = time.monotonic()
    resp = await client.get("/actuator/health")
    body = await resp.json()
    return time.monotonic() - started, resp.status, body


# ---- health --------------------------------------------------------------------------


async def test_probes_liveness_up_readiness_down_once_shutting_down(settings: Settings) -> None:
    async with serving(settings, broker=False) as client:
        for probe in ("liveness", "readiness"):
            resp = await client.get(f"/actuator/health/{probe}")
            assert (resp.status, await resp.json()) == (200, {"status": "UP"})
        client.server.app[LAUNCHER].stop_accepting()  # what `serve` does on SIGTERM
        resp = await client.get("/actuator/health/readiness")
        assert (resp.status, await resp.json()) == (503, {"status": "DOWN"})
        resp = await client.get("/actuator/health/liveness")
        assert (resp.status, await resp.json()) == (200, {"status": "UP"})


async def test_health_up(settings: Settings, vhost: str) -> None:
    job_settings = make_settings(DB_URL=settings.DB_URL, RABBITMQ_VHOST=vhost)
    async with serving(job_settings, broker=True) as client:
        elapsed, status, body = await timed_health(client)
    assert status == 200
    assert body == {
        "status": "UP",
        "components": {"db": {"status": "UP"}, "rabbit": {"status": "UP"}},
    }
    assert elapsed < 1


async def test_health_down_within_a_second_when_the_broker_port_closes(
    settings: Settings, vhost: str
) -> None:
    async with relay(RABBIT_PORT) as (port, cut):
        job_settings = make_settings(
            DB_URL=settings.DB_URL, RABBITMQ_VHOST=vhost, RABBITMQ_PORT=port
        )
        async with serving(job_settings, broker=True) as client:
            assert (await timed_health(client))[1] == 200
            await cut()
            answers = [await timed_health(client) for _ in range(3)]
    for elapsed, status, body in answers:
        assert elapsed < 1
        assert status == 503
        assert body["status"] == "DOWN"
        assert body["components"]["rabbit"]["status"] == "DOWN"
        assert body["components"]["db"] == {"status": "UP"}


async def test_a_hanging_check_is_cut_off_and_cancelled(settings: Settings) -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with serving(settings, broker=False, extra={"slow": hangs}) as client:
        elapsed, status, body = await timed_health(client)
        assert elapsed < 1
        assert status == 503
        assert body["components"]["slow"]["status"] == "DOWN"
        assert body["components"]["db"] == {"status": "UP"}
    assert cancelled.is_set()


async def test_a_slow_check_is_shared_by_the_answers_meanwhile_never_cut_and_begun_again(
    settings: Settings,
) -> None:
    """A check slower than the answer's 0.5 s is DOWN for the answers that come while it
    runs, each joining it, and UP once it has answered: begun once, never cancelled
    (before: each answer cancelled it and began another, and the broker's check reopened
    its channel each time: under a load of probes, 448 of 500 answers DOWN)."""
    begun, cancelled = 0, 0
    answer = asyncio.Event()

    async def slow() -> None:
        nonlocal begun, cancelled
        begun += 1
        try:
            await answer.wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise

    async with serving(settings, broker=False, extra={"slow": slow}) as client:
        first, second = await asyncio.gather(timed_health(client), timed_health(client))
        third = await timed_health(client)
        for _, status, body in (first, second, third):
            assert status == 503
            assert body["components"]["slow"] == {
                "status": "DOWN",
                "details": {"error": "no answer in 0.5 s"},
            }
        assert (begun, cancelled) == (1, 0)
        answer.set()
        async with waiting(5, "the slow check's answer taken by the next health answer"):
            while (await timed_health(client))[1] != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    assert cancelled == 0


# ---- metrics -------------------------------------------------------------------------


async def test_prometheus_exposition(settings: Settings, pool: Pool) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, 1, 1, 1, 'USED', %s)",
            [(7, f"2025-10-2{i} 10:00:00") for i in range(5)],
        )
    admin = {"sub": "1", "memberType": "ADMIN", "iat": int(time.time())}
    headers = {
        "Authorization": "Bearer " + jwt.encode({**admin, "exp": admin["iat"] + 60}, TEST_JWT_KEY)
    }
    async with run_fake_peers({"stores": {"1": "노량진동"}}, key=TEST_JWT_KEY) as fake:
        job_settings = make_settings(
            DB_URL=settings.DB_URL,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
        )
        async with serving(job_settings, broker=False) as client:
            resp = await client.post(
                "/api/v1/jobs/coupon-usage-stats?runDate=2025-10-26", headers=headers
            )
            assert resp.status == 202
            running = client.server.app[LAUNCHER].running.values()
            await asyncio.gather(*(run.task for run in running))
            done = await client.get(resp.headers["Location"], headers=headers)
            assert (await done.json())["status"] == "COMPLETED"
            assert (
                await client.get("/api/v1/jobs/executions/424242", headers=headers)
            ).status == 404
            assert (await client.get("/no/such/page/31337")).status == 404
            resp = await client.get("/actuator/prometheus")
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()

    families = {family.name: family for family in text_string_to_metric_families(text)}
    expected = {
        "http_server_requests_seconds",
        "batch_job_duration_seconds",
        "batch_step_duration_seconds",
        "batch_job_executions",
        "batch_job_repository_executions",
        "batch_job_unrecovered_instances",
        "batch_job_last_start_timestamp_seconds",
        "batch_job_last_success_timestamp_seconds",
        "batch_job_repository_read_timestamp_seconds",
        "batch_items",
        "batch_pipeline_queue_depth",
        "batch_peer_request_seconds",
        "batch_peer_errors",
        "batch_messages",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_info",
        "python_gc_collections",
    }
    assert expected <= set(families)
    samples = [s for family in families.values() for s in family.samples]
    assert samples
    assert all(s.labels.get("application") == "batch-service" for s in samples)
    # No label that Prometheus (or its Operator) sets on targets: a default scrape would
    # rename it exported_*
    target_labels = {"job", "instance", "endpoint", "namespace", "pod", "service", "container"}
    assert {label for s in samples for label in s.labels} & target_labels == set()

    requests = {
        (s.labels["method"], s.labels["uri"], s.labels["status"])
        for s in families["http_server_requests_seconds"].samples
        if s.name == "http_server_requests_seconds_count"
    }
    assert ("POST", "/api/v1/jobs/{jobName}", "202") in requests
    assert ("GET", "/api/v1/jobs/executions/{id}", "200") in requests
    assert ("GET", "/api/v1/jobs/executions/{id}", "404") in requests
    assert ("GET", "NOT_FOUND", "404") in requests
    assert not any("424242" in uri or "31337" in uri for _, uri, _ in requests)

    outcomes = {
        s.labels["outcome"]
        for s in families["batch_items"].samples
        if s.labels["spring_batch_job_name"] == "couponUsageStatsJob"
    }
    assert {"read", "written"} <= outcomes
    peers = {
        (s.labels["peer"], s.labels["uri"]) for s in families["batch_peer_request_seconds"].samples
    }
    assert ("store", "/internal/v1/stores/regions") in peers
