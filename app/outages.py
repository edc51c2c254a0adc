"""Outages of what the service depends on, logged once as each begins and once as it ends.

While the broker, the database or a peer is away, every chunk in flight meets it, and
retries, every second or so: a line per fault would bury the one that matters. An
outage of one dependency (an `errors.Fault.dependency`) logs one WARNING at its first
fault and one INFO line at the first answer after it, with its length and the faults
it counted meanwhile.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass


@dataclass
class _Outage:
    began: float  # time.monotonic()
    faults: int
    log: logging.Logger  # the end goes where the beginning went


class Outages:
    """The outages open now, by dependency."""

    def __init__(self) -> None:
        self._open: dict[str, _Outage] = {}

    def fault(self, dependency: str, message: str, log: logging.Logger) -> None:
        """A fault of `dependency`: `message` as a WARNING on `log` if it begins an
        outage, else only counted."""
        outage = self._open.get(dependency)
        if outage is None:
            self._open[dependency] = _Outage(time.monotonic(), 1, log)
            log.warning("%s", message)
        else:
            outage.faults += 1

    def ended(self, dependency: str) -> None:
        """`dependency` answered: its outage, if one is open, ends with one line. Cheap
        enough for every answer."""
        if self._open:
            outage = self._open.pop(dependency, None)
            if outage is not None:
                outage.log.info(
                    "%s back after %.1f s (%d faults)",
                    dependency,
                    time.monotonic() - outage.began,
                    outage.faults,
                )

    def is_open(self, dependency: str) -> bool:
        return dependency in self._open


# One per process: an outage is the dependency's, whichever job or pool meets it.
OUTAGES = Outages()
