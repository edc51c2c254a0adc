"""MySQL/MariaDB: the pool, transactions, and a streaming read with backpressure to the socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncmy
from asyncmy.connection import Connection
from asyncmy.cursors import SSCursor
from asyncmy.pool import Pool

from app.config import Settings

# A paused stream may sit for minutes while a peer is retried; the server must not
# give up writing to it meanwhile (the default net_write_timeout is 60 s).
_STREAM_WRITE_TIMEOUT_SECONDS = 3600


@asynccontextmanager
async def open_pool(settings: Settings, *, database: str | None = None) -> AsyncIterator[Pool]:
    target = settings.db
    pool = await asyncmy.create_pool(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        db=database or target.database,
        minsize=1,
        maxsize=settings.DB_POOL_SIZE,
        autocommit=True,
        charset="utf8mb4",
        pool_recycle=3600,
    )
    try:
        yield pool
    finally:
        pool.close()
        await pool.wait_closed()


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
    rather than drain the rest of the result set.
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


def _pause_reading(conn: Connection) -> None:
    transport = conn._transport
    if transport is not None:
        transport.pause_reading()


def _resume_reading(conn: Connection) -> None:
    transport = conn._transport
    if transport is not None:
        transport.resume_reading()
