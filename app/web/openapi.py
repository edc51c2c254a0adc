"""The OpenAPI 3 document served at `/v3/api-docs`; tests/unit/test_web_openapi.py keeps it
and the routes of `create_app` in step."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from app.model import Status
from app.runtime.job import JobSpec, Parameter, declared_parameters, takers
from app.runtime.parameters import BOOLEAN, DRY_RUN, INTEGER, LOCAL_DATE, LONG


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_ID = [
    {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "format": "int64"},
    }
]
_AUTH_ERRORS = {
    "401": _error(
        "No token, a malformed or badly signed token (INVALID_TOKEN), or an expired"
        " one (EXPIRED_TOKEN)"
    ),
    "403": _error("A valid token whose memberType is not ADMIN or ROLE_ADMIN (ACCESS_DENIED)"),
}
# The job's path or Spring name: its description and the jobs' parameters are filled in
# from the jobs' declarations by `openapi`.
_JOB_NAME = {"name": "jobName", "in": "path", "required": True, "schema": {"type": "string"}}
_COUNTS = {
    name: {"type": "integer", "format": "int64"}
    for name in ("readCount", "writeCount", "filterCount", "skipCount", "commitCount")
}
_TIME = {"type": "string", "format": "date-time", "nullable": True}
_STATUSES = [status.value for status in Status]

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "CouponPop batch service",
        "version": "1.0",
        "description": "Launch and follow the batch jobs; health and metrics for operators.",
    },
    "paths": {
        "/api/v1/jobs": {
            "get": {
                "summary": "The jobs: their names, parameters, schedules and titles",
                "description": "What the console renders its launch forms from.",
                "operationId": "listJobs",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
                        },
                        "The jobs",
                    ),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/jobs/{jobName}": {
            "post": {
                "summary": "Launch a job in the background",
                "description": "A completed job instance (same identifying parameters) runs"
                " again; a failed or stopped one resumes from its checkpoint.",
                "operationId": "launchJob",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    _JOB_NAME,
                    {
                        "name": "from",
                        "in": "query",
                        "description": "A backfill, with `to` instead of runDate: every date"
                        " from..to (both included, at most 366) is launched as its own"
                        " instance; the answer lists the executions and the refusals.",
                        "schema": {"type": "string", "format": "date"},
                    },
                    {
                        "name": "to",
                        "in": "query",
                        "description": "The last date of a backfill (with `from`)",
                        "schema": {"type": "string", "format": "date"},
                    },
                ],
                "responses": {
                    "202": {
                        **_json(_ref("LaunchAccepted"), "Started"),
                        "headers": {
                            "Location": {
                                "description": "/api/v1/jobs/executions/{id}",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "400": _error(
                        "A missing or malformed parameter, or an unknown job"
                        " (INVALID_PARAMETER); the message names the parameter"
                    ),
                    **_AUTH_ERRORS,
                    "409": _error(
                        "The instance is already running (JOB_ALREADY_RUNNING);"
                        " Location names the running execution"
                    ),
                    "503": _error("The service is shutting down (SHUTTING_DOWN)"),
                },
            }
        },
        "/api/v1/jobs/executions": {
            "get": {
                "summary": "The executions of every job, newest first, a page at a time",
                "description": "The filters combine; `before` pages on: pass the previous"
                " page's `nextBefore` for the next (older) page.",
                "operationId": "listRecentExecutions",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {
                        "name": "job",
                        "in": "query",
                        "description": "Only this job's executions (its path or Spring name)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Only executions in this status",
                        "schema": {"type": "string", "enum": _STATUSES},
                    },
                    {
                        "name": "runDate",
                        "in": "query",
                        "description": "Only executions whose runDate parameter is this date",
                        "schema": {"type": "string", "format": "date"},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "Only executions whose id is below this one",
                        "schema": {"type": "integer", "format": "int64", "minimum": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "executions": {"type": "array", "items": _ref("Execution")},
                                "nextBefore": {
                                    "type": "integer",
                                    "format": "int64",
                                    "nullable": True,
                                    "description": "`before` for the next (older) page;"
                                    " null on the last page",
                                },
                            },
                        },
                        "The executions",
                    ),
                    "400": _error(
                        "An unknown job or status, a malformed runDate or before, a bad limit"
                        " (INVALID_PARAMETER); the message names the parameter"
                    ),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/jobs/executions/{id}": {
            "get": {
                "summary": "One job execution, with live progress while it runs here",
                "operationId": "getExecution",
                "security": [{"bearerAuth": []}],
                "parameters": _ID,
                "responses": {
                    "200": _json(_ref("Execution"), "The execution"),
                    "400": _error("The id is not a number (INVALID_PARAMETER)"),
                    **_AUTH_ERRORS,
                    "404": _error("No such execution (EXECUTION_NOT_FOUND)"),
                },
            }
        },
        "/api/v1/jobs/executions/{id}/stop": {
            "post": {
                "summary": "Stop an execution's run (JobOperator.stop)",
                "description": "A stop reaches the execution's run wherever it is now: the"
                " execution, or the one that carries its run on after a takeover (the answer"
                " and its Location name it). A running one is STOPPING now; the runner starts"
                " no new chunk, commits those it is processing and ends STOPPED (restartable):"
                " at once on the replica that answers, at its next chunk commit on another. A"
                " STOPPING execution whose runner is gone ends STOPPED once its lease expires."
                " A FAILED one awaiting its automatic restart is STOPPED at once: restartable"
                " by an operator, never automatically.",
                "operationId": "stopExecution",
                "security": [{"bearerAuth": []}],
                "parameters": _ID,
                "responses": {
                    "202": _json(_ref("Execution"), "Stopping"),
                    "400": _error("The id is not a number (INVALID_PARAMETER)"),
                    **_AUTH_ERRORS,
                    "404": _error("No such execution (EXECUTION_NOT_FOUND)"),
                    "409": _error("The execution's run has ended (JOB_NOT_RUNNING)"),
                },
            }
        },
        "/api/v1/jobs/executions/{id}/restart": {
            "post": {
                "summary": "Restart a FAILED or STOPPED execution from its checkpoint",
                "operationId": "restartExecution",
                "security": [{"bearerAuth": []}],
                "parameters": _ID,
                "responses": {
                    "202": _json(_ref("LaunchAccepted"), "The new execution"),
                    "400": _error("The id is not a number (INVALID_PARAMETER)"),
                    **_AUTH_ERRORS,
                    "404": _error("No such execution (EXECUTION_NOT_FOUND)"),
                    "409": _error(
                        "Not FAILED or STOPPED, or not its instance's last execution"
                        " (JOB_NOT_RESTARTABLE), or its instance runs or completed meanwhile"
                        " (JOB_ALREADY_RUNNING, JOB_ALREADY_COMPLETE)"
                    ),
                    "503": _error("The service is shutting down (SHUTTING_DOWN)"),
                },
            }
        },
        "/api/v1/jobs/executions/{id}/abandon": {
            "post": {
                "summary": "Abandon a STOPPED, FAILED or STOPPING execution (JobOperator.abandon)",
                "description": "ABANDONED is never restarted; the next launch of the instance"
                " starts from scratch.",
                "operationId": "abandonExecution",
                "security": [{"bearerAuth": []}],
                "parameters": _ID,
                "responses": {
                    "200": _json(_ref("Execution"), "The abandoned execution"),
                    "400": _error("The id is not a number (INVALID_PARAMETER)"),
                    **_AUTH_ERRORS,
                    "404": _error("No such execution (EXECUTION_NOT_FOUND)"),
                    "409": _error("Not STOPPED, FAILED or STOPPING (JOB_NOT_ABANDONABLE)"),
                },
            }
        },
        "/api/v1/jobs/{jobName}/executions": {
            "get": {
                "summary": "The job's most recent executions, newest first",
                "operationId": "listExecutions",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    _JOB_NAME,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "jobName": {"type": "string"},
                                "executions": {"type": "array", "items": _ref("Execution")},
                            },
                        },
                        "The executions",
                    ),
                    "400": _error("An unknown job or a bad limit (INVALID_PARAMETER)"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/jobs/{jobName}/estimate": {
            "get": {
                "summary": "How much a launch with these parameters would process",
                "description": "The job's own count, before launching: for"
                " coupon-usage-stats-fcm-send, the members whose latest stats of the"
                " window name targetHour (the rows the fan-out reads). The parameters"
                " and their defaults are the launch's.",
                "operationId": "estimateJob",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    _JOB_NAME,
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "jobName": {"type": "string"},
                                "parameters": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                    "example": {"runDate": "2025-10-26", "targetHour": "10"},
                                },
                                "count": {"type": "integer", "format": "int64"},
                                "unit": {"type": "string", "example": "members"},
                            },
                        },
                        "The estimate",
                    ),
                    "400": _error(
                        "An unknown job or a malformed parameter (INVALID_PARAMETER); the"
                        " message names the parameter"
                    ),
                    **_AUTH_ERRORS,
                    "404": _error("The job has no estimate (NO_ESTIMATE)"),
                },
            }
        },
        "/actuator/health": {
            "get": {
                "summary": "Health of the service and its database and broker",
                "operationId": "health",
                "responses": {
                    "200": _json(_ref("Health"), "UP"),
                    "503": _json(_ref("Health"), "DOWN"),
                },
            }
        },
        "/actuator/health/liveness": {
            "get": {
                "summary": "Liveness probe: the process answers",
                "operationId": "liveness",
                "responses": {"200": _json(_ref("Health"), "UP")},
            }
        },
        "/actuator/health/readiness": {
            "get": {
                "summary": "Readiness probe: DOWN while the service shuts down",
                "operationId": "readiness",
                "responses": {
                    "200": _json(_ref("Health"), "UP"),
                    "503": _json(_ref("Health"), "DOWN"),
                },
            }
        },
        "/actuator/prometheus": {
            "get": {
                "summary": "Prometheus metrics; every series has application=<APPLICATION_NAME>",
                "operationId": "prometheus",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v3/api-docs": {
            "get": {
                "summary": "This document",
                "operationId": "apiDocs",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT (HS256/384/512, memberType ADMIN or ROLE_ADMIN)",
                "description": "Signed with JWT_SECRET_KEY; an operator who holds it mints"
                " one with `python -m app token`.",
            }
        },
        "schemas": {
            "Job": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "example": "couponUsageStatsJob"},
                    "path": {"type": "string", "example": "coupon-usage-stats"},
                    "title": {"type": "string", "example": "Usage statistics"},
                    "parameters": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string", "example": "runDate"},
                                "type": {"type": "string", "example": "java.time.LocalDate"},
                                "help": {"type": "string"},
                                "default": {
                                    "type": "string",
                                    "nullable": True,
                                    "description": "in words; null: required",
                                },
                                "choices": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                    "schedule": {
                        "type": "object",
                        "nullable": True,
                        "properties": {
                            "cron": {"type": "string", "example": "0 1 * * *"},
                            "punctual": {"type": "boolean"},
                        },
                    },
                    "backfills": {"type": "boolean"},
                    "publishes": {"type": "boolean"},
                    "estimates": {"type": "boolean"},
                    "confirm": {
                        "type": "string",
                        "description": "the console's question before a real run of a job"
                        " that publishes; {parameter}, {zone} and {estimate} filled in",
                    },
                    "suggested": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "the parameters its schedule would give now",
                    },
                },
            },
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "string", "example": "400 BAD_REQUEST"},
                            "code": {"type": "string", "example": "INVALID_PARAMETER"},
                            "message": {"type": "string"},
                            "requestUrl": {"type": "string"},
                            "timestamp": {"type": "string"},
                        },
                    }
                },
            },
            "LaunchAccepted": {
                "type": "object",
                "properties": {
                    "executionId": {"type": "integer", "format": "int64"},
                    "jobName": {"type": "string", "example": "couponUsageStatsJob"},
                    "status": {"type": "string", "example": "STARTED"},
                    "parameters": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "example": {"runDate": "2024-12-01"},
                    },
                },
            },
            "Execution": {
                "type": "object",
                "properties": {
                    "executionId": {"type": "integer", "format": "int64"},
                    "jobName": {"type": "string"},
                    "status": {"type": "string", "enum": _STATUSES},
                    "dryRun": {"type": "boolean"},
                    "dryRunOutput": {
                        "type": "string",
                        "nullable": True,
                        "description": "where a dry run launched through the API writes",
                    },
                    "skippedItems": {
                        "type": "object",
                        "properties": {
                            "count": {"type": "integer"},
                            "ids": {"type": "array", "description": "the first 50 skipped"},
                            "causes": {
                                "type": "array",
                                "description": "the same first skipped, grouped by the data"
                                " fault that skipped them, in the order met",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "cause": {
                                            "type": "string",
                                            "example": "PeerAnswerError: store service"
                                            " /internal/v1/stores/regions: HTTP 400",
                                        },
                                        "keys": {"type": "array"},
                                    },
                                },
                            },
                        },
                    },
                    "actions": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["stop", "restart", "abandon"]},
                        "description": "The commands worth offering on it now (the console's"
                        " buttons): stop while it runs; restart (FAILED, STOPPED) and abandon"
                        " (also STOPPING) on its instance's newest execution only",
                    },
                    "messages": {
                        "type": "object",
                        "nullable": True,
                        "description": "the fan-out's messages published and confirmed",
                    },
                    "exitCode": {
                        "type": "string",
                        "description": "the status, or COMPLETED WITH SKIPS",
                    },
                    "exitMessage": {"type": "string"},
                    "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                    "createTime": _TIME,
                    "startTime": _TIME,
                    "endTime": _TIME,
                    "lastUpdated": _TIME,
                    **_COUNTS,
                    "steps": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "stepName": {"type": "string"},
                                "status": {"type": "string"},
                                **_COUNTS,
                                "checkpoint": {"nullable": True},
                                "contextError": {
                                    "type": "string",
                                    "nullable": True,
                                    "description": "Why the step's context could not be"
                                    " read (then it has no checkpoint); null when it was",
                                },
                                "startTime": _TIME,
                                "endTime": _TIME,
                                "exitMessage": {"type": "string"},
                            },
                        },
                    },
                    "progress": {
                        "type": "object",
                        "nullable": True,
                        "description": "Live counts while the execution runs in this process;"
                        " null when another replica runs it (then only the job repository's"
                        " committed counts are known)",
                        "properties": {
                            "read": {"type": "integer"},
                            "written": {"type": "integer"},
                            "filtered": {"type": "integer"},
                            "skipped": {"type": "integer"},
                            "commits": {"type": "integer"},
                            "itemsPerSecond": {"type": "number"},
                            "retrying": {
                                "type": "array",
                                "description": "What retries now after availability faults,"
                                " oldest first; each chunk has a budget of"
                                " RETRY_BUDGET_SECONDS of its own",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "what": {
                                            "type": "string",
                                            "example": "step couponUsageStatsStep: a chunk",
                                        },
                                        "error": {
                                            "type": "string",
                                            "description": "the last fault",
                                            "example": "store service GET /api/v1/stores: HTTP 503",
                                        },
                                        "attempts": {
                                            "type": "integer",
                                            "description": "failed so far",
                                        },
                                        "since": {
                                            "type": "string",
                                            "format": "date-time",
                                            "description": "the first attempt",
                                        },
                                        "budgetLeftSeconds": {"type": "number"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "Health": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["UP", "DOWN"]},
                    "components": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "string", "enum": ["UP", "DOWN"]},
                                "details": {"type": "object"},
                            },
                        },
                        "example": {"db": {"status": "UP"}, "rabbit": {"status": "UP"}},
                    },
                },
            },
        },
    },
}

_SCHEMAS: dict[str, dict[str, Any]] = {
    LOCAL_DATE: {"type": "string", "format": "date"},
    INTEGER: {"type": "integer"},
    BOOLEAN: {"type": "boolean"},
    LONG: {"type": "integer", "format": "int64"},
}


def _query(parameter: Parameter, jobs: Sequence[JobSpec]) -> dict[str, Any]:
    """A job parameter as a query parameter, saying which jobs take it and its default."""
    takes = takers(parameter.name, jobs)
    schema: dict[str, Any] = dict(_SCHEMAS[parameter.type])
    if parameter.choices and parameter.type == INTEGER:
        values = [int(choice) for choice in parameter.choices]
        schema.update(minimum=min(values), maximum=max(values))
    elif parameter.choices:
        schema["enum"] = list(parameter.choices)
    return {
        "name": parameter.name,
        "in": "query",
        "description": f"{parameter.help} ({takes})",
        "schema": schema,
    }


def openapi(jobs: Sequence[JobSpec]) -> dict[str, Any]:
    """The document, with the jobs' names and parameters as they declare them."""
    document = copy.deepcopy(_DOCUMENT)
    names = ", ".join(f"`{spec.path}` (`{spec.name}`)" for spec in jobs)
    job_name = {**_JOB_NAME, "description": f"The job, by its path or Spring name: {names}"}
    paths = document["paths"]
    launch = paths["/api/v1/jobs/{jobName}"]["post"]
    launch["parameters"] = [
        job_name,
        *(_query(p, mine) for p, mine in declared_parameters(jobs).values()),
        *launch["parameters"][1:],  # from, to
    ]
    estimated = [spec for spec in jobs if spec.estimate is not None]
    paths["/api/v1/jobs/{jobName}/estimate"]["get"]["parameters"] = [
        job_name,
        *(
            _query(p, mine)
            for p, mine in declared_parameters(estimated).values()
            if p.name != DRY_RUN
        ),
    ]
    for operations in paths.values():
        for operation in operations.values():
            operation["parameters"] = [
                job_name if p["name"] == "jobName" else p for p in operation.get("parameters", [])
            ]
            if not operation["parameters"]:
                del operation["parameters"]
    return document
