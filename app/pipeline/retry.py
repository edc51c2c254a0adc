"""The one owner of retries: a chunk's processing and delivery, and its commit.

Nothing below the step runner retries (the peer client, the broker and the database
edge each try once), so the budget is stated once: an availability fault is retried
with exponential backoff (from `retry_base_seconds`, full jitter) for up to
`retry_budget_seconds` per chunk, and then fails the step; a data fault is never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import backoff

from app.config import StepPolicy
from app.errors import is_availability_fault

log = logging.getLogger(__name__)

T = TypeVar("T")


def retrying(
    operation: Callable[..., Awaitable[T]], policy: StepPolicy, what: str
) -> Callable[..., Awaitable[T]]:
    """`operation` under the policy's retries; other errors pass through at once."""
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

    return backoff.on_exception(
        backoff.expo,
        Exception,
        max_time=budget,
        giveup=lambda exc: not is_availability_fault(exc),
        factor=policy.retry_base_seconds,
        max_value=policy.retry_max_wait_seconds,
        jitter=backoff.full_jitter,
        on_backoff=log_retry,
        on_giveup=log_giveup,
        logger=None,
    )(operation)
