"""The two classes of fault, and the one place that tells them apart.

Each edge translates its library's exceptions into these classes where they arise (the
database's in `edges.db`, the peers' in `edges.peers`, the broker's in `edges.broker`), so
telling them apart needs no third-party module: it never depends on what is imported
yet. docs/faults.md lists what falls in each class.

- *Availability*: a peer, the broker or the database is away, too slow or refusing for
  now (connection refused or reset, timeouts, HTTP 408, 429 and 5xx, the database's
  interruptions and limits, a lost channel, a message the broker returns or nacks).
  Another attempt may succeed: the step runner retries it within its budget, then the
  step fails, restartable from its checkpoint. Never skipped.
- *Data*: an answer malformed about these ids, a request refused for them. Another
  attempt will not help: the chunk is tried again by halves, and the items that fail on
  their own are skipped and named (`pipeline.isolate`). A fault the halving cannot pin
  on items is not data (`NotAboutItems`).
"""

from __future__ import annotations


class Fault(Exception):
    """A fault in this service's own terms. `dependency` names what it concerns
    ("database 127.0.0.1:3306", "broker 127.0.0.1:5672", "store service"): one outage
    of it is logged once (`app.outages`)."""

    dependency: str = ""

    def __init__(self, message: str, *, dependency: str = "") -> None:
        super().__init__(message)
        if dependency:
            self.dependency = dependency


class AvailabilityError(Fault):
    """Something this service depends on is away, too slow or refusing for now.

    `retry_after`: the seconds the dependency asked to be left alone (HTTP Retry-After),
    if it said."""

    retry_after: float | None = None


class DataError(Fault):
    """Something about these items that no retry will fix."""


class NotAboutItems(AvailabilityError):
    """A fault that is not about the chunk's items, whatever its own class says: every
    part of the chunk met it alike, or it came from a lookup not about the items (a
    run-wide query). Retried as availability, then the step fails: skipping items for it
    would lose them for nothing."""

    def __init__(self, cause: BaseException, why: str) -> None:
        super().__init__(
            f"{type(cause).__name__}: {cause} ({why})",
            dependency=getattr(cause, "dependency", ""),
        )


def is_availability_fault(exc: BaseException) -> bool:
    """Whether a later try may succeed where `exc` was raised."""
    return isinstance(exc, AvailabilityError | ConnectionError | TimeoutError)
