"""Waits that name what they wait for: past the deadline, an AssertionError that says what
never happened, instead of a bare TimeoutError."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def waiting(within: float, what: str) -> AsyncIterator[None]:
    """The block, cut after `within` seconds with an AssertionError naming `what`."""
    try:
        async with asyncio.timeout(within):
            yield
    except TimeoutError:
        raise AssertionError(f"never happened within {within} s: {what}") from None
