"""The database edge: the sessions it opens, and several ordered streams merged into one
order."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing

import pytest
from asyncmy.errors import OperationalError
from asyncmy.pool import Pool

from app.config import Settings
from app.edges.db import (
    DatabaseUnavailable,
    DbPool,
    fetch_all,
    open_connection,
    open_pool,
    stream_merged,
    transaction,
)
from app.errors import is_availability_fault
from tests.reliability.support import until

ROWS = 600
# Row i has key i * 7 % 50: every key is spread over the whole id range, so each of
# the id-range queries below holds a share of every key.
ORDERED = "SELECT k, id FROM merge_rows WHERE {where} ORDER BY k"


@pytest.fixture
async def merge_rows(pool: Pool) -> Pool:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE IF EXISTS merge_rows")
        await cur.execute("CREATE TABLE merge_rows (id INT PRIMARY KEY, k INT NOT NULL)")
        await cur.execute(f"INSERT INTO merge_rows SELECT seq, seq * 7 % 50 FROM seq_1_to_{ROWS}")
    return pool


def queries(*wheres: str) -> list[tuple[str, list[object]]]:
    return [(ORDERED.format(where=where), []) for where in wheres]


async def test_sessions_read_committed_and_the_pool_s_dropped_by_the_server_when_silent(
    settings: Settings,
) -> None:
    database = dataclasses.replace(settings, DB_STALL_SECONDS=2.5).database
    sql = "SELECT @@tx_isolation, @@wait_timeout, @@GLOBAL.wait_timeout"
    async with open_pool(database) as pool:
        [(isolation, timeout, server_default)] = await fetch_all(pool, sql)
    assert (isolation, timeout) == ("READ-COMMITTED", 4)  # ceil(DB_STALL_SECONDS) + 1
    async with open_connection(database) as conn, conn.cursor() as cur:
        await cur.execute(sql)
        # A stream's connection sits idle while the other streams of a merge go on.
        assert await cur.fetchall() == (("READ-COMMITTED", server_default, server_default),)


@pytest.mark.parametrize(
    "wheres",
    [
        ["TRUE"],
        ["id < 200", "id >= 200 AND id < 400", "id >= 400"],
        ["id < 590", "id >= 590"],  # one stream ends long before the other
        ["id < 300", "id >= 300", "FALSE"],  # a stream without rows
    ],
)
@pytest.mark.parametrize("fetch_rows", [1, 7, 1000])
async def test_merged_streams_are_one_ordered_stream_never_splitting_a_key(
    merge_rows: Pool, settings: Settings, wheres: list[str], fetch_rows: int
) -> None:
    batches = [
        batch async for batch in stream_merged(settings.database, queries(*wheres), fetch_rows)
    ]

    merged = [tuple(row) for batch in batches for row in batch]
    assert [k for k, _ in merged] == sorted(k for k, _ in merged)
    expected = await fetch_all(merge_rows, "SELECT k, id FROM merge_rows ORDER BY k, id")
    assert sorted(merged) == [tuple(row) for row in expected]
    keys_per_batch = [{k for k, _ in batch} for batch in batches]
    assert sum(map(len, keys_per_batch)) == len(set().union(*keys_per_batch)) == 50
    assert all(batches)


async def connections(pool: Pool, settings: Settings) -> int:
    [(count,)] = await fetch_all(
        pool,
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s",
        (settings.database.target.database,),
    )
    return int(count)


async def until_connections(pool: Pool, settings: Settings, expected: int) -> None:
    """The server lists a closed connection a moment longer."""

    async def listed() -> bool:
        return await connections(pool, settings) == expected

    await until(listed, within=10, what=f"{expected} connections")


async def test_a_failing_query_fails_the_stream_and_closes_every_connection(
    merge_rows: Pool, settings: Settings
) -> None:
    before = await connections(merge_rows, settings)
    broken = [*queries("id < 300"), ("SELECT k, id FROM merge_rows ORDER BY no_such_column", [])]
    with pytest.raises(OperationalError, match="no_such_column"):
        async for _ in stream_merged(settings.database, broken, 10):
            pass
    await until_connections(merge_rows, settings, before)


async def test_leaving_early_closes_every_connection(merge_rows: Pool, settings: Settings) -> None:
    before = await connections(merge_rows, settings)
    async with aclosing(
        stream_merged(settings.database, queries("id < 300", "id >= 300"), 10)
    ) as rows:
        async for _ in rows:
            assert await connections(merge_rows, settings) == before + 2
            break
    await until_connections(merge_rows, settings, before)


@pytest.mark.parametrize("via", ["fetch_all", "transaction", "open_connection"])
async def test_a_cancel_that_meets_a_new_connection_is_never_lost(
    settings: Settings, via: str
) -> None:
    """asyncmy connects through asyncio.wait_for, which on Python 3.11 returns the
    connection when a cancel meets the connect's completion (CPython gh-86296): about 2%
    of these cancels, timed across a new connection's few milliseconds, were lost, and a
    reconciler whose cancel was lost kept `serve` from stopping on SIGTERM. Every cancel
    ends the operation."""
    database = dataclasses.replace(settings, DB_POOL_SIZE=2).database

    async def operation(pool: DbPool) -> None:
        if via == "fetch_all":
            await fetch_all(pool, "SELECT 1")
        elif via == "transaction":
            async with transaction(pool) as conn, conn.cursor() as cur:
                await cur.execute("SELECT 1")
        else:
            async with open_connection(database):
                pass

    lost = 0
    async with open_pool(database) as pool:
        for round_ in range(400):
            held = await pool.acquire()  # the pool's one connection: a new one is made
            task = asyncio.create_task(operation(pool))
            await asyncio.sleep((round_ % 40) * 0.0002)
            requested = task.cancel()
            try:
                await task
                lost += requested
            except asyncio.CancelledError:
                pass
            await pool.release(held)
            while pool.freesize > 1:  # the next round connects anew
                extra = await pool.acquire()
                extra.close()
                await pool.release(extra)
    assert lost == 0


async def test_a_killed_statement_is_an_availability_fault_named_where_it_arose(
    merge_rows: Pool, settings: Settings
) -> None:
    """KILL QUERY (MySQL 1317) is translated by the edge into DatabaseUnavailable, naming
    the database and the kind of fault (issue 26: before, a data fault); a failing query
    of the program's own (above) stays the driver's error."""
    target = settings.database.target
    async with (
        open_pool(settings.database) as pool,
        merge_rows.acquire() as locker,
        locker.cursor() as lock,
    ):
        await lock.execute("LOCK TABLES merge_rows WRITE")  # the query waits for it
        query = asyncio.ensure_future(fetch_all(pool, "SELECT COUNT(*) FROM merge_rows"))
        [(waiting,)] = await until(
            lambda: fetch_all(
                merge_rows,
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE INFO = 'SELECT COUNT(*) FROM merge_rows'",
            ),
            within=10,
            what="the query waiting for the table",
        )
        await fetch_all(merge_rows, f"KILL QUERY {int(waiting)}")
        with pytest.raises(DatabaseUnavailable) as raised:
            await query
        await lock.execute("UNLOCK TABLES")
    assert is_availability_fault(raised.value)
    assert str(raised.value) == (
        f"database {target.host}:{target.port}: statement interrupted:"
        " Query execution was interrupted (MySQL error 1317)"
    )
    assert isinstance(raised.value.__cause__, OperationalError)
