"""A TCP fault proxy that a test owns: the outages and stalls of a shared server, made
between the service and that server, so that the server itself is never touched.

    async with FaultProxy("127.0.0.1", 5672) as proxy:
        settings = through(settings, broker=proxy)
        proxy.stall()          # bytes held both ways; connections stay open
        proxy.resume()         # held bytes delivered; no stall, no throttle
        proxy.drop()           # every open connection reset (RST)
        proxy.refuse()         # not listening: connecting gives ECONNREFUSED
        await proxy.accept()   # listening again, on the same port
        proxy.throttle(4096)   # at most 4096 bytes/s per direction of each connection
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from app.config import Settings

_CHUNK = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the socket at once with a RST, dropping whatever is still buffered."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


@dataclasses.dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side, the target's side, the task pumping them."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None

    def reset(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                _reset(writer)

    def close(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                writer.close()


class FaultProxy:
    """Listens on `host` (an ephemeral port, `port`) and forwards each connection to
    `target_host:target_port`, in the mode that is live at the time of each chunk."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.connections = 0  # accepted, in all
        self.bytes_to_target = 0
        self.bytes_to_client = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._rate: float | None = None

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def __aenter__(self) -> FaultProxy:
        await self.accept()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.refuse()
        tasks = [link.task for link in self._links if link.task is not None]
        self.drop()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- modes ----------------------------------------------------------------------

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._rate = None
        self._flowing.set()

    def throttle(self, bytes_per_second: float) -> None:
        assert bytes_per_second > 0
        self._rate = bytes_per_second

    def drop(self) -> None:
        """Reset every open connection, both sides; new ones are still accepted."""
        for link in list(self._links):
            link.reset()
            if link.task is not None:
                link.task.cancel()

    def refuse(self) -> None:
        """Stop listening (open connections stay): a connect is refused by the kernel."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def accept(self) -> None:
        """Listen (again, on the same port once it has one)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accepted, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    @asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The server gone, as far as clients can tell: open connections reset, new ones
        refused; back (listening) on the way out."""
        self.refuse()
        self.drop()
        try:
            yield
        finally:
            await self.accept()

    # ---- forwarding -----------------------------------------------------------------

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        link.task = asyncio.create_task(self._serve(link, reader))
        self._links.add(link)

    async def _serve(self, link: _Link, client: asyncio.StreamReader) -> None:
        ended = False
        try:
            target, link.target = await asyncio.open_connection(*self.target)
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._pump(client, link.target, to_target=True))
                pumps.create_task(self._pump(target, link.client, to_target=False))
            ended = True
        except* OSError:
            pass  # one side reset (or the target unreachable): the other side is reset too
        finally:
            self._links.discard(link)
            if ended:
                link.close()
            else:
                link.reset()

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, to_target: bool
    ) -> None:
        """Copy `src` to `dst` until EOF, which is passed on (a half-close)."""
        while data := await src.read(
            _CHUNK if self._rate is None else max(1, int(self._rate / 20))
        ):
            await self._flowing.wait()
            dst.write(data)
            await dst.drain()
            if to_target:
                self.bytes_to_target += len(data)
            else:
                self.bytes_to_client += len(data)
            if self._rate is not None:
                await asyncio.sleep(len(data) / self._rate)
        if dst.can_write_eof():
            with suppress(OSError):
                dst.write_eof()


def through(
    settings: Settings, *, db: FaultProxy | None = None, broker: FaultProxy | None = None
) -> Settings:
    """`settings` with the database and/or the broker reached through a proxy."""
    changes: dict[str, object] = {}
    if db is not None:
        parts = urlsplit(settings.DB_URL.removeprefix("jdbc:"))
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{db.host}:{db.port}"
        changes["DB_URL"] = urlunsplit(parts._replace(netloc=netloc))
    if broker is not None:
        changes.update(RABBITMQ_HOST=broker.host, RABBITMQ_PORT=broker.port)
    return dataclasses.replace(settings, **changes)
