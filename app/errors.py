"""The one place that decides whether a failure is worth another attempt."""

from __future__ import annotations

import asyncio

import aiohttp
from asyncmy.errors import InterfaceError, OperationalError


class TransientError(Exception):
    """A failure that may pass on its own: a peer's 5xx, a lost broker channel, a nack."""


class PermanentError(Exception):
    """A failure another attempt will not fix for these items: a malformed answer."""


class SetupError(Exception):
    """A fault of the setup, not of the items (no queue bound to the routing key): every
    later chunk would meet it too, so it fails the step at once instead of skipping.
    A restart after the fix resumes from the checkpoint and loses no item."""


# MySQL/MariaDB error codes that a retry can clear: lock wait timeout, deadlock,
# server gone away, lost connection, cannot connect, server shutting down.
_TRANSIENT_DB_CODES = frozenset({1205, 1213, 2003, 2006, 2013, 2055, 1053, 1927})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientError | ConnectionError | TimeoutError | asyncio.TimeoutError):
        return True
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return True
    if isinstance(exc, OperationalError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return code in _TRANSIENT_DB_CODES
    return isinstance(exc, InterfaceError)
