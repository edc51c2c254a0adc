"""The one owner of retries: a chunk's processing and delivery, and its commit.

Nothing below the step runner retries (the peer client, the broker and the database
edge each try once), so the budget is stated once: each of these is tried at most
`retry_attempts` times, backing off exponentially from `retry_base_seconds` with full
jitter, and only on transient errors (`app.errors.is_transient`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import backoff

from app.config import StepPolicy
from app.errors import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")


def retrying(
    operation: Callable[..., Awaitable[T]], policy: StepPolicy, what: str
) -> Callable[..., Awaitable[T]]:
    """`operation` under the policy's retries; other errors pass through at once."""
    attempts = policy.retry_attempts

    def log_retry(details: dict[str, Any]) -> None:
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
        factor=policy.retry_base_seconds,
        jitter=backoff.full_jitter,
        on_backoff=log_retry,
        logger=None,
    )(operation)
