"""The fault proxy of the tests, against a tiny echo server of its own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.proxy import FaultProxy, through
from tests.settings import make_settings
from tests.waits import waiting


class Echo:
    """Echoes each connection's bytes until EOF, then closes it; keeps what it received."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.arrived = asyncio.Event()  # set on every chunk received
        self.reset = asyncio.Event()  # set when a connection was reset
        self._tasks: set[asyncio.Task[None]] = set()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._echo(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += data
                self.arrived.set()
                writer.write(data)
                await writer.drain()
        except ConnectionResetError:
            self.reset.set()
        finally:
            writer.close()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, FaultProxy]]:
    """An echo server and a proxy in front of it."""
    server = Echo()
    async with server.serving() as port, FaultProxy("127.0.0.1", port) as proxy:
        yield server, proxy


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(proxy.host, proxy.port)


async def test_bytes_go_through_exactly_both_ways_and_eof_is_passed_on(
    echo: tuple[Echo, FaultProxy],
) -> None:
    server, proxy = echo
    payload = os.urandom(3 * 1024 * 1024 + 17)
    reader, writer = await connect(proxy)
    writer.write(payload)
    writer.write_eof()
    # The echo server closes after the client's EOF: the client then reads EOF too.
    assert await reader.read() == payload
    writer.close()
    await writer.wait_closed()
    assert bytes(server.received) == payload
    assert (proxy.connections, proxy.bytes_to_target, proxy.bytes_to_client) == (
        1,
        len(payload),
        len(payload),
    )


async def test_a_stall_holds_bytes_without_closing_and_resume_delivers_them(
    echo: tuple[Echo, FaultProxy],
) -> None:
    server, proxy = echo
    reader, writer = await connect(proxy)
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"

    proxy.stall()
    server.arrived.clear()
    writer.write(b"held")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(server.arrived.wait(), 0.5)
    assert bytes(server.received) == b"before"
    assert proxy.open_connections == 1
    assert not reader.at_eof()

    proxy.resume()
    assert await reader.readexactly(4) == b"held"
    assert bytes(server.received) == b"beforeheld"
    writer.close()
    await writer.wait_closed()


async def test_a_stall_holds_the_way_back_too(echo: tuple[Echo, FaultProxy]) -> None:
    server, proxy = echo
    reader, writer = await connect(proxy)
    writer.write(b"x")
    await server.arrived.wait()  # through before the stall; its echo comes back after it
    proxy.stall()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    proxy.resume()
    assert await reader.readexactly(1) == b"x"
    writer.close()
    await writer.wait_closed()


async def test_drop_resets_both_sides_and_new_connections_still_work(
    echo: tuple[Echo, FaultProxy],
) -> None:
    server, proxy = echo
    reader, writer = await connect(proxy)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"

    proxy.drop()
    with pytest.raises(ConnectionResetError):
        await reader.read(1)
    writer.close()
    assert proxy.open_connections == 0
    async with waiting(10, "the target's side reset too"):
        await server.reset.wait()

    again, again_writer = await connect(proxy)
    again_writer.write(b"b")
    assert await again.readexactly(1) == b"b"
    again_writer.close()
    await again_writer.wait_closed()
    assert proxy.connections == 2


async def test_drop_during_a_stall_resets_held_connections(echo: tuple[Echo, FaultProxy]) -> None:
    _, proxy = echo
    reader, writer = await connect(proxy)
    proxy.stall()
    writer.write(b"held")
    await writer.drain()
    proxy.drop()
    with pytest.raises(ConnectionResetError):
        await reader.read(1)
    writer.close()
    assert proxy.open_connections == 0


async def test_refuse_stops_listening_and_accept_listens_again_on_the_same_port(
    echo: tuple[Echo, FaultProxy],
) -> None:
    _, proxy = echo
    port = proxy.port
    open_reader, open_writer = await connect(proxy)

    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        await connect(proxy)
    open_writer.write(b"still")  # a connection made before goes on
    assert await open_reader.readexactly(5) == b"still"

    await proxy.accept()
    assert proxy.port == port
    reader, writer = await connect(proxy)
    writer.write(b"back")
    assert await reader.readexactly(4) == b"back"
    for w in (writer, open_writer):
        w.close()
        await w.wait_closed()
    assert proxy.connections == 2


async def test_throttled_bytes_still_arrive_exactly(echo: tuple[Echo, FaultProxy]) -> None:
    _, proxy = echo
    proxy.throttle(200_000)
    payload = os.urandom(30_000)
    reader, writer = await connect(proxy)
    writer.write(payload)
    writer.write_eof()
    assert await reader.read() == payload
    writer.close()
    await writer.wait_closed()
    assert (proxy.bytes_to_target, proxy.bytes_to_client) == (30_000, 30_000)


async def test_an_unreachable_target_resets_the_client() -> None:
    async with Echo().serving() as port:
        pass  # a port nothing listens on now
    async with FaultProxy("127.0.0.1", port) as proxy:
        reader, writer = await connect(proxy)
        with pytest.raises(ConnectionResetError):
            await reader.read(1)
        writer.close()
        assert (proxy.connections, proxy.open_connections) == (1, 0)


async def test_exit_resets_open_connections_and_leaves_no_task() -> None:
    echo = Echo()
    async with echo.serving() as port:
        async with FaultProxy("127.0.0.1", port) as proxy:
            reader, writer = await connect(proxy)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            proxy.stall()
            writer.write(b"held")
            await writer.drain()
        assert asyncio.all_tasks() - echo._tasks == {asyncio.current_task()}
        with pytest.raises(ConnectionResetError):
            await reader.read(1)
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await connect(proxy)


def test_through_points_the_service_at_the_proxies() -> None:
    db, broker = FaultProxy("127.0.0.1", 3306), FaultProxy("127.0.0.1", 5672)
    db.port, broker.port = 41000, 41001
    settings = make_settings(DB_URL="jdbc:mysql://u:p@127.0.0.1:3306/shop?useSSL=false")
    moved = through(settings, db=db, broker=broker)
    assert moved.DB_URL == "mysql://u:p@127.0.0.1:41000/shop?useSSL=false"
    assert (
        moved.database.target.user,
        moved.database.target.password,
        moved.database.target.database,
    ) == ("u", "p", "shop")
    assert moved.broker.url == "amqp://guest:guest@127.0.0.1:41001/%2F"
    assert through(settings) == settings
