"""What the reliability tests share: worlds of data whose outcome is computed here, apart
from the code under test; the CLI and the fake peers as processes; the admin app live on a
port; probes of the database, the broker queue and the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import CONTROL_PATH, FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.runtime.launcher import Launcher, RunningJob
from app.runtime.resources import open_resources
from app.web.app import create_app, resource_checks
from tests.integration import rabbit
from tests.integration.test_fcm_send_job import (
    expected_body,
    insert_events,
    insert_stats,
    queue_depth,
)
from tests.integration.test_usage_stats_job import add_histories
from tests.settings import TEST_JWT_KEY, TEST_JWT_SECRET, make_settings
from tests.waits import waiting

# ---- couponUsageStatsJob: a world of used coupons and its expected table -----------

STATS_RUN_DATE = "2025-10-26"  # window: 2025-10-06 00:00:00 .. 2025-10-26 23:59:59
STATS_DAY = date(2025, 10, 26)
STATS_DONGS = (
    "노량진동",
    "상도동",
    "흑석동",
    "대방동",
    "신대방동",
    "사당동",
    "서교동",
    "🍜동",
    "힣동",
)
UNKNOWN_STORE = 99  # no peer knows it: its rows are dropped

StatsRow = tuple[int, str, int, date]  # member_id, top_dong, top_hour, aggregated_at


def home_store(member: int) -> int:
    return 100_000 + member


@dataclass(frozen=True)
class StatsWorld:
    members: int
    histories: list[tuple[int, int, str]]  # (member_id, store_id, created_at)
    stores: dict[int, str]
    expected: list[StatsRow]  # the table after a complete run, in member order

    def expected_upto(self, member: int) -> list[StatsRow]:
        return [row for row in self.expected if row[0] <= member]

    def expected_except(self, members: Iterable[int]) -> list[StatsRow]:
        left_out = set(members)
        return [row for row in self.expected if row[0] not in left_out]

    def peer_data(self) -> dict[str, Any]:
        return {"stores": {str(k): v for k, v in self.stores.items()}, "tokens": {}}

    async def load(self, pool: Pool) -> None:
        await add_histories(pool, self.histories)


_DIGITS = " UNION ALL ".join(f"SELECT {d}{' AS d' if d == 0 else ''}" for d in range(10))
_NUMBERS = (  # 0 .. 999,999, in plain SQL (MariaDB and MySQL)
    "SELECT " + " + ".join(f"{10**i}*d{i}.d" for i in range(6)) + " AS n FROM "
    + ", ".join(f"({_DIGITS}) d{i}" for i in range(6))
)  # fmt: skip


@dataclass(frozen=True)
class BulkStatsWorld(StatsWorld):
    """Many rows, made by the server: member m uses its own store `rows_per_member`
    times, always at hour m mod 24 (days 10-06 .. 10-26), so it is eligible with that
    store's dong and that hour."""

    rows_per_member: int = 0

    async def load(self, pool: Pool) -> None:
        per = self.rows_per_member
        sql = (
            "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
            f" coupon_status, created_at) SELECT n DIV {per} + 1, 1, {home_store(1)} + n DIV {per},"
            " 1, 'USED', TIMESTAMP '2025-10-06 00:00:00'"
            f" + INTERVAL (n MOD {per}) MOD 21 DAY + INTERVAL (n DIV {per} + 1) MOD 24 HOUR"
            f" + INTERVAL (n MOD {per}) DIV 21 MINUTE"
            f" FROM ({_NUMBERS}) numbers WHERE n < {self.members * per}"
        )
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql)


def bulk_stats_world(members: int, rows_per_member: int) -> BulkStatsWorld:
    assert members * rows_per_member <= 1_000_000 and rows_per_member >= 5
    stores = {home_store(m): STATS_DONGS[m % len(STATS_DONGS)] for m in range(1, members + 1)}
    expected = [(m, stores[home_store(m)], m % 24, STATS_DAY) for m in range(1, members + 1)]
    return BulkStatsWorld(members, [], stores, expected, rows_per_member=rows_per_member)


def stats_world(members: int, rows_per_member: int = 6) -> StatsWorld:
    """Member m uses its own store (a store lookup in every chunk) `rows_per_member - 1`
    times at hour 7m mod 24 on different days, and its neighbour's store once at another
    hour: its favourite is its own store's dong and that hour.

    Every 7th member has 4 rows only (not eligible); every 11th has 2 more rows at a
    store no peer knows (dropped, so the result does not change).
    """
    assert rows_per_member >= 5
    histories: list[tuple[int, int, str]] = []
    stores: dict[int, str] = {}
    expected: list[StatsRow] = []
    for m in range(1, members + 1):
        dong = STATS_DONGS[m % len(STATS_DONGS)]
        stores[home_store(m)] = dong
        hour = 7 * m % 24
        own = 4 if m % 7 == 0 else rows_per_member - 1
        for i in range(own):
            histories.append((m, home_store(m), f"2025-10-{6 + i % 21:02d} {hour:02d}:{i:02d}:00"))
        if m % 7:
            neighbour = home_store(m % members + 1)
            histories.append((m, neighbour, f"2025-10-26 {(hour + 5) % 24:02d}:30:00"))
            expected.append((m, dong, hour, STATS_DAY))
        if m % 11 == 0:
            histories += [(m, UNKNOWN_STORE, f"2025-10-2{d} 03:00:00") for d in (1, 2)]
    return StatsWorld(members, histories, stores, expected)


# ---- couponUsageStatsFcmSendJob: a world of stats rows and its expected messages -----

FANOUT_RUN_DATE = "2025-10-25"
FANOUT_HOUR = 10
FANOUT_PARAMETERS = {"runDate": FANOUT_RUN_DATE, "targetHour": str(FANOUT_HOUR)}
# Dong i has stores 500 + 2i and 501 + 2i and i % 4 active events; the last has no store.
FANOUT_DONGS = (
    "노량진동", "풍무동", "상도동", "흑석동", "대방동", "신대방동",
    "사당동", "서교동", "봉천동", "신림동", "🍜동", "빈동",
)  # fmt: skip


@dataclass(frozen=True)
class FanoutWorld:
    members: int
    stats_rows: list[tuple[int, str, int, str]]
    events: list[tuple[int, str, str, int, int]]
    peers: dict[str, Any]
    bodies: dict[int, list[bytes]]  # member -> the bodies it must receive (none: filtered)
    read: int  # members the reader yields: those whose latest row names the hour

    def expected_bodies(self, members: Iterable[int] | None = None) -> set[bytes]:
        chosen = self.bodies if members is None else set(members)
        return {body for m in chosen for body in self.bodies.get(m, [])}

    def trace_ids(self, members: Iterable[int] | None = None) -> set[str]:
        return {json.loads(body)["traceId"] for body in self.expected_bodies(members)}

    @property
    def written(self) -> int:
        return sum(1 for bodies in self.bodies.values() if bodies)

    async def load(self, pool: Pool) -> None:
        await insert_stats(pool, self.stats_rows)
        await insert_events(pool, self.events)


def fanout_world(
    members: int, run_date: str = FANOUT_RUN_DATE, hour: int = FANOUT_HOUR
) -> FanoutWorld:
    """Member m of dong m % 12, top hour `hour` (10) on the run date. Filtered: every 9th
    member (no push token), dongs 0, 4, 8 (no active event), dong 11 (no store). Not read:
    every 13th member, whose later row of the same date names the next hour. Odd members
    have 2 tokens."""
    reference = datetime.fromisoformat(run_date) + timedelta(hours=hour)

    def at(hours: int) -> str:
        return str(reference + timedelta(hours=hours))

    day_before = str((reference - timedelta(days=1)).date())
    stores: dict[str, str] = {}
    events: list[tuple[int, str, str, int, int]] = []
    active: dict[str, int] = {}
    for i, dong in enumerate(FANOUT_DONGS[:-1]):
        stores[str(500 + 2 * i)] = stores[str(501 + 2 * i)] = dong
        active[dong] = i % 4
        start = at(-1)
        for n in range(i % 4):  # the first one ends exactly at the reference time
            events.append((500 + 2 * i, start, at(0 if n == 0 else 1), 100, 0))
        events.append((501 + 2 * i, start, at(1), 50, 50))  # sold out
    rows: list[tuple[int, str, int, str]] = []
    later: list[tuple[int, str, int, str]] = []
    tokens: dict[str, list[str]] = {}
    bodies: dict[int, list[bytes]] = {}
    read = 0
    for m in range(1, members + 1):
        dong = FANOUT_DONGS[m % len(FANOUT_DONGS)]
        rows.append((m, dong, hour, run_date))
        if m % 5 == 0:
            rows.append((m, dong, 7, day_before))  # an older row: not the latest
        if m % 13 == 0:
            later.append((m, dong, (hour + 1) % 24, run_date))
            continue
        read += 1
        mine = [] if m % 9 == 0 else [f"tok-{m}-a", *([f"tok-{m}-b"] if m % 2 else [])]
        if mine:
            tokens[str(m)] = mine
        count = active.get(dong, 0)
        bodies[m] = [
            expected_body(run_date, m, token, dong, hour, count)
            for token in (mine if count else [])
        ]
    return FanoutWorld(
        members=members,
        stats_rows=rows + later,  # inserted after: greater ids, the latest of their date
        events=events,
        peers={"stores": stores, "tokens": tokens},
        bodies=bodies,
        read=read,
    )


def trace_ids_of(messages: Iterable[AbstractIncomingMessage]) -> list[str]:
    return [json.loads(m.body)["traceId"] for m in messages]


async def drain(vhost: str, within: float = 30.0) -> list[AbstractIncomingMessage]:
    """Every message now in the consumer queue, acked (duplicates included)."""
    depth = await queue_depth(vhost)
    return await rabbit.consume(vhost, depth, within=within, idle=0.3) if depth else []


# ---- the job repository -----------------------------------------------------------


async def step_row(pool: Pool) -> dict[str, Any] | None:
    """The latest step execution: its counts as committed."""
    rows = await fetch_all(
        pool,
        "SELECT JOB_EXECUTION_ID, STATUS, COMMIT_COUNT, READ_COUNT FROM BATCH_STEP_EXECUTION"
        " ORDER BY STEP_EXECUTION_ID DESC LIMIT 1",
    )
    if not rows:
        return None
    execution, status, commits, read = rows[0]
    return {"execution": execution, "status": status, "commits": commits, "read": read}


async def heartbeat_age(pool: Pool, execution_id: int) -> float:
    ((micros,),) = await fetch_all(
        pool,
        "SELECT TIMESTAMPDIFF(MICROSECOND, LAST_UPDATED, NOW(6)) FROM BATCH_JOB_EXECUTION"
        " WHERE JOB_EXECUTION_ID = %s",
        (execution_id,),
    )
    return micros / 1e6


async def until(
    check: Callable[[], Awaitable[Any]], *, within: float, what: str, every: float = 0.02
) -> Any:
    """Poll `check` until it returns something truthy; that value. Past `within`
    seconds, an AssertionError naming `what` it waited for."""
    async with waiting(within, what):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(every)


async def until_ready(
    url: str, process: asyncio.subprocess.Process, log_text: Callable[[], str]
) -> None:
    """Until `url` answers 200, while `process` lives (its log says why if it died);
    30 s at most."""
    async with aiohttp.ClientSession() as http, waiting(30, f"{url} answering 200"):
        while True:
            assert process.returncode is None, log_text()
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def age_execution(pool: Pool, execution_id: int, seconds: float) -> None:
    """The execution's LAST_UPDATED and its steps' `seconds` back: its lease as if that
    long had passed without a heartbeat or a chunk commit, instead of waiting for it."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        for table in ("BATCH_JOB_EXECUTION", "BATCH_STEP_EXECUTION"):
            await cur.execute(
                f"UPDATE {table} SET LAST_UPDATED = NOW(6) - INTERVAL %s SECOND"
                " WHERE JOB_EXECUTION_ID = %s",
                (seconds, execution_id),
            )


async def after_commits(run: RunningJob, commits: int) -> None:
    """Until `run` (in this process) has committed `commits` chunks, still running."""

    async def reached() -> bool:
        assert not run.task.done(), "the run ended too early"
        return run.progress.commits >= commits

    await until(reached, within=60, what=f"{commits} commits")


# ---- the CLI as a process ---------------------------------------------------------


@dataclass
class CliProcess:
    process: asyncio.subprocess.Process
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    async def wait(self, within: float = 120) -> int:
        async with waiting(within, "the process's exit"):
            return await self.process.wait()

    async def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        return await self.wait(30)


def cli_environment(settings: Settings, **env: object) -> dict[str, str]:
    """The environment of `python -m app`: the test's database and the loopback services,
    with `env` (settings by name) on top."""
    values: dict[str, object] = {
        "PATH": os.environ["PATH"],
        "DB_URL": settings.DB_URL,
        "JWT_SECRET_KEY": TEST_JWT_SECRET,
        "RETRY_BASE_SECONDS": "0.01",
        **env,
    }
    return {k: str(v) for k, v in values.items()}


@asynccontextmanager
async def cli(args: Sequence[str], env: Mapping[str, str], log: Path) -> AsyncIterator[CliProcess]:
    """`python -m app *args` run from the log's folder (no .env there); killed on exit if
    it still runs."""
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", *args,
            env=dict(env), cwd=log.parent, stdout=out, stderr=out,
        )  # fmt: skip
    running = CliProcess(process, log)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---- the fake peers as a process --------------------------------------------------


@dataclass
class PeerProcess:
    """`python -m app.devtools.fake_peers`: its answers cost the test's loop nothing."""

    store_url: str
    notification_url: str
    process: subprocess.Popen[bytes]

    async def control(self, **changes: object) -> dict[str, Any]:
        """POST /__control (shared by both services of the process); the state after."""
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.store_url + CONTROL_PATH, json=changes) as resp,
        ):
            body = await resp.json()
            assert resp.status == 200, body
            return body


def until_serving(
    process: subprocess.Popen[bytes], urls: Iterable[str], log: Path | None = None
) -> None:
    """Block until each URL answers a GET (any status below 400) while `process` lives."""
    deadline = time.monotonic() + 30
    for url in urls:
        while True:
            assert process.poll() is None, log.read_text(encoding="utf-8") if log else url
            assert time.monotonic() < deadline, f"nothing serves {url}"
            try:
                with urllib.request.urlopen(url, timeout=1):
                    break
            except OSError:
                time.sleep(0.05)


@contextmanager
def fake_peers_process(data: Mapping[str, Any], folder: Path) -> Iterator[PeerProcess]:
    """The fake peers serving `data` in a process of their own, until exit (a plain
    context manager: a module-scoped fixture may hold it)."""
    data_file = folder / "peers.json"
    data_file.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    store_port, notification_port = free_port(), free_port()
    log = folder / "fake_peers.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "app.devtools.fake_peers", "--data", str(data_file),
                "--store-port", str(store_port), "--notification-port", str(notification_port),
            ],
            stdout=out, stderr=out,
        )  # fmt: skip
    peers = PeerProcess(
        f"http://127.0.0.1:{store_port}", f"http://127.0.0.1:{notification_port}", process
    )
    try:
        until_serving(
            process, [peers.store_url + CONTROL_PATH, peers.notification_url + CONTROL_PATH], log
        )
        yield peers
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- the admin app, live on a port ------------------------------------------------
#
# The real `create_app` over a real launcher on MariaDB, served on a loopback port by an
# event loop of its own (a background thread), with the fake store and notification
# services beside it. Its own loop and thread let a test drive it the way a peer does:
# over TCP, from a synchronous client (schemathesis) or from the test's event loop
# (aiohttp), without the test's awaits and the server's work taking turns on one loop.

T = TypeVar("T")
_START_SECONDS = 30
_SHUTDOWN_GRACE_SECONDS = 5

# The fields of every error body (CONTRACTS section 4).
ERROR_FIELDS = frozenset({"status", "code", "message", "requestUrl", "timestamp"})


@dataclass
class LiveApp:
    url: str
    fake: FakePeers  # its `control` may be changed from the test's thread
    launcher: Launcher
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the app's loop (its pool belongs there) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def count(self, table: str) -> int:
        ((n,),) = self.run(fetch_all(self.launcher.resources.pool, f"SELECT COUNT(*) FROM {table}"))
        return int(n)


@contextmanager
def live_app(
    settings: Settings,
    stores: Mapping[int, str] | None = None,
    *,
    tokens: Mapping[int, list[str]] | None = None,
    broker: bool = False,
    **overrides: object,
) -> Iterator[LiveApp]:
    """The app on 127.0.0.1 (an ephemeral port) until exit; `overrides` are settings.

    Tokens must be signed with TEST_JWT_KEY, the fake peers' too. `tokens` are the push
    tokens of members the fake notification service knows. Without `broker` (publishing
    to RABBITMQ_VHOST) the health answer has the `db` component only. On exit, running
    jobs are asked to stop (as on SIGTERM) and the thread ends.
    """
    started: Future[tuple[LiveApp, asyncio.Event]] = Future()
    peer_data = {
        "stores": {str(k): v for k, v in (stores or {}).items()},
        "tokens": {str(k): v for k, v in (tokens or {}).items()},
    }

    async def serve() -> None:
        stop = asyncio.Event()
        try:
            async with run_fake_peers(peer_data, key=TEST_JWT_KEY) as fake:
                values: dict[str, object] = {
                    "DB_URL": settings.DB_URL,
                    "STORE_SERVICE_URL": fake.store_url,
                    "NOTIFICATION_SERVICE_URL": fake.notification_url,
                    **overrides,
                }
                app_settings = make_settings(**values)
                async with open_resources(app_settings, broker=broker) as resources:
                    launcher = Launcher(resources, JOBS)
                    runner = web.AppRunner(
                        create_app(launcher, resource_checks(resources)), access_log=None
                    )
                    await runner.setup()
                    try:
                        await web.TCPSite(runner, "127.0.0.1", 0).start()
                        host, port = runner.addresses[0][:2]
                        loop = asyncio.get_running_loop()
                        app = LiveApp(f"http://{host}:{port}", fake, launcher, loop)
                        started.set_result((app, stop))
                        await stop.wait()
                    finally:
                        fake.control.update({"latency_ms": 0, "fail_status": None})
                        await launcher.shutdown(_SHUTDOWN_GRACE_SECONDS)
                        await runner.cleanup()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="live-app", daemon=True)
    thread.start()
    app, stop = started.result(_START_SECONDS)
    try:
        yield app
    finally:
        app.loop.call_soon_threadsafe(stop.set)
        thread.join(_START_SECONDS)
        assert not thread.is_alive(), "the live app did not stop"


def is_error_body(body: object, status: int, path: str) -> bool:
    """Whether `body` is the platform's error JSON for this status and request path."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    error = body["error"]
    return (
        set(error) == ERROR_FIELDS
        and isinstance(error["status"], str)
        and error["status"].split(" ", 1)[0] == str(status)
        and isinstance(error["code"], str)
        and error["code"].isupper()
        and isinstance(error["message"], str)
        and error["message"] != ""
        and error["requestUrl"] == path
        and isinstance(error["timestamp"], str)
        and error["timestamp"] != ""
    )


# ---- the event loop ---------------------------------------------------------------


_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _run_delay() -> float:
    """Seconds the calling thread has waited, runnable, for a CPU since it started (Linux
    schedstat, second field); 0.0 where the kernel does not say."""
    try:
        return int(_SCHEDSTAT.read_bytes().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class LoopLag:
    """How late `sleep(0.01)` wakes up on the running loop, at worst, while it is entered,
    not counting the time the loop's thread waited for a CPU held by other processes.

    On a loaded machine the scheduler alone makes a wake-up late: at load 4.7 on 2 cores a
    wake-up came 0.118 s late with nothing on the loop. That delay is the kernel's run
    delay of the thread (runnable, not running); subtracted, what remains is what the loop
    did itself between two wake-ups: its own CPU work, or a wait it blocked on (a blocking
    call, the GIL held by another thread). Measured at loads 0 to 6 on the 2-core machine:
    at most 0.04 s with nothing blocking the loop (0.12 s unadjusted), and a 0.1 s JSON parse
    on the loop counted as 0.09-0.10 s whatever the load (0.2-1.0 s unadjusted). `worst_wall`
    keeps the unadjusted figure, for the message.
    """

    tick: float = 0.01
    worst: float = 0.0
    worst_wall: float = 0.0
    samples: int = 0
    gc_worst: float = 0.0  # the longest garbage collection meanwhile
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _gc_started: float = field(default=0.0, repr=False)

    async def _probe(self) -> None:
        while True:
            before, delay_before = time.perf_counter(), _run_delay()
            await asyncio.sleep(self.tick)
            late = time.perf_counter() - before - self.tick
            self.worst_wall = max(self.worst_wall, late)
            self.worst = max(self.worst, late - (_run_delay() - delay_before))
            self.samples += 1

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_worst = max(self.gc_worst, time.perf_counter() - self._gc_started)

    def __str__(self) -> str:
        return (
            f"loop stalled {self.worst:.3f} s ({self.worst_wall:.3f} s with the waits for"
            f" a CPU) in {self.samples} samples; longest collection {self.gc_worst:.3f} s"
        )

    async def __aenter__(self) -> LoopLag:
        # The test process holds the objects of every test run before: a full collection
        # walks them all (0.2 s late in a suite, seen as a stall of the code under test).
        # Frozen: what exists here, so that a collection meanwhile walks what the code
        # under test made.
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._probe())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        gc.callbacks.remove(self._on_gc)
        gc.unfreeze()


# ---- the log ----------------------------------------------------------------------


def skipped_items(
    records: Iterable[logging.LogRecord], step: str
) -> list[tuple[list[int], BaseException]]:
    """Per skipped chunk, the ids its "step ... skipped N items after <error>; member ids:
    [...]" WARNING names (checked to be in the message itself), and the error."""
    found = []
    for record in records:
        message = record.getMessage()
        if record.levelno != logging.WARNING or not message.startswith(f"step {step} skipped "):
            continue
        _, size, error, label, keys = record.args  # type: ignore[misc]
        assert message.endswith(f"; {label}: {keys}")
        assert len(keys) == size
        found.append((list(keys), error))
    return found
