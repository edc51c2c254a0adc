"""The client libraries' lines about each reconnect attempt are dropped by their
templates (issue 26): a later version writing them differently would bring the ERROR
every second back, so each template must be one the installed libraries write."""

from __future__ import annotations

import asyncio.selector_events
import inspect
import logging
import types
from collections.abc import Iterator

import aio_pika.robust_connection
import aio_pika.tools
import aiormq.connection
import pytest

from app.edges import broker


def constants(code: types.CodeType) -> Iterator[str]:
    for value in code.co_consts:
        if isinstance(value, str):
            yield value
        elif isinstance(value, types.CodeType):
            yield from constants(value)


def test_every_template_dropped_is_written_by_the_libraries() -> None:
    written: set[str] = set()
    for module in (aiormq.connection, aio_pika.robust_connection, aio_pika.tools):
        written |= set(constants(compile(inspect.getsource(module), module.__name__, "exec")))
    assert broker._RECONNECT_NOISE | {broker._CALLBACK_FAILED} <= written


@pytest.mark.parametrize("name", broker._NOISY_LOGGERS)
def test_only_the_reconnect_lines_are_dropped(name: str, caplog: pytest.LogCaptureFixture) -> None:
    library = logging.getLogger(name)
    library.error("error when creating transport: %r", ConnectionRefusedError(111))
    library.warning("Connection %r was blocked by: %r", "conn", "low on memory")
    assert [r.getMessage() for r in caplog.records] == [
        "Connection 'conn' was blocked by: 'low on memory'"
    ]


def test_asyncio_s_line_for_writes_to_a_lost_transport_is_dropped_and_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker outage is one WARNING (issue 26): asyncio's own line for each write to a
    socket already lost, which aiormq makes until it notices, says nothing more."""
    written = set(constants(compile(inspect.getsource(asyncio.selector_events), "s", "exec")))
    assert broker._DEAD_SOCKET in written
    loop_logger = logging.getLogger("asyncio")
    loop_logger.warning(broker._DEAD_SOCKET)
    loop_logger.warning("Executing %s took %.3f seconds", "<Task>", 0.2)
    assert [r.getMessage() for r in caplog.records] == ["Executing <Task> took 0.200 seconds"]
