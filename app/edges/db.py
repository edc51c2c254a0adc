"""MySQL/MariaDB: the pool, transactions, and streaming reads with backpressure to the socket.

Every wait on the server is bounded by `DB_STALL_SECONDS`: a connect, a connection from
the pool, a whole transaction with its COMMIT, a query, each fetch of a stream. A server
that holds its answer longer (a stalled network, a hung server) raises DatabaseStalled,
an availability fault, with a WARNING that names what stalled as the outage's first
(`app.outages`); the connection it stalled on is closed, never handed out again.

The same bound translates the driver's errors that a later try may clear (a lost
connection, KILL QUERY, too many connections, a deadlock, a failover: `db_faults`) into
DatabaseUnavailable, where they arise; the others pass as asyncmy raised them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from bisect import bisect_left
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import asyncmy
from asyncmy.connection import Connection
from asyncmy.cursors import SSCursor
from asyncmy.errors import MySQLError, OperationalError
from asyncmy.pool import Pool

from app.concurrency import gather_first_error
from app.config import DatabaseSettings, DbTarget
from app.edges.db_faults import availability_kind
from app.edges.db_tls import tls_connect_args
from app.errors import AvailabilityError
from app.outages import OUTAGES

log = logging.getLogger(__name__)

# A paused stream may sit for minutes while a peer is retried; the server must not
# give up writing to it meanwhile (the default net_write_timeout is 60 s).
_STREAM_WRITE_TIMEOUT_SECONDS = 3600

# Closing the pool on shutdown: how long its connections may take to come back and say
# QUIT before the pool closes them without a word.
_POOL_CLOSE_SECONDS = 2.0
_POOL_TERMINATE_SECONDS = 1.0


# Every rule that must be serialized locks a row for it (a launch locks its job
# instance), so the gap locks of MariaDB's default REPEATABLE READ only cost: two
# launches of different instances took gap locks on the same range of
# BATCH_JOB_EXECUTION and deadlocked on each other's inserts.
# As variables, to share one SET with wait_timeout (SET TRANSACTION stands alone), and
# named per server: MariaDB runs only /*M! */, MySQL 8 only /*!80000 */ (MariaDB skips
# the executable comments of MySQL 5.7 and later).
_READ_COMMITTED = (
    "/*M! SESSION tx_isolation = 'READ-COMMITTED' */"
    " /*!80000 SESSION transaction_isolation = 'READ-COMMITTED' */"
)


# A login the server refused: access denied (to the server, to the database), a host not
# allowed, an authentication method the client cannot complete.
_REFUSED_CODES = frozenset({1044, 1045, 1698, 1130, 1251, 2059, 2061})
_UNKNOWN_DATABASE = 1049
# The server not reached, or gone during the handshake.
_UNREACHABLE_CODES = frozenset({2002, 2003, 2005, 2006, 2013})


class DatabaseUnavailable(AvailabilityError):
    """The database is away, interrupted the statement, or refuses for now (its driver's
    error is the cause)."""


class DatabaseStalled(DatabaseUnavailable):
    """The database did not answer within DB_STALL_SECONDS."""


def connect_error_line(exc: BaseException, target: DbTarget) -> str | None:
    """One line saying why the database at `target` cannot be used, for an error of
    connecting to it (unreachable, refused, unknown database, stalled); None otherwise."""
    if isinstance(exc, DatabaseStalled):
        return str(exc)
    if isinstance(exc, DatabaseUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__  # the driver's own error
    if not isinstance(exc, OperationalError) or not exc.args:
        return None
    code, message = exc.args[0], str(exc.args[-1])
    if code in _UNREACHABLE_CODES:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
            message = f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
        elif cause is not None:
            message = str(cause) or type(cause).__name__
        return f"cannot reach the database at {target.host}:{target.port}: {message}"
    if code in _REFUSED_CODES:
        return f"the database refused user {target.user!r}: {message}"
    if code == _UNKNOWN_DATABASE:
        name = target.database.replace("`", "``")
        return (
            f"unknown database {target.database!r}: create it first (CREATE DATABASE `{name}`"
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci), then `python -m app migrate`"
        )
    return None


@dataclass(frozen=True)
class StallDeadline:
    """How long the database may keep silent about one operation, and where it is."""

    seconds: float
    address: str  # host:port, named in the WARNING

    @classmethod
    def of(cls, settings: DatabaseSettings) -> StallDeadline:
        target = settings.target
        return cls(settings.stall_seconds, f"{target.host}:{target.port}")

    @property
    def dependency(self) -> str:
        """The database as its outages are named."""
        return f"database {self.address}"

    @asynccontextmanager
    async def bound(self, what: str) -> AsyncIterator[None]:
        """The body within the deadline, else DatabaseStalled naming `what` ("a query");
        the driver's availability faults as DatabaseUnavailable.

        A TimeoutError of the body's own passes as it is: only this deadline is a stall.
        """
        deadline = asyncio.timeout(self.seconds)
        try:
            async with deadline:
                yield
        except TimeoutError:
            if not deadline.expired():
                raise
            message = (
                f"database stalled: no answer within {self.seconds:g} s (DB_STALL_SECONDS)"
                f" to {what} on {self.address}"
            )
            OUTAGES.fault(self.dependency, message, log)
            raise DatabaseStalled(message, dependency=self.dependency) from None
        except MySQLError as exc:
            kind = availability_kind(exc)
            if kind is None:
                raise
            code, text = (exc.args[0], exc.args[-1]) if len(exc.args) > 1 else (0, exc)
            message = f"{self.dependency}: {kind}: {text}"
            if isinstance(code, int) and code:
                message += f" (MySQL error {code})"
            raise DatabaseUnavailable(message, dependency=self.dependency) from exc
        OUTAGES.ended(self.dependency)


class DbPool(Pool):
    """asyncmy's pool, with the deadline that its users' statements run under."""

    def __init__(self, deadline: StallDeadline, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline


def _server_wait_timeout(settings: DatabaseSettings) -> int:
    """How long the server keeps a pool connection that says nothing (its wait_timeout):
    a little longer than this side waits for any answer.

    A replica cut off mid-transaction (a partition, a stalled proxy) leaves its session
    open on the server, locks and all, until the server drops it; only then does the
    rollback free the rows for the replica that takes the execution over. A client that
    went silent had given up on the transaction DB_STALL_SECONDS in, so the server gives
    up a second later, within the deadline of whoever waits on those locks.
    """
    return math.ceil(settings.stall_seconds) + 1


async def _connect_args(
    settings: DatabaseSettings, database: str | None = None, *, wait_timeout: int | None = None
) -> dict[str, Any]:
    """asyncmy.connect's arguments; a pool uses them for every connection it makes. With
    `wait_timeout`, the server drops the connection after that long without a word."""
    target = settings.target
    timeout = "" if wait_timeout is None else f"SESSION wait_timeout = {wait_timeout}, "
    return {
        **await tls_connect_args(target),
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "password": target.password,
        "db": database or target.database,
        "autocommit": True,
        "charset": "utf8mb4",
        "init_command": f"SET {timeout}{_READ_COMMITTED}",
        # The TCP connect only; the handshake after it is under the deadline of its caller.
        "connect_timeout": settings.stall_seconds,
    }


@asynccontextmanager
async def open_pool(
    settings: DatabaseSettings, *, database: str | None = None
) -> AsyncIterator[DbPool]:
    """A pool of at most DB_POOL_SIZE connections, the first one made now; closed on exit
    within a few seconds, however the server fares."""
    deadline = StallDeadline.of(settings)
    wait_timeout = _server_wait_timeout(settings)
    pool = DbPool(
        deadline,
        minsize=1,
        maxsize=settings.pool_size,
        # Idle connections are closed here before the server drops them: asyncmy's idea
        # of the last use is a cursor's creation, never later than the server's.
        pool_recycle=wait_timeout - 1,
        **await _connect_args(settings, database, wait_timeout=wait_timeout),
    )
    try:
        async with deadline.bound("a new connection"), pool.cond:
            await pool.fill_free_pool(False)
        yield pool
    finally:
        await _close_pool(pool)


async def _close_pool(pool: DbPool) -> None:
    """Close the pool: its connections say QUIT as they come back; those not back within
    _POOL_CLOSE_SECONDS (stalled, or still held) are closed at once."""
    pool.close()
    try:
        async with asyncio.timeout(_POOL_CLOSE_SECONDS):
            await pool.wait_closed()
        return
    except TimeoutError:
        log.warning(
            "database pool on %s not closed within %g s; closing its connections at once",
            pool.deadline.address,
            _POOL_CLOSE_SECONDS,
        )
    pool.terminate()
    try:
        async with asyncio.timeout(_POOL_TERMINATE_SECONDS):
            await pool.wait_closed()
    except TimeoutError:
        log.warning("database pool on %s left unclosed", pool.deadline.address)


@asynccontextmanager
async def open_connection(settings: DatabaseSettings) -> AsyncIterator[Connection]:
    """A connection of its own, outside the pool, for a streaming read.

    A stream holds its connection for a whole step, paused while the pipeline is busy,
    and the chunks' commits need pool connections meanwhile: streams drawn from the
    pool would starve them (a few concurrent runs would hold every pool connection
    and wait on their own commits forever).
    """
    deadline = StallDeadline.of(settings)
    async with deadline.bound("a new connection"):
        conn = await _not_losing_a_cancel(
            asyncmy.connect(**await _connect_args(settings)), lambda c: c.close()
        )
    try:
        yield conn
    finally:
        try:
            async with deadline.bound("closing a connection"):
                await conn.ensure_closed()
        except DatabaseStalled:
            conn.close()


@asynccontextmanager
async def transaction(pool: DbPool) -> AsyncIterator[Connection]:
    """A connection inside BEGIN..COMMIT; ROLLBACK (and a dropped connection) on any error.

    The transaction, its body and its COMMIT included, is bounded by the pool's stall
    deadline, and so is the wait for the connection. A stalled or cancelled transaction
    is not rolled back (a ROLLBACK would wait on the same silence): its connection is
    closed, and the server rolls back what it had. Whether a COMMIT that got no answer
    took effect is unknown to this side.
    """
    deadline = pool.deadline
    async with deadline.bound("a connection from the pool"):
        conn = await _checkout(pool)
    try:
        async with deadline.bound("a transaction"):
            await conn.begin()
            try:
                yield conn
            except asyncio.CancelledError:
                conn.close()
                raise
            except BaseException:
                try:
                    await conn.rollback()
                except Exception:
                    # The connection is unusable; make sure the pool does not hand it out again.
                    conn.close()
                raise
            await conn.commit()
    except DatabaseStalled:
        conn.close()
        raise
    finally:
        await pool.release(conn)


async def fetch_all(pool: DbPool, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
    """The rows of one query, on a connection of the pool, within the stall deadline."""
    async with pool.deadline.bound("a query"):
        conn = await _checkout(pool)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall())
        except asyncio.CancelledError:
            conn.close()  # mid-statement: never back into the pool
            raise
        finally:
            await pool.release(conn)


async def _checkout(pool: DbPool) -> Connection:
    """A connection of the pool (`_not_losing_a_cancel`: it may connect a new one)."""
    return await _not_losing_a_cancel(pool.acquire(), pool.release)


async def _not_losing_a_cancel(
    connecting: Awaitable[Connection], give_back: Callable[[Connection], object]
) -> Connection:
    """The connection `connecting` gives, unless this task was cancelled meanwhile: then
    it is given back and CancelledError raised, even where the cancel was lost. asyncmy
    connects through asyncio.wait_for, which on Python 3.11 returns the connection when a
    cancel meets the connect's completion (CPython gh-86296, fixed in 3.12): a loop whose
    cancel was lost never stopped (`serve` hung on SIGTERM in its reconciler's stop)."""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    conn = await connecting
    if task is not None and task.cancelling() > before:
        give_back(conn)
        raise asyncio.CancelledError
    return conn


async def stream_rows(
    conn: Connection,
    sql: str,
    args: Sequence[Any],
    fetch_rows: int,
    deadline: StallDeadline,
    session: Sequence[str] = (),
) -> AsyncGenerator[list[tuple], None]:
    """Yield the rows of `sql` in lists of up to `fetch_rows`, from a server-side cursor.

    asyncmy keeps reading the socket into its buffer whenever the event loop runs,
    whether or not anyone consumes the rows: a slow consumer would pull the whole
    result set into memory. So the transport reads only while this generator
    fetches; while the caller holds a batch (and awaits a full queue), reading is
    paused and TCP flow control stops the server.

    `session`: statements run first on the connection (session variables the query needs).
    Each fetch is bounded by `deadline`, the query's first one too (a large sorted
    query sends its first rows only once sorted: seconds, within the deadline); the
    time the caller holds a batch is not.

    Leave it early only through `contextlib.aclosing`: closing it closes the connection
    rather than drain the rest of the result set. Give it a connection of
    `open_connection`'s, not the pool's: the stream holds it for the whole step.
    """
    cur = conn.cursor(SSCursor)
    try:
        async with deadline.bound("a statement of a streamed query"):
            await cur.execute(f"SET SESSION net_write_timeout = {_STREAM_WRITE_TIMEOUT_SECONDS}")
        for statement in session:
            async with deadline.bound("a statement of a streamed query"):
                await cur.execute(statement)
        async with deadline.bound("a streamed query"):
            await cur.execute(sql, args)
        while True:
            async with deadline.bound("a fetch of a streamed query"):
                rows = await cur.fetchmany(fetch_rows)
            if not rows:
                break
            _pause_reading(conn)
            try:
                yield rows
            finally:
                _resume_reading(conn)
        async with deadline.bound("the end of a streamed query"):
            await cur.close()
    except BaseException:
        # Abandon the rest of the result set instead of draining it: the pool
        # discards a closed connection.
        conn.close()
        raise


async def stream_merged(
    settings: DatabaseSettings,
    queries: Sequence[tuple[str, Sequence[Any]]],
    fetch_rows: int,
    *,
    session: Sequence[str] = (),
) -> AsyncGenerator[list[tuple], None]:
    """The rows of `queries`, each ordered by its first column, as one stream in that order.

    The queries start at once, each on a connection of its own, so that the server scans
    and sorts their shares in parallel instead of one query's whole result on one core.
    Each list yielded is sorted and holds every row of its keys: no key goes on into
    the next list. Backpressure is `stream_rows`' on every connection.
    """
    key = itemgetter(0)
    deadline = StallDeadline.of(settings)
    async with AsyncExitStack() as stack:
        streams = []
        for sql, args in queries:
            conn = await stack.enter_async_context(open_connection(settings))
            stream = stream_rows(conn, sql, args, fetch_rows, deadline, session)
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


def _transport(conn: Connection) -> asyncio.Transport | None:
    return conn._transport  # type: ignore[attr-defined, no-any-return]  # not in asyncmy's stub


def _pause_reading(conn: Connection) -> None:
    transport = _transport(conn)
    if transport is not None:
        transport.pause_reading()


def _resume_reading(conn: Connection) -> None:
    transport = _transport(conn)
    if transport is not None:
        transport.resume_reading()
