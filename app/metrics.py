"""The project's Prometheus metrics, in one registry that `/actuator/prometheus` exposes.

Every module records into these objects; `app.web.metrics` adds the
`application` label and the process metrics at exposition time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_SERVER_REQUESTS = Histogram(
    "http_server_requests_seconds",
    "Admin and actuator requests served",
    ["method", "uri", "status"],
    registry=REGISTRY,
)

JOB_DURATION = Histogram(
    "batch_job_duration_seconds",
    "Wall time of finished job executions",
    ["job", "status"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "batch_step_duration_seconds",
    "Wall time of finished step executions",
    ["job", "step", "status"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
JOB_OUTCOMES = Counter(
    "batch_job_executions",
    "Finished job executions by exit code (COMPLETED, COMPLETED WITH SKIPS, FAILED, STOPPED,"
    " INTERRUPTED: a shutdown's)",
    ["job", "status"],
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
    ["job", "step", "outcome"],  # outcome: read, written, filtered, skipped
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "batch_pipeline_queue_depth",
    "Chunks waiting in a pipeline queue of a running execution",
    ["job", "execution", "queue"],  # queue: enrich, commit
    registry=REGISTRY,
)

PEER_REQUESTS = Histogram(
    "batch_peer_request_seconds",
    "Calls to peer services",
    ["peer", "endpoint", "outcome"],  # outcome: ok, error
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PEER_ERRORS = Counter(
    "batch_peer_errors",
    "Failed calls to peer services by kind",
    ["peer", "endpoint", "kind"],  # kind: status_5xx, status_4xx, timeout, connection, malformed
    registry=REGISTRY,
)

MESSAGES = Counter(
    "batch_messages",
    "Push requests through the broker, by what happened to them",
    ["outcome"],  # outcome: published, confirmed, returned, nacked, failed
    registry=REGISTRY,
)
