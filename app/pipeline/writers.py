"""Where a processed chunk goes: the database, the broker, or a dry run's file.

A writer has two moments. `deliver` runs as soon as the chunk is processed, beside other
chunks' deliveries, and is retried with the chunk's processing: effects outside the
database, safe to repeat. `write` runs in read order inside the chunk's transaction,
beside its counts and checkpoint. The checkpoint commits only after both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TextIO, TypeVar

from asyncmy.connection import Connection

from app.ports import Publisher

if TYPE_CHECKING:  # and imported where used: a job writing to the database loads no AMQP
    from app.edges.broker import OutgoingMessage

OutT = TypeVar("OutT")
OutT_contra = TypeVar("OutT_contra", contravariant=True)


class Writer(Protocol[OutT_contra]):
    async def deliver(self, output: OutT_contra) -> None: ...

    async def write(self, conn: Connection, output: OutT_contra) -> None: ...

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

    async def write(self, conn: Connection, output: OutT) -> None:
        await self.write_rows(conn, output)

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

    async def write(self, conn: Connection, output: list[OutgoingMessage]) -> None:
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

    async def write(self, conn: Connection, output: OutT) -> None:
        text = "".join(line + "\n" for line in self.lines(output))
        if text:
            await asyncio.to_thread(self._append, text)

    def _append(self, text: str) -> None:
        self.output.write(text)
        self.output.flush()

    def report(self) -> dict[str, int]:
        return {}
