"""The one hierarchy of this service's errors, and the two classes of fault.

Every exception this service raises on purpose is a `BatchError`, and its class says how
each face answers it: `code` and `http_status` the admin API's error answer
(`app.web.errors`), `exit_code` the CLI's (`app.__main__`). Each face maps them once, by
class; docs/errors.md lists every class. Two branches:

- *Refusal*: a request not carried out, for a reason its message tells the caller (a bad
  parameter, no such execution, a status that does not allow the command, a launch the
  rules refuse). Nothing was changed. The API answers it with its message; the CLI says it
  in one line.
- *Fault*: something went wrong while carrying a request or a run out. The API answers a
  generic 500 and logs it; a run fails, restartable from its checkpoint.

A fault is of one of two classes. Each edge translates its library's exceptions into them
where they arise (the database's in `edges.db`, the peers' in `edges.peers`, the broker's
in `edges.broker`), so telling them apart needs no third-party module: it never depends on
what is imported yet. docs/faults.md lists what falls in each class.

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

# The CLI's exit codes (`python -m app COMMAND --help` says what each means there).
EXIT_OK = 0
EXIT_FAILED = 1  # a run FAILED or STOPPED, or a fault
EXIT_USAGE = 2  # bad arguments or settings, no such execution: nothing was done
EXIT_REFUSED = 3  # the command was understood and refused: not launched, not done
EXIT_SKIPPED = 4  # COMPLETED WITH SKIPS: the run ended, but some items were not done


class BatchError(Exception):
    """An error this service raises on purpose; its class's attributes say how the API and
    the CLI answer it. One placed in neither branch is this service's own (a lost lease,
    the skip limit): handled where it arises, else answered as a fault."""

    code: str = "INTERNAL_SERVER_ERROR"  # the admin API's error code
    http_status: int = 500
    exit_code: int = EXIT_FAILED


class Refusal(BatchError):
    """A request not carried out, nothing changed; `str()` tells the caller why. As
    such: bad usage (400, exit 2); its subclasses say otherwise."""

    code = "BAD_REQUEST"
    http_status = 400
    exit_code = EXIT_USAGE


class Fault(BatchError):
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
