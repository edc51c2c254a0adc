"""The one owner of retries: a chunk's processing and delivery, and its commit.

Nothing below the step runner retries (the peer client, the broker and the database
edge each try once), so the budget is stated once, as a deadline: RETRY_BUDGET_SECONDS of
wall-clock time from the first availability fault of a chunk's work (or of its commit),
shared by every try of it (the parts of a chunk halved after a data fault included). A
try begins only before the deadline and is cut at it; between tries, exponential
backoff (from `retry_base_seconds`, full jitter, at most `retry_max_wait_seconds`), or
the wait the dependency asked for (HTTP Retry-After) if that ends before the deadline.
Past it, the last fault is raised (the step fails) and one ERROR gives the true figures.
A data fault is never retried.

Each fault is an outage of its dependency (`app.outages`): one WARNING as it begins, one
line as it ends, the tries meanwhile at DEBUG. While a chunk retries, the step's live
progress names it (what, the last fault, since when, the budget left): what the console
shows during an outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.config import StepPolicy
from app.errors import is_availability_fault
from app.outages import OUTAGES
from app.pipeline.chunk import Retry, StepProgress

log = logging.getLogger(__name__)

T = TypeVar("T")


class Budget:
    """The retry budget of one piece of work: `run` each try of it through `run`, and
    `close` it once the work is over (it leaves the progress)."""

    def __init__(self, policy: StepPolicy, what: str, progress: StepProgress | None = None) -> None:
        self.policy = policy
        self.what = what
        self._progress = progress
        self._first_fault: float | None = None  # time.monotonic()
        self._deadline: float | None = None
        self._faults = 0
        self._last: BaseException | None = None
        self._dependencies: set[str] = set()  # met by a fault: back once a try succeeds
        self._spent = False
        self._note: Retry | None = None

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """`operation`, tried again on availability faults until the deadline; other
        errors pass at once."""
        while True:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise self._give_up("the deadline came before the next try")
            bound = asyncio.timeout(
                None if self._deadline is None else self._deadline - time.monotonic()
            )
            try:
                async with bound:
                    result = await operation()
            except Exception as exc:
                if not is_availability_fault(exc):
                    raise
                if bound.expired():  # the try in flight, cut at the deadline
                    raise self._give_up("the try in flight was cut at the deadline") from None
                await asyncio.sleep(self._fault(exc))
            else:
                for dependency in self._dependencies:
                    OUTAGES.ended(dependency)
                self._dependencies.clear()
                return result

    def _fault(self, exc: BaseException) -> float:
        """Note the fault; the wait before the next try, or raise it to give up."""
        now = time.monotonic()
        budget = self.policy.retry_budget_seconds
        if self._first_fault is None:
            self._first_fault = now
            self._deadline = now + budget
        assert self._deadline is not None
        self._faults += 1
        self._last = exc
        dependency = getattr(exc, "dependency", "")
        if dependency:
            self._dependencies.add(dependency)
            message = f"{dependency} unavailable: {type(exc).__name__}: {exc}"
            OUTAGES.fault(dependency, message, log)
        if self._progress is not None:
            self._note = self._progress.note_retry(
                self._note, self.what, exc, self._faults, now - self._first_fault, budget
            )
        left = self._deadline - now
        if left <= 0:
            raise self._give_up("")
        policy = self.policy
        doubled = policy.retry_base_seconds * 2 ** min(self._faults - 1, 32)
        wait = random.uniform(0, min(policy.retry_max_wait_seconds, doubled))  # full jitter
        asked = getattr(exc, "retry_after", None)
        if asked is not None:
            if asked >= left:
                raise self._give_up(
                    f"it asks to wait {asked:g} s, {left:.1f} s before the deadline"
                )
            wait = max(wait, asked)
        log.debug(
            "%s failed (%d faults, %.1f s into its budget), again in %.2f s: %r",
            self.what,
            self._faults,
            now - self._first_fault,
            wait,
            exc,
        )
        return min(wait, left)

    def _give_up(self, why: str) -> BaseException:
        """The last fault, to raise: said once in an ERROR with the true figures."""
        assert self._last is not None and self._first_fault is not None
        if not self._spent:
            self._spent = True
            log.error(
                "%s still failing after %d faults in %.1f s (RETRY_BUDGET_SECONDS=%g)%s: %r",
                self.what,
                self._faults,
                time.monotonic() - self._first_fault,
                self.policy.retry_budget_seconds,
                f"; {why}" if why else "",
                self._last,
            )
        return self._last

    def close(self) -> None:
        """The work is over (done, failed or cancelled): it leaves the progress."""
        if self._note is not None and self._progress is not None:
            self._progress.end_retry(self._note)
            self._note = None


def retrying(
    operation: Callable[..., Awaitable[T]],
    policy: StepPolicy,
    what: str,
    progress: StepProgress | None = None,
) -> Callable[..., Awaitable[T]]:
    """`operation` under a budget of its own for each call; other errors pass through at
    once. Each call retrying is in `progress.retries` until it succeeds, gives up or is
    cancelled."""

    async def call(*args: Any, **kwargs: Any) -> T:
        budget = Budget(policy, what, progress)
        try:
            return await budget.run(lambda: operation(*args, **kwargs))
        finally:
            budget.close()

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
