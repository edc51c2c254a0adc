"""Timers and long task timers shaped as Micrometer's Prometheus registry exposes them
(Micrometer 1.13 and later: Spring Boot 3.3 to 3.5), for the series that the old Spring
service's dashboards read (docs/metrics.md).

A Timer is a summary `<name>` (`_count`, `_sum` in seconds) and a gauge `<name>_max`:
the largest sample of about the last minute, 0 once none is that recent (Micrometer's
time-window max: three slots, each cleared in turn every 20 seconds, PrometheusConfig's
one-minute step). A LongTaskTimer is a summary whose `_count` is the tasks running now
and `_sum` their durations so far, and a gauge `_max`, the longest of them.

Collected on the event loop, like everything the registry holds: no locks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

_SLOTS = 3
_SLOT_SECONDS = 20.0


class _WindowMax:
    """Micrometer's TimeWindowMax: every sample raises every slot; the current slot is
    read; each rotation clears the current slot and moves on, so a sample is read for
    40 to 60 seconds."""

    __slots__ = ("_current", "_rotated", "_slots")

    def __init__(self) -> None:
        self._slots = [0.0] * _SLOTS
        self._current = 0
        self._rotated = time.monotonic()

    def _rotate(self) -> None:
        turns = int((time.monotonic() - self._rotated) // _SLOT_SECONDS)
        if turns:
            for _ in range(min(turns, _SLOTS)):
                self._slots[self._current] = 0.0
                self._current = (self._current + 1) % _SLOTS
            self._rotated += turns * _SLOT_SECONDS

    def record(self, value: float) -> None:
        self._rotate()
        self._slots = [max(slot, value) for slot in self._slots]

    def value(self) -> float:
        self._rotate()
        return self._slots[self._current]


class _Child(Protocol):
    def figures(self) -> tuple[int, float, float]:
        """The summary's count and sum, and the `_max` gauge."""
        ...


ChildT = TypeVar("ChildT", bound=_Child)


class Meter(Collector, Generic[ChildT]):
    """A summary `name` and its gauge `name_max`, by label set: a Timer
    (`Meter(TimerChild, ...)`) or a LongTaskTimer (`Meter(LongTaskTimerChild, ...)`)."""

    def __init__(
        self,
        child: Callable[[], ChildT],
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self._child = child
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        registry.register(self)

    def labels(self, *values: str) -> ChildT:
        assert len(values) == len(self._labelnames), values
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child()
        return child

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        summary, maximum = self._families()
        for values, child in self._children.items():
            count, total, largest = child.figures()
            summary.add_metric(values, count, total)
            maximum.add_metric(values, largest)
        return [summary, maximum]

    def _families(self) -> tuple[SummaryMetricFamily, GaugeMetricFamily]:
        return (
            SummaryMetricFamily(self._name, self._documentation, labels=self._labelnames),
            GaugeMetricFamily(self._name + "_max", self._documentation, labels=self._labelnames),
        )


class TimerChild:
    """One label set of a Timer."""

    __slots__ = ("_max", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self._max = _WindowMax()

    def record(self, seconds: float, count: int = 1) -> None:
        """`count` samples that took `seconds` in all, each its share (a chunk's items
        timed together: the per-item figures of Spring's timers, per chunk)."""
        self.count += count
        self.total += seconds
        self._max.record(seconds / max(count, 1))

    def figures(self) -> tuple[int, float, float]:
        return self.count, self.total, self._max.value()


class LongTaskTimerChild:
    """One label set of a LongTaskTimer: the tasks running under it."""

    __slots__ = ("_ids", "_started")

    def __init__(self) -> None:
        self._started: dict[int, float] = {}  # task -> time.monotonic() at its start
        self._ids = itertools.count()

    @contextmanager
    def running(self) -> Iterator[None]:
        """A task, from entry to exit."""
        task = next(self._ids)
        self._started[task] = time.monotonic()
        try:
            yield
        finally:
            del self._started[task]

    def figures(self) -> tuple[int, float, float]:
        now = time.monotonic()
        durations = [now - started for started in self._started.values()]
        return len(durations), sum(durations), max(durations, default=0.0)
