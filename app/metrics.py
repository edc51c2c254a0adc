"""The project's Prometheus metrics, in one registry that `/actuator/prometheus` exposes.

Every module records into these objects; `app.web.metrics` adds the
`application` label and the process metrics at exposition time.

No label is one that Prometheus sets on its targets (`job`, `instance`; `endpoint`,
`namespace`, `pod`, `service`, `container` under the Prometheus Operator): under a scrape
config without `honor_labels` it would be renamed `exported_*`. A job is
`spring_batch_job_name` and a step `spring_batch_step_name`, as in Spring Batch's own
metrics (the `spring_batch_*` below, shaped as the old service exposed them:
docs/metrics.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.micrometer import LongTaskTimerChild, Meter, TimerChild

REGISTRY = CollectorRegistry(auto_describe=True)

# Spring MVC's `http.server.requests` (Spring Boot 3.5's observation convention)
HTTP_SERVER_REQUESTS = Meter(
    TimerChild,
    "http_server_requests_seconds",
    "Admin and actuator requests served",
    ["method", "uri", "status", "outcome", "exception", "error"],
    REGISTRY,
)

# Spring Batch 5.2's meters, by their names in Prometheus (Micrometer's naming: a timer
# `spring.batch.job` is `spring_batch_job_seconds`, a tag `spring.batch.job.name` the
# label `spring_batch_job_name`). `error`: `none`, or the exception's class, as
# Micrometer's DefaultMeterObservationHandler tags an observation.
SPRING_BATCH_JOB = Meter(
    TimerChild,
    "spring_batch_job_seconds",
    "Job executions, by exit code (Spring Batch's spring.batch.job observation)",
    ["spring_batch_job_name", "spring_batch_job_status", "error"],
    REGISTRY,
)
SPRING_BATCH_JOB_ACTIVE = Meter(
    LongTaskTimerChild,
    "spring_batch_job_active_seconds",
    "Active jobs",
    ["spring_batch_job_active_name"],
    REGISTRY,
)
SPRING_BATCH_JOB_LAUNCH_COUNT = Counter(
    "spring_batch_job_launch_count",
    "Job launch count (every launch and restart asked for, refused ones included)",
    registry=REGISTRY,
)
SPRING_BATCH_STEP = Meter(
    TimerChild,
    "spring_batch_step_seconds",
    "Step executions, by exit code (Spring Batch's spring.batch.step observation)",
    ["spring_batch_step_name", "spring_batch_step_job_name", "spring_batch_step_status", "error"],
    REGISTRY,
)
SPRING_BATCH_STEP_ACTIVE = Meter(
    LongTaskTimerChild,
    "spring_batch_step_active_seconds",
    "Active steps (spring.batch.step.status is EXECUTING, as at an observation's start)",
    ["spring_batch_step_name", "spring_batch_step_job_name", "spring_batch_step_status"],
    REGISTRY,
)
# Timed per chunk, counted per item (app.pipeline.step); status SUCCESS or FAILURE
SPRING_BATCH_ITEM_READ = Meter(
    TimerChild,
    "spring_batch_item_read_seconds",
    "Item reading duration",
    [
        "spring_batch_item_read_job_name",
        "spring_batch_item_read_step_name",
        "spring_batch_item_read_status",
    ],
    REGISTRY,
)
SPRING_BATCH_ITEM_PROCESS = Meter(
    TimerChild,
    "spring_batch_item_process_seconds",
    "Item processing duration",
    [
        "spring_batch_item_process_job_name",
        "spring_batch_item_process_step_name",
        "spring_batch_item_process_status",
    ],
    REGISTRY,
)
SPRING_BATCH_CHUNK_WRITE = Meter(
    TimerChild,
    "spring_batch_chunk_write_seconds",
    "Chunk writing duration",
    [
        "spring_batch_chunk_write_job_name",
        "spring_batch_chunk_write_step_name",
        "spring_batch_chunk_write_status",
    ],
    REGISTRY,
)


@dataclass(frozen=True, slots=True)
class StepTimer:
    """An item or chunk timer of Spring Batch, for one step: SUCCESS, or FAILURE for an
    attempt that raised (its series appears at the first failure, as Spring's does)."""

    timer: Meter[TimerChild]
    job_name: str
    step_name: str

    def record(self, seconds: float, count: int = 1, *, failed: bool = False) -> None:
        status = "FAILURE" if failed else "SUCCESS"
        self.timer.labels(self.job_name, self.step_name, status).record(seconds, count)

    @contextmanager
    def timing(self, count: int) -> Iterator[None]:
        """The body as `count` samples, or as one FAILURE if it raises."""
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.record(time.perf_counter() - started, failed=True)
            raise
        self.record(time.perf_counter() - started, count)


JOB_DURATION = Histogram(
    "batch_job_duration_seconds",
    "Wall time of finished job executions",
    ["spring_batch_job_name", "status"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "batch_step_duration_seconds",
    "Wall time of finished step executions",
    ["spring_batch_job_name", "spring_batch_step_name", "status"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
JOB_OUTCOMES = Counter(
    "batch_job_executions",
    "Finished job executions by exit code (COMPLETED, COMPLETED WITH SKIPS, FAILED, STOPPED,"
    " INTERRUPTED: a shutdown's)",
    ["spring_batch_job_name", "status"],
    registry=REGISTRY,
)
# What runs, when a job last started and last COMPLETED, and what is left FAILED or STOPPED
# are read from the job repository at scrape time (app.web.repository_metrics): every
# process's executions, the CLI's too, not only this process's.
SCHEDULER_ENABLED = Gauge(
    "batch_scheduler_enabled",
    "1 while this process runs the job schedules, else 0",
    registry=REGISTRY,
)
ITEMS = Counter(
    "batch_items",
    "Items through the chunk steps, by what happened to them",
    # outcome: read, written, filtered, skipped
    ["spring_batch_job_name", "spring_batch_step_name", "outcome"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "batch_pipeline_queue_depth",
    "Chunks waiting in a pipeline queue of a running execution",
    ["spring_batch_job_name", "execution", "queue"],  # queue: enrich, commit
    registry=REGISTRY,
)

PEER_REQUESTS = Histogram(
    "batch_peer_request_seconds",
    "Calls to peer services",
    ["peer", "uri", "outcome"],  # outcome: ok, error
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PEER_ERRORS = Counter(
    "batch_peer_errors",
    "Failed calls to peer services by kind",
    ["peer", "uri", "kind"],  # kind: status_5xx, status_4xx, timeout, connection, malformed
    registry=REGISTRY,
)

MESSAGES = Counter(
    "batch_messages",
    "Push requests through the broker, by what happened to them",
    ["outcome"],  # outcome: published, confirmed, returned, nacked, failed
    registry=REGISTRY,
)
