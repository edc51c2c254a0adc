"""Shared fixtures: a private database on the machine's MariaDB, migrated, emptied per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.edges.db import open_pool
from app.outages import OUTAGES
from app.schema.migrate import created_tables, migrate
from tests.integration import rabbit
from tests.proxy import FaultProxy
from tests.settings import make_settings

DB_SERVER = os.environ.get("TEST_DB_SERVER", "mysql://127.0.0.1:3306")
# Emptied before each test: every table the migrations create, but the sequences (their
# one row holds the next id).
DATA_TABLES = tuple(
    table for table in created_tables(dev_schema=True) if not table.endswith("_SEQ")
)


# The slow modules that take longest, longest first (seconds each on 2026-12-07, alone):
# recovery 57, unattended 56, garbage 43, classes 31, operator 26.
LONGEST_FIRST = (
    "tests/reliability/test_recovery.py",
    "tests/reliability/test_unattended.py",
    "tests/reliability/test_faults_garbage.py",
    "tests/reliability/test_faults_classes.py",
    "tests/reliability/test_operator.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow modules first, the longest of them (LONGEST_FIRST) before the others:
    under pytest-xdist's `--dist loadfile --no-loadscope-reorder` (the slow lane of
    scripts/test), each module goes whole to one worker, in this order, so the longest
    start at once and the short ones fill in around them (without
    `--no-loadscope-reorder`, xdist orders modules by their number of tests). Without
    xdist, only the order changes."""
    slow = {module(item) for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = module(item)
        longest = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return name not in slow, longest

    items.sort(key=rank)


def module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


async def _admin(sql: str) -> None:
    async with (
        open_pool(make_settings(DB_URL=f"{DB_SERVER}/mysql").database) as pool,
        pool.acquire() as conn,
        conn.cursor() as cur,
    ):
        await cur.execute(sql)


@pytest.fixture(autouse=True)
def no_outage_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no outage open (`app.outages` keeps one registry per process):
    a test's outage left open would fold the next test's first WARNING into it."""
    monkeypatch.setattr(OUTAGES, "_open", {})


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A database of this test session's own, so parallel sessions never meet."""
    name = f"cpb_test_{os.getpid()}"
    asyncio.run(_admin(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4"))

    async def prepare() -> None:
        async with open_pool(make_settings(DB_URL=f"{DB_SERVER}/{name}").database) as pool:
            await migrate(pool, dev_schema=True)

    asyncio.run(prepare())
    yield name
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture
def settings(database: str) -> Settings:
    return make_settings(DB_URL=f"{DB_SERVER}/{database}")


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Pool]:
    async with open_pool(settings.database) as pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SET FOREIGN_KEY_CHECKS = 0")
            for table in DATA_TABLES:
                await cur.execute(f"TRUNCATE TABLE {table}")
            await cur.execute("SET FOREIGN_KEY_CHECKS = 1")
        yield pool


@pytest.fixture(scope="module")
def vhost(request: pytest.FixtureRequest) -> Iterator[str]:
    """A RabbitMQ vhost of the test module's own, deleted with everything in it."""
    with rabbit.temporary_vhost(request.module.__name__.rsplit(".", 1)[-1]) as name:
        yield name


@pytest.fixture
async def queue(vhost: str) -> str:
    """The notification service's queue, declared as it declares it, bound and empty;
    the vhost it lives in."""
    await rabbit.declare_consumer_queue(vhost)
    return vhost


@pytest.fixture
async def db_proxy(settings: Settings) -> AsyncIterator[FaultProxy]:
    """A fault proxy of the test's own in front of the database server: the service gets
    there with `through(settings, db=db_proxy)`."""
    async with FaultProxy(settings.database.target.host, settings.database.target.port) as proxy:
        yield proxy


@pytest.fixture
async def broker_proxy() -> AsyncIterator[FaultProxy]:
    """A fault proxy of the test's own in front of RabbitMQ: the service gets there with
    `through(settings, broker=broker_proxy)`."""
    broker = make_settings()
    async with FaultProxy(broker.RABBITMQ_HOST, broker.RABBITMQ_PORT) as proxy:
        yield proxy
