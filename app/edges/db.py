"""MySQL/MariaDB: the pool, transactions, and streaming reads with backpressure to the socket."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from operator import itemgetter
from typing import Any

import asyncmy
from asyncmy.connection import Connection
from asyncmy.cursors import SSCursor
from asyncmy.pool import Pool

from app.concurrency import gather_first_error
from app.config import DatabaseSettings
from app.edges.db_tls import tls_connect_args

# A paused stream may sit for minutes while a peer is retried; the server must not
# give up writing to it meanwhile (the default net_write_timeout is 60 s).
_STREAM_WRITE_TIMEOUT_SECONDS = 3600


# Every rule that must be serialized locks a row for it (a launch locks its job
# instance), so the gap locks of MariaDB's default REPEATABLE READ only cost: two
# launches of different instances took gap locks on the same range of
# BATCH_JOB_EXECUTION and deadlocked on each other's inserts.
_ISOLATION = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"


async def _connect_args(settings: DatabaseSettings, database: str | None = None) -> dict[str, Any]:
    """asyncmy.connect's arguments; a pool uses them for every connection it makes."""
    target = settings.target
    return {
        **await tls_connect_args(target),
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "password": target.password,
        "db": database or target.database,
        "autocommit": True,
        "charset": "utf8mb4",
        "init_command": _ISOLATION,
    }


@asynccontextmanager
async def open_pool(
    settings: DatabaseSettings, *, database: str | None = None
) -> AsyncIterator[Pool]:
    pool = await asyncmy.create_pool(
        **await _connect_args(settings, database),
        minsize=1,
        maxsize=settings.pool_size,
        pool_recycle=3600,
    )
    try:
        yield pool
    finally:
        pool.close()
        await pool.wait_closed()


@asynccontextmanager
async def open_connection(settings: DatabaseSettings) -> AsyncIterator[Connection]:
    """A connection of its own, outside the pool, for a streaming read.

    A stream holds its connection for a whole step, paused while the pipeline is busy,
    and the chunks' commits need pool connections meanwhile: streams drawn from the
    pool would starve them (a few concurrent runs would hold every pool connection
    and wait on their own commits forever).
    """
    conn = await asyncmy.connect(**await _connect_args(settings))
    try:
        yield conn
    finally:
        await conn.ensure_closed()


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[Connection]:
    """A connection inside BEGIN..COMMIT; ROLLBACK (and a dropped connection) on any error."""
    async with pool.acquire() as conn:
        await conn.begin()
        try:
            yield conn
        except BaseException:
            try:
                await conn.rollback()
            except Exception:
                # The connection is unusable; make sure the pool does not hand it out again.
                conn.close()
            raise
        await conn.commit()


async def fetch_all(pool: Pool, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, args)
        return list(await cur.fetchall())


async def stream_rows(
    conn: Connection, sql: str, args: Sequence[Any], fetch_rows: int
) -> AsyncIterator[list[tuple]]:
    """Yield the rows of `sql` in lists of up to `fetch_rows`, from a server-side cursor.

    asyncmy keeps reading the socket into its buffer whenever the event loop runs,
    whether or not anyone consumes the rows: a slow consumer would pull the whole
    result set into memory. So the transport reads only while this generator
    fetches; while the caller holds a batch (and awaits a full queue), reading is
    paused and TCP flow control stops the server.

    Leave it early only through `contextlib.aclosing`: closing it closes the connection
    rather than drain the rest of the result set. Give it a connection of
    `open_connection`'s, not the pool's: the stream holds it for the whole step.
    """
    cur = conn.cursor(SSCursor)
    try:
        await cur.execute(f"SET SESSION net_write_timeout = {_STREAM_WRITE_TIMEOUT_SECONDS}")
        await cur.execute(sql, args)
        while rows := await cur.fetchmany(fetch_rows):
            _pause_reading(conn)
            try:
                yield rows
            finally:
                _resume_reading(conn)
    except BaseException:
        # Abandon the rest of the result set instead of draining it: the pool
        # discards a closed connection.
        conn.close()
        raise
    await cur.close()


async def stream_merged(
    settings: DatabaseSettings, queries: Sequence[tuple[str, Sequence[Any]]], fetch_rows: int
) -> AsyncIterator[list[tuple]]:
    """The rows of `queries`, each ordered by its first column, as one stream in that order.

    The queries start at once, each on a connection of its own, so that the server scans
    and sorts their shares in parallel instead of one query's whole result on one core.
    Each list yielded is sorted and holds every row of its keys: no key goes on into
    the next list. Backpressure is `stream_rows`' on every connection.
    """
    key = itemgetter(0)
    async with AsyncExitStack() as stack:
        streams = []
        for sql, args in queries:
            conn = await stack.enter_async_context(open_connection(settings))
            stream = stream_rows(conn, sql, args, fetch_rows)
            streams.append(await stack.enter_async_context(aclosing(stream)))
        pending: list[list[tuple]] = [[] for _ in streams]
        live = list(range(len(streams)))  # the streams not yet exhausted
        due = list(live)  # the streams to fetch from before the bound can move
        while live:
            fetched = await gather_first_error(*(anext(streams[i], None) for i in due))
            for i, rows in zip(due, fetched, strict=True):
                if rows is None:
                    live.remove(i)
                else:
                    pending[i] += rows
            # Below the smallest last key of the live streams, every row has arrived.
            bound = min((pending[i][-1][0] for i in live), default=None)
            out: list[tuple] = []
            for i, rows in enumerate(pending):
                cut = len(rows) if bound is None else bisect_left(rows, bound, key=key)
                out += rows[:cut]
                pending[i] = rows[cut:]
            if out:
                out.sort(key=key)  # merges the sorted runs
                yield out
            due = [i for i in live if not pending[i] or pending[i][-1][0] == bound]


def _pause_reading(conn: Connection) -> None:
    transport = conn._transport
    if transport is not None:
        transport.pause_reading()


def _resume_reading(conn: Connection) -> None:
    transport = conn._transport
    if transport is not None:
        transport.resume_reading()
