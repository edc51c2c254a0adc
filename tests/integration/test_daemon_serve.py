"""`python -m app serve` as a process: health, SIGTERM during a run, resuming after it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.repository.mariadb import MariaDbJobRepository
from tests.proxy import FaultProxy, through
from tests.reliability.support import age_execution, free_port, until_ready
from tests.settings import TEST_JWT_KEY, TEST_JWT_SECRET
from tests.waits import waiting

RUN_DATE = "2025-10-26"
MEMBERS = range(1, 61)
STORE_OF = {m: 1000 + m for m in MEMBERS}  # a store per member: a store lookup per chunk
STATS = "/api/v1/jobs/coupon-usage-stats"


@dataclass
class Daemon:
    process: asyncio.subprocess.Process
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        async with waiting(30, "the daemon's exit on SIGTERM"):
            return await self.process.wait()


@pytest.fixture
async def fake() -> AsyncIterator[FakePeers]:
    data = {"stores": {str(s): f"{s}동" for s in STORE_OF.values()}, "tokens": {}}
    async with run_fake_peers(data, key=TEST_JWT_KEY) as peers:
        yield peers


def admin_headers() -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": "1", "username": "ops", "memberType": "ADMIN", "iat": now, "exp": now + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, TEST_JWT_KEY)}"}


@asynccontextmanager
async def serve(
    settings: Settings, fake: FakePeers, vhost: str, log: Path, **env: str
) -> AsyncIterator[Daemon]:
    """The daemon, started with the environment only (no .env: its cwd is a temp folder),
    healthy; SIGTERM (then SIGKILL) on exit if it still runs."""
    port = free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "DB_URL": settings.DB_URL,
        "SERVER_PORT": str(port),
        "JWT_SECRET_KEY": TEST_JWT_SECRET,
        "STORE_SERVICE_URL": fake.store_url,
        "NOTIFICATION_SERVICE_URL": fake.notification_url,
        "RABBITMQ_VHOST": vhost,
        **env,
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve",
            env=environment, cwd=log.parent, stdout=out, stderr=out,
        )  # fmt: skip
    daemon = Daemon(process, f"http://127.0.0.1:{port}", log)
    try:
        await until_ready(f"{daemon.url}/actuator/health", process, daemon.log_text)
        yield daemon
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def until_committed(http: aiohttp.ClientSession, execution_id: int) -> None:
    """Until a chunk is committed: there is a checkpoint to resume from."""
    async with waiting(20, f"a chunk of execution {execution_id} committed"):
        while True:
            async with http.get(f"/api/v1/jobs/executions/{execution_id}") as resp:
                if (await resp.json())["commitCount"] >= 1:
                    return
            await asyncio.sleep(0.05)


async def until_finished(http: aiohttp.ClientSession, execution_id: int) -> dict:
    async with waiting(20, f"execution {execution_id} finished"):
        while True:
            async with http.get(f"/api/v1/jobs/executions/{execution_id}") as resp:
                execution = await resp.json()
            if execution["status"] not in ("STARTING", "STARTED"):
                return execution
            await asyncio.sleep(0.05)


async def rows_of_the_date(pool: Pool) -> tuple[int, int]:
    """Rows of RUN_DATE in coupon_usage_stats, and distinct members among them."""
    [(rows, members)] = await fetch_all(
        pool,
        "SELECT COUNT(*), COUNT(DISTINCT member_id) FROM coupon_usage_stats"
        " WHERE aggregated_at = %s",
        (RUN_DATE,),
    )
    return rows, members


async def add_members(pool: Pool) -> None:
    rows = [(m, STORE_OF[m], f"2025-10-2{i} 1{m % 10}:00:00") for m in MEMBERS for i in range(5)]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            " coupon_status, created_at) VALUES (%s, 1, %s, 1, 'USED', %s)",
            rows,
        )


async def test_serve_answers_health_and_exits_0_on_sigterm(
    settings: Settings, fake: FakePeers, vhost: str, tmp_path: Path
) -> None:
    async with serve(settings, fake, vhost, tmp_path / "serve.log") as daemon:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{daemon.url}/actuator/health") as resp:
                assert await resp.json() == {
                    "status": "UP",
                    "components": {"db": {"status": "UP"}, "rabbit": {"status": "UP"}},
                }
            async with http.get(f"{daemon.url}{STATS}/executions") as resp:
                assert resp.status == 401
        assert await daemon.stop() == 0
    log = daemon.log_text()
    port = daemon.url.rsplit(":", 1)[1]
    assert f"serving on port {port}; scheduler enabled (Asia/Seoul)" in log
    assert "Traceback" not in log


async def test_sigterm_during_a_run_interrupts_it_restartably_and_a_later_launch_resumes(
    settings: Settings, pool: Pool, fake: FakePeers, vhost: str, tmp_path: Path
) -> None:
    await add_members(pool)
    fake.control.latency_ms = 300
    env = {
        "SCHEDULER_ENABLED": "false",
        "CHUNK_SIZE": "2",
        "ENRICH_WORKERS": "1",
        "QUEUE_SIZE": "1",
        "SHUTDOWN_GRACE_SECONDS": "20",
    }
    headers = admin_headers()
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)

    async with (
        serve(settings, fake, vhost, tmp_path / "first.log", **env) as daemon,
        aiohttp.ClientSession(daemon.url, headers=headers) as http,
    ):
        async with http.post(f"{STATS}?runDate={RUN_DATE}") as resp:
            assert resp.status == 202
            first_id = (await resp.json())["executionId"]
        await until_committed(http, first_id)
        assert await daemon.stop() == 0
    assert "scheduler disabled" in daemon.log_text()

    stopped = await repository.get_execution(first_id)
    assert stopped is not None
    # a shutdown, not an operator's stop: FAILED, INTERRUPTED (resumed automatically)
    assert (stopped.status, stopped.exit_code) == ("FAILED", "INTERRUPTED")
    (step,) = stopped.steps
    assert step.status == "FAILED"
    assert step.checkpoint is not None
    assert 0 < step.read_count < len(MEMBERS)
    assert step.read_count == step.write_count

    fake.control.latency_ms = 0
    async with (
        serve(settings, fake, vhost, tmp_path / "second.log", **env) as daemon,
        aiohttp.ClientSession(daemon.url, headers=headers) as http,
    ):
        async with http.post(f"{STATS}?runDate={RUN_DATE}") as resp:
            assert resp.status == 202
            second_id = (await resp.json())["executionId"]
        resumed = await until_finished(http, second_id)
        assert await daemon.stop() == 0

    assert resumed["status"] == "COMPLETED"
    # it read only what the stopped execution had not committed
    assert resumed["readCount"] == len(MEMBERS) - step.read_count
    assert await rows_of_the_date(pool) == (len(MEMBERS), len(MEMBERS))


async def test_sigterm_during_a_database_stall_exits_within_the_grace_and_says_so(
    settings: Settings,
    pool: Pool,
    fake: FakePeers,
    vhost: str,
    tmp_path: Path,
    db_proxy: FaultProxy,
) -> None:
    """Before: the process lived 61 s past a 10 s grace (recording the outcome had no
    deadline) and never exited if the stall never ended. Now: the grace, 3 s to record,
    the pool's bounded close; it says what it could not record and exits 1, and the next
    launch recovers the instance by the lease."""
    await add_members(pool)
    fake.control.latency_ms = 200
    env = {
        "SCHEDULER_ENABLED": "false",
        "CHUNK_SIZE": "2",
        "ENRICH_WORKERS": "1",
        "QUEUE_SIZE": "1",
        "SHUTDOWN_GRACE_SECONDS": "3",
        "DB_STALL_SECONDS": "30",
        "JOB_ABANDON_AFTER_SECONDS": "4",
        "HEARTBEAT_SECONDS": "0.5",
    }
    through_proxy = through(settings, db=db_proxy)
    async with (
        serve(through_proxy, fake, vhost, tmp_path / "stalled.log", **env) as daemon,
        aiohttp.ClientSession(daemon.url, headers=admin_headers()) as http,
    ):
        async with http.post(f"{STATS}?runDate={RUN_DATE}") as resp:
            assert resp.status == 202
            execution_id = (await resp.json())["executionId"]
        await until_committed(http, execution_id)
        db_proxy.stall()
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        async with waiting(30, "the daemon's exit on SIGTERM during the stall"):
            code = await daemon.process.wait()
        lived = time.monotonic() - started
    log = daemon.log_text()
    assert code == 1, log
    assert lived < 3 + 3 + 3 + 3, f"lived {lived:.1f} s after SIGTERM"  # grace, record, close
    assert "outcome(s) could not be recorded" in log
    db_proxy.resume()

    await age_execution(pool, execution_id, 5)  # past JOB_ABANDON_AFTER_SECONDS: no lease
    repository = MariaDbJobRepository(pool, abandon_after_seconds=4)
    stale = await repository.get_execution(execution_id)
    assert stale is not None and stale.status == "STARTED"  # what the stall left
    fake.control.latency_ms = 0
    async with (
        serve(settings, fake, vhost, tmp_path / "recovered.log", **env) as daemon,
        aiohttp.ClientSession(daemon.url, headers=admin_headers()) as http,
    ):
        async with http.post(f"{STATS}?runDate={RUN_DATE}") as resp:
            assert resp.status == 202, await resp.text()
            recovered_id = (await resp.json())["executionId"]
        recovered = await until_finished(http, recovered_id)
    assert recovered["status"] == "COMPLETED"
    abandoned = await repository.get_execution(execution_id)
    assert abandoned is not None and abandoned.status == "FAILED"
    assert abandoned.exit_message.startswith("abandoned: no heartbeat for")
    assert await rows_of_the_date(pool) == (len(MEMBERS), len(MEMBERS))
