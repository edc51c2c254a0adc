"""The database edge under a stall (issue 13): the test's own proxy holds every byte between
the pool and MariaDB, connections open. Each wait ends after DB_STALL_SECONDS with
DatabaseStalled and one WARNING naming it; the connection it stalled on is closed, never
handed out again; once the bytes flow, the same pool works on."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator

import pytest
from asyncmy.pool import Pool

from app.config import Settings
from app.edges.db import (
    DatabaseStalled,
    DbPool,
    StallDeadline,
    fetch_all,
    open_connection,
    open_pool,
    stream_rows,
    transaction,
)
from tests.proxy import FaultProxy, through
from tests.reliability.support import until

STALL_SECONDS = 1


@pytest.fixture
async def scratch(pool: Pool) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("CREATE TABLE IF NOT EXISTS stall_items (item INT NOT NULL)")
        await cur.execute("TRUNCATE TABLE stall_items")


@pytest.fixture
def stalling(settings: Settings, db_proxy: FaultProxy) -> Settings:
    """The test's settings, through the proxy, with a stall deadline of 1 s."""
    return through(dataclasses.replace(settings, DB_STALL_SECONDS=STALL_SECONDS), db=db_proxy)


@pytest.fixture
async def stalling_pool(stalling: Settings) -> AsyncIterator[DbPool]:
    async with open_pool(stalling.database) as pool:
        yield pool


def stalled(what: str, proxy: FaultProxy) -> str:
    return (
        f"database stalled: no answer within {STALL_SECONDS} s (DB_STALL_SECONDS) to {what}"
        f" on 127.0.0.1:{proxy.port}"
    )


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "app.edges.db" and r.levelno == logging.WARNING
    ]


async def items(pool: Pool) -> list[int]:
    return [row[0] for row in await fetch_all(pool, "SELECT item FROM stall_items ORDER BY item")]


async def insert(pool: DbPool, item: int) -> None:
    async with transaction(pool) as conn, conn.cursor() as cur:
        await cur.execute("INSERT INTO stall_items (item) VALUES (%s)", (item,))


async def test_a_stalled_transaction_closes_its_connection_and_the_pool_works_on(
    scratch: None,
    pool: Pool,
    stalling_pool: DbPool,
    db_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(DatabaseStalled) as raised:
        async with transaction(stalling_pool) as conn, conn.cursor() as cur:
            await cur.execute("INSERT INTO stall_items (item) VALUES (1)")
            db_proxy.stall()
            await cur.execute("INSERT INTO stall_items (item) VALUES (2)")
    assert str(raised.value) == stalled("a transaction", db_proxy)
    assert warnings_of(caplog) == [stalled("a transaction", db_proxy)]
    assert not conn.connected  # closed, not rolled back: a ROLLBACK would stall too
    assert (stalling_pool.size, stalling_pool.freesize) == (0, 0)  # not back in the pool

    db_proxy.resume()
    await insert(stalling_pool, 3)
    # The server rolled the stalled transaction back when its connection closed.
    assert await items(pool) == [3]
    assert (stalling_pool.size, stalling_pool.freesize) == (1, 1)


async def test_a_commit_that_stalled_may_still_take_effect_when_the_bytes_flow(
    scratch: None, pool: Pool, stalling_pool: DbPool, db_proxy: FaultProxy
) -> None:
    """What DatabaseStalled on a COMMIT means: the outcome is unknown. The COMMIT left
    before the stall was noticed (here: held by the proxy, as a network would), so it
    arrives once the bytes flow, and the transaction commits after all."""

    with pytest.raises(DatabaseStalled, match="to a transaction"):
        async with transaction(stalling_pool) as conn, conn.cursor() as cur:
            await cur.execute("INSERT INTO stall_items (item) VALUES (1)")
            db_proxy.stall()  # the body ends: COMMIT is what stalls
    assert not conn.connected
    assert await items(pool) == []

    db_proxy.resume()

    async def committed() -> bool:
        return await items(pool) == [1]

    await until(committed, within=10, what="the held COMMIT applied")


async def test_the_server_drops_a_transaction_cut_off_mid_way_and_frees_its_locks(
    scratch: None, pool: Pool, settings: Settings, stalling_pool: DbPool, db_proxy: FaultProxy
) -> None:
    """A replica cut off mid-transaction leaves its session open on the server, row locks
    and all. The server drops it a second after this side gave up (its wait_timeout), so
    whoever waits on those rows (the replica that takes an execution over) gets them
    within its own deadline instead of stalling behind a session nobody will end."""
    await insert(stalling_pool, 1)
    with pytest.raises(DatabaseStalled, match="to a transaction"):
        async with transaction(stalling_pool) as conn, conn.cursor() as cur:
            await cur.execute("UPDATE stall_items SET item = 2 WHERE item = 1")
            db_proxy.stall()  # the next statement never reaches the server
            await cur.execute("SELECT 1")

    waiting = dataclasses.replace(settings, DB_STALL_SECONDS=STALL_SECONDS + 4)
    async with (
        open_pool(waiting.database) as direct,
        transaction(direct) as conn,
        conn.cursor() as cur,
    ):
        # Waits on the row lock of the session the proxy holds open.
        updated = await cur.execute("UPDATE stall_items SET item = 3 WHERE item = 1")
    assert updated == 1  # the cut-off UPDATE was rolled back
    assert await items(pool) == [3]


async def test_a_stalled_query_raises_and_the_pool_works_on(
    scratch: None,
    stalling_pool: DbPool,
    db_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await insert(stalling_pool, 1)
    db_proxy.stall()
    with pytest.raises(DatabaseStalled) as raised:
        await fetch_all(stalling_pool, "SELECT item FROM stall_items")
    assert str(raised.value) == stalled("a query", db_proxy)
    assert warnings_of(caplog) == [stalled("a query", db_proxy)]
    assert (stalling_pool.size, stalling_pool.freesize) == (0, 0)

    db_proxy.resume()
    assert await items(stalling_pool) == [1]


async def test_no_connection_within_the_deadline_is_a_stall(
    stalling_pool: DbPool, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool's only connection is busy, and the new one it makes gets no handshake."""
    caplog.set_level(logging.INFO)
    async with stalling_pool.acquire():
        db_proxy.stall()
        with pytest.raises(DatabaseStalled) as raised:
            await fetch_all(stalling_pool, "SELECT 1")
        assert str(raised.value) == stalled("a query", db_proxy)
        with pytest.raises(DatabaseStalled) as raised:
            async with transaction(stalling_pool):
                pass
        assert str(raised.value) == stalled("a connection from the pool", db_proxy)
    # One outage, one WARNING: the second stall is counted, not logged (issue 26)...
    assert warnings_of(caplog) == [stalled("a query", db_proxy)]
    db_proxy.resume()
    assert await fetch_all(stalling_pool, "SELECT 1") == [(1,)]
    # ... and one line as the database answers again.
    [back] = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert re.fullmatch(
        rf"database 127\.0\.0\.1:{db_proxy.port} back after \d+\.\d s \(2 faults\)", back
    )


async def test_a_stalled_fetch_of_a_stream_raises_and_closes_the_stream(
    pool: Pool, stalling: Settings, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    deadline = StallDeadline.of(stalling.database)
    got: list[int] = []
    async with open_connection(stalling.database) as conn:
        rows = stream_rows(conn, "SELECT seq FROM seq_1_to_100000", (), 10, deadline)
        with pytest.raises(DatabaseStalled) as raised:
            async for batch in rows:
                got += [row[0] for row in batch]
                db_proxy.stall()
        assert not conn.connected
    assert str(raised.value) == stalled("a fetch of a streamed query", db_proxy)
    assert warnings_of(caplog) == [stalled("a fetch of a streamed query", db_proxy)]
    # The first batch, and as much as had arrived before the stall, never past the end.
    assert got == list(range(1, len(got) + 1)) and 10 <= len(got) < 100_000


async def test_closing_the_pool_during_a_stall_closes_even_a_connection_still_held(
    stalling: Settings, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_pool(stalling.database) as pool:
        held = await pool.acquire()  # never given back, as by a task that hangs
        await fetch_all(pool, "SELECT 1")  # a second connection, free
        db_proxy.stall()
    # Bounded: before, `wait_closed` waited for the held connection forever.
    assert not held.connected
    assert (pool.size, pool.freesize) == (0, 0)
    assert warnings_of(caplog) == [
        f"database pool on 127.0.0.1:{db_proxy.port} not closed within 2 s;"
        " closing its connections at once"
    ]


async def test_a_stalled_connect_is_a_stall(
    stalling: Settings, db_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    db_proxy.stall()
    with pytest.raises(DatabaseStalled) as raised:
        async with open_connection(stalling.database):
            pass
    assert str(raised.value) == stalled("a new connection", db_proxy)
    with pytest.raises(DatabaseStalled) as raised:
        async with open_pool(stalling.database):
            pass
    assert str(raised.value) == stalled("a new connection", db_proxy)
    assert warnings_of(caplog) == [stalled("a new connection", db_proxy)]  # one outage
