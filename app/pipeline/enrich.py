"""Enrich: concurrent workers that process chunks, with retry, and skip what cannot be done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import backoff

from app.errors import SetupError, is_transient
from app.pipeline.chunk import Processed
from app.pipeline.source import Entry

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A chunk given up on: the last error it met."""

    error: BaseException


def retrying(
    operation: Callable[..., Awaitable[T]], *, attempts: int, base_seconds: float, what: str
) -> Callable[..., Awaitable[T]]:
    """`operation` tried up to `attempts` times on transient errors, backing off
    exponentially with full jitter; other errors pass through at once."""

    def _log_retry(details: dict[str, Any]) -> None:
        log.warning(
            "%s failed (attempt %d of %d), retrying in %.2f s: %r",
            what,
            details["tries"],
            attempts,
            details["wait"],
            details["exception"],
        )

    return backoff.on_exception(
        backoff.expo,
        Exception,
        max_tries=attempts,
        giveup=lambda exc: not is_transient(exc),
        factor=base_seconds,
        jitter=backoff.full_jitter,
        on_backoff=_log_retry,
        logger=None,
    )(operation)


async def enrich(
    work: asyncio.Queue[Entry | None],
    process: Callable[[list[Any]], Awaitable[Processed[Any]]],
) -> None:
    """Resolve each chunk's future with its Processed result, Skipped, or a SetupError."""
    while (entry := await work.get()) is not None:
        chunk, future = entry
        try:
            result: Processed[Any] | Skipped = await process(chunk.items)
        except SetupError as exc:
            # Fails the step once the sink reaches this chunk, so the chunks before it
            # still commit; skipping would only lose every chunk after it.
            future.set_exception(exc)
            return
        except Exception as exc:  # retries exhausted, or a permanent error
            result = Skipped(exc)
        future.set_result(result)
