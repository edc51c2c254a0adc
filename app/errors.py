"""The two classes of fault, and the one place that tells them apart.

- *Availability*: a peer, the broker or the database is away or too slow (connection
  refused or reset, timeouts, 5xx, a lost channel). Another attempt may succeed: the
  step runner retries it within its budget, then the step fails, restartable from its
  checkpoint. Never skipped.
- *Data*: an answer malformed about these ids, a value the column cannot hold, a
  message the broker returns or nacks for itself. Another attempt will not help: the
  chunk is tried again by halves, and the items that fail on their own are skipped
  and named (`pipeline.isolate`).
"""

from __future__ import annotations

import asyncio
import sys

from asyncmy.errors import InterfaceError, OperationalError


class AvailabilityError(Exception):
    """Something this service depends on is away or too slow."""


class DataError(Exception):
    """Something about these items that no retry will fix."""


# MySQL/MariaDB error codes that a retry can clear: lock wait timeout, deadlock,
# server gone away, lost connection, cannot connect, server shutting down.
_AVAILABILITY_DB_CODES = frozenset({1205, 1213, 2003, 2006, 2013, 2055, 1053, 1927})


def is_availability_fault(exc: BaseException) -> bool:
    if isinstance(exc, AvailabilityError | ConnectionError | TimeoutError | asyncio.TimeoutError):
        return True
    # aiohttp's only if it is imported (no error of it can exist otherwise): a run that
    # asks no peer starts without it.
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
    ):
        return True
    if isinstance(exc, OperationalError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return code in _AVAILABILITY_DB_CODES
    return isinstance(exc, InterfaceError)
