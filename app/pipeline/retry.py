"""The one owner of retries: a chunk's processing and delivery, and its commit.

Nothing below the step runner retries (the peer client, the broker and the database
edge each try once), so the budget is stated once: an availability fault is retried
with exponential backoff (from `retry_base_seconds`, full jitter) for up to
`retry_budget_seconds` per chunk, and then fails the step; a data fault is never retried.
While an operation retries, the step's live progress names it (what, the last fault,
since when, the budget left): what the console shows during an outage.
"""

from __future__ import annotations

import logging
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
