"""Enrich: concurrent workers that process chunks; what cannot be done becomes a skip."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.errors import SetupError
from app.pipeline.chunk import Chunk
from app.pipeline.source import Entry


@dataclass(frozen=True, slots=True)
class Skipped:
    """A chunk given up on: the last error it met."""

    error: BaseException


async def enrich(
    work: asyncio.Queue[Entry | None], handle: Callable[[Chunk[Any]], Awaitable[Any]]
) -> None:
    """Resolve each chunk's future with what `handle` gives, Skipped, or a SetupError."""
    while (entry := await work.get()) is not None:
        chunk, future = entry
        try:
            result = await handle(chunk)
        except SetupError as exc:
            # Fails the step once the sink reaches this chunk, so the chunks before it
            # still commit; skipping would only lose every chunk after it.
            future.set_exception(exc)
            return
        except Exception as exc:  # retries exhausted, or a permanent error
            result = Skipped(exc)
        future.set_result(result)
