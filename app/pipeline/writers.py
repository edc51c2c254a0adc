"""Where a processed chunk goes: the database, the broker, or a dry run's file.

A writer has two moments. `deliver` runs as soon as the chunk is processed, beside other
chunks' deliveries, and is retried with the chunk's processing: effects outside the
database, safe to repeat. `write` runs in read order inside the chunk's transaction,
beside its counts and checkpoint, with the range of keys the chunk (or part) covers.
The checkpoint commits only after both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any, Generic, Protocol, TextIO, TypeVar

from asyncmy.connection import Connection
from asyncmy.cursors import Cursor

from app.pipeline.chunk import KeyRange
from app.ports import Publisher

if TYPE_CHECKING:  # and imported where used: a job writing to the database loads no AMQP
    from app.edges.broker import OutgoingMessage

OutT = TypeVar("OutT")
_INSERT_ROWS = 1000  # rows per INSERT statement: well under max_allowed_packet
OutT_contra = TypeVar("OutT_contra", contravariant=True)


class Writer(Protocol[OutT_contra]):
    async def deliver(self, output: OutT_contra) -> None: ...

    async def write(self, conn: Connection, output: OutT_contra, keys: KeyRange) -> None: ...

    def report(self) -> dict[str, int]:
        """What it has done so far, kept in the step's context (empty: nothing to say)."""
        ...


@dataclass(frozen=True)
class DatabaseWriter(Generic[OutT]):
    """The chunk's rows, written in the chunk's own transaction: they commit with the
    checkpoint or not at all."""

    write_rows: Callable[[Connection, OutT], Awaitable[None]]

    async def deliver(self, output: OutT) -> None:
        return None

    async def write(self, conn: Connection, output: OutT, keys: KeyRange) -> None:
        await self.write_rows(conn, output)

    def report(self) -> dict[str, int]:
        return {}


@dataclass
class KeyRangeWriter:
    """Replaces the rows of each chunk's key range in a table, in the chunk's transaction:
    the rows of `scope` (column = value: the run's date, say) whose `key` lies in the
    range are deleted, then the chunk's rows inserted. A rerun or a restart leaves
    exactly the rows a first run writes, items no longer read included; a skipped
    item's range is no part's, so what an earlier run wrote for it stays.

    Output rows are the values of `columns`; the scope's values are added to each. The
    deletes are left out when the scope had no row as the run's first write began.
    """

    table: str
    key: str
    columns: Sequence[str]
    scope: Mapping[str, Any]
    _replace: bool | None = field(default=None, init=False)

    async def deliver(self, output: Sequence[Sequence[Any]]) -> None:
        return None

    async def write(
        self, conn: Connection, output: Sequence[Sequence[Any]], keys: KeyRange
    ) -> None:
        where = " AND ".join(f"{column} = %s" for column in self.scope)
        scope = list(self.scope.values())
        async with conn.cursor() as cur:
            if self._replace is None:
                await cur.execute(f"SELECT 1 FROM {self.table} WHERE {where} LIMIT 1", scope)
                self._replace = await cur.fetchone() is not None
            if self._replace:
                sql, args = [f"DELETE FROM {self.table} WHERE {where}"], list(scope)
                for condition, bound in ((" > %s", keys.after), (" <= %s", keys.upto)):
                    if bound is not None:
                        sql.append(f" AND {self.key}{condition}")
                        args.append(bound)
                await cur.execute("".join(sql), args)
            if output:
                await self._insert(cur, conn.literal, output, scope)

    async def _insert(
        self,
        cur: Cursor,
        literal: Callable[[Any], str],
        output: Sequence[Sequence[Any]],
        scope: list[Any],
    ) -> None:
        """The multi-row INSERTs `executemany` would send, formatted here column by column:
        a column of integers as their digits, a column of one other type escaped by the
        connection once per distinct value rather than once per row (what it saves the
        stats job: the bench's figures, docs/performance.md)."""
        head = f"INSERT INTO {self.table} ({', '.join([*self.columns, *self.scope])}) VALUES ("
        fixed = [literal(value) for value in scope]
        for start in range(0, len(output), _INSERT_ROWS):
            rows = output[start : start + _INSERT_ROWS]
            texts: list[Iterable[str]] = []
            for values in zip(*rows, strict=True):  # a column
                kinds = set(map(type, values))
                if kinds == {int}:
                    texts.append(map(str, values))
                elif len(kinds) == 1:  # equal values of one type: one text
                    quoted = {value: literal(value) for value in set(values)}
                    texts.append(map(quoted.__getitem__, values))
                else:
                    texts.append(map(literal, values))
            texts += [repeat(text, len(rows)) for text in fixed]
            await cur.execute(head + "),(".join(map(",".join, zip(*texts, strict=True))) + ")")

    def report(self) -> dict[str, int]:
        return {}


@dataclass
class PublishingWriter:
    """The chunk's messages, published with confirms: the checkpoint commits once the
    broker has confirmed every one. What the broker confirmed leaves the list, so a retry
    of the chunk publishes only the rest (the messages already made: the peers are not
    asked again)."""

    broker: Publisher
    published: int = 0  # publishes tried, republished ones included
    confirmed: int = 0

    async def deliver(self, output: list[OutgoingMessage]) -> None:
        if not output:
            return
        from app.edges.broker import BrokerUnavailable, PublishRefused

        total = len(output)
        self.published += total
        try:
            lost = await self.broker.publish(output)
        except PublishRefused as refused:
            self._keep_unconfirmed(output, refused.unsent)
            raise
        self._keep_unconfirmed(output, lost)
        if lost:
            raise BrokerUnavailable(
                f"broker: {len(lost)} of {total} messages lost their confirmation",
                dependency=self.broker.dependency,
            )

    def _keep_unconfirmed(
        self, output: list[OutgoingMessage], unconfirmed: list[OutgoingMessage]
    ) -> None:
        self.confirmed += len(output) - len(unconfirmed)
        output[:] = unconfirmed

    async def write(self, conn: Connection, output: list[OutgoingMessage], keys: KeyRange) -> None:
        return None

    def report(self) -> dict[str, int]:
        return {"published": self.published, "confirmed": self.confirmed}


@dataclass(frozen=True)
class DryRunWriter(Generic[OutT]):
    """The chunk's output as lines of UTF-8 text (`lines` makes them: a message's JSON
    body, a row as JSON), in read order, off the event loop; nothing is stored or sent."""

    output: TextIO
    lines: Callable[[OutT], Iterable[str]]

    async def deliver(self, output: OutT) -> None:
        return None

    async def write(self, conn: Connection, output: OutT, keys: KeyRange) -> None:
        text = "".join(line + "\n" for line in self.lines(output))
        if text:
            await asyncio.to_thread(self._append, text)

    def _append(self, text: str) -> None:
        self.output.write(text)
        self.output.flush()

    def report(self) -> dict[str, int]:
        return {}
