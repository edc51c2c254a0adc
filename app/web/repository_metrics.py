"""The job repository's figures in `/actuator/prometheus`: read from BATCH_* at scrape time,
so that every process's executions count (the CLI's, every replica's), not only this
process's, and a FAILED night repaired by `python -m app restart` clears its alert.

A collector is synchronous and the read is not: the scrape handler first awaits
`refresh`, which starts a read unless one ran less than `ttl` ago (a scrape storm makes
one read, not one each) and waits for it at most `timeout`. A database that answers
later, or not at all, leaves that scrape with the last figures read (the read goes on,
within DB_STALL_SECONDS, for the next scrape); their time is
`batch_job_repository_read_timestamp_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.errors import is_availability_fault
from app.model import RESTARTABLE, JobTally, Status
from app.runtime.scheduler import ScheduledRun

log = logging.getLogger(__name__)

READ_TTL_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 2.0

NEVER_LAUNCHED = "NONE"  # the status label of a scheduled run with no execution


@dataclass(frozen=True)
class Figures:
    """What one read of the job repository gives the metrics."""

    tallies: list[JobTally]
    # Each schedule's latest run due to have COMPLETED: in processes that run schedules
    scheduled: list[ScheduledRun]


ReadFigures = Callable[[], Awaitable[Figures]]


@dataclass(frozen=True)
class _Snapshot:
    figures: Figures
    read_at: float  # Unix time


class RepositoryMetrics(Collector):
    """The last figures read from the job repository, as gauges labelled by job."""

    def __init__(self, read: ReadFigures, *, ttl: float, timeout: float) -> None:
        self._read = read
        self._ttl = ttl
        self._timeout = timeout
        self._snapshot: _Snapshot | None = None
        self._reading: asyncio.Task[None] | None = None
        self._next_read = 0.0  # monotonic
        self._failing = False

    async def refresh(self) -> None:
        """Read the repository again if the figures are `ttl` old, waiting for the read
        (this one, or one in flight) at most `timeout`."""
        if self._reading is None and time.monotonic() >= self._next_read:
            self._reading = asyncio.create_task(self._read_snapshot())
        if self._reading is not None:
            await asyncio.wait({self._reading}, timeout=self._timeout)

    async def _read_snapshot(self) -> None:
        try:
            figures = await self._read()
        except Exception as exc:  # the last figures stay
            if not self._failing:  # once, until a read succeeds; a bug with its traceback
                log.warning(
                    "the job repository's metrics could not be read: %s",
                    exc,
                    exc_info=not is_availability_fault(exc),
                )
            self._failing = True
        else:
            self._snapshot = _Snapshot(figures, time.time())
            if self._failing:
                log.info("the job repository's metrics are read again")
            self._failing = False
        finally:
            self._next_read = time.monotonic() + self._ttl
            self._reading = None

    async def close(self) -> None:
        """Cancel a read in flight, and wait for it to end."""
        reading = self._reading
        if reading is not None:
            reading.cancel()
            await asyncio.wait({reading})

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "batch_job_repository_read_timestamp_seconds",
            "When the batch_job_* figures of the job repository were read (Unix time)",
            value=snapshot.read_at,
        )
        executions = GaugeMetricFamily(
            "batch_job_repository_executions",
            "Job executions in the job repository by status, whichever process ran them",
            labels=["spring_batch_job_name", "status"],
        )
        unrecovered = GaugeMetricFamily(
            "batch_job_unrecovered_instances",
            "Job instances whose latest execution is FAILED or STOPPED (neither restarted"
            " nor abandoned since)",
            labels=["spring_batch_job_name", "status"],
        )
        last_start = GaugeMetricFamily(
            "batch_job_last_start_timestamp_seconds",
            "When an execution of the job last started, in any process (Unix time)",
            labels=["spring_batch_job_name"],
        )
        last_success = GaugeMetricFamily(
            "batch_job_last_success_timestamp_seconds",
            "When an execution of the job last ended COMPLETED, in any process (Unix time)",
            labels=["spring_batch_job_name"],
        )
        scheduled = GaugeMetricFamily(
            "batch_job_scheduled_run_timestamp_seconds",
            "The job's latest scheduled time that its run should have ended COMPLETED by"
            " (that time plus the job's allowance is past), by the status of that"
            " instance's latest execution (NONE: never launched; not for a run due before"
            " this process or the job's first execution); exposed by the processes that run"
            " the schedules (Unix time)",
            labels=["spring_batch_job_name", "status"],
        )
        for run in snapshot.figures.scheduled:
            status = NEVER_LAUNCHED if run.status is None else run.status.value
            scheduled.add_metric([run.job_name, status], run.at.timestamp())
        for tally in snapshot.figures.tallies:
            job = tally.job_name
            for status in Status:
                executions.add_metric([job, status.value], tally.executions.get(status, 0))
            for status in RESTARTABLE:
                unrecovered.add_metric([job, status.value], tally.unrecovered.get(status, 0))
            if tally.last_start is not None:
                last_start.add_metric([job], tally.last_start.timestamp())
            if tally.last_success is not None:
                last_success.add_metric([job], tally.last_success.timestamp())
        yield from (executions, unrecovered, last_start, last_success, scheduled)
