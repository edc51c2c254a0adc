"""The one owner of retries: a chunk's processing and delivery, and its commit.

Nothing below the step runner retries (the peer client, the broker and the database
edge each try once), so the budget is stated once: an availability fault is retried
with exponential backoff (from `retry_base_seconds`, full jitter) for up to
`retry_budget_seconds` per chunk, and then fails the step; a data fault is never retried.
While an operation retries, the step's live progress names it (what, the last fault,
since when, the budget left): what the console shows during an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import backoff

from app.config import StepPolicy
from app.errors import is_availability_fault
from app.pipeline.chunk import Retry, StepProgress

log = logging.getLogger(__name__)

T = TypeVar("T")


def retrying(
    operation: Callable[..., Awaitable[T]],
    policy: StepPolicy,
    what: str,
    progress: StepProgress | None = None,
) -> Callable[..., Awaitable[T]]:
    """`operation` under the policy's retries; other errors pass through at once. Each
    call retrying is in `progress.retries` until it succeeds, gives up or is cancelled."""
    budget = policy.retry_budget_seconds

    # backoff's Details, with the `exception` that its TypedDict leaves out.
    def log_retry(details: Any) -> None:
        log.warning(
            "%s failed (attempt %d, %.1f s of %g s), retrying in %.2f s: %r",
            what,
            details["tries"],
            details["elapsed"],
            budget,
            details["wait"],
            details["exception"],
        )

    def log_giveup(details: Any) -> None:
        if is_availability_fault(details["exception"]):
            log.error(
                "%s still failing after %d attempts in %.1f s (RETRY_BUDGET_SECONDS=%g): %r",
                what,
                details["tries"],
                details["elapsed"],
                budget,
                details["exception"],
            )

    async def call(*args: Any, **kwargs: Any) -> T:
        retry: Retry | None = None

        def on_backoff(details: Any) -> None:
            nonlocal retry
            log_retry(details)
            if progress is not None:
                exc, tries, elapsed = details["exception"], details["tries"], details["elapsed"]
                retry = progress.note_retry(retry, what, exc, tries, elapsed, budget)

        try:
            return await backoff.on_exception(
                backoff.expo,
                Exception,
                max_time=budget,
                giveup=lambda exc: not is_availability_fault(exc),
                factor=policy.retry_base_seconds,
                max_value=policy.retry_max_wait_seconds,
                jitter=backoff.full_jitter,
                on_backoff=on_backoff,
                on_giveup=log_giveup,
                logger=None,
            )(operation)(*args, **kwargs)
        finally:
            if retry is not None and progress is not None:
                progress.end_retry(retry)

    return call


async def retrying_until(
    update: Callable[[], Awaitable[None]], deadline: float, what: str
) -> Exception | None:
    """Call `update` until it succeeds, with exponential backoff (0.2 s doubling to 5 s),
    up to the monotonic `deadline`; None, or the last error once the deadline is past.

    The other owner of retries here, with other semantics than `retrying`: a deadline
    instead of a per-chunk budget (the launcher's outcome records: the lease, or the
    shutdown's end), every error retried (the outcome must be recorded), and a caller's
    cancellation deferred until the update in flight has ended (`settle`).
    """
    delay = 0.2
    while True:
        try:
            await settle(update(), max(deadline, time.monotonic() + 0.1))
            return None
        except Exception as exc:
            if time.monotonic() + delay >= deadline:
                return exc
            log.warning("%s failed, retrying in %.1f s: %r", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def settle(update: Awaitable[None], deadline: float) -> None:
    """Await `update` until the monotonic `deadline`, then cancel it and raise TimeoutError.

    A cancellation of the caller meanwhile (the shutdown cancels the runs that outlast
    its grace period) does not interrupt the update, which records their outcome: it is
    raised once the update has ended. The update is never left running unawaited.
    """
    task = asyncio.ensure_future(update)
    cancelled = False
    while not task.done():
        left = deadline - time.monotonic()
        if left <= 0:
            task.cancel()
        try:
            await asyncio.wait({task}, timeout=left if left > 0 else None)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    if task.cancelled():
        raise TimeoutError
    task.result()
