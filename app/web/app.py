"""The daemon's HTTP face: the admin API (JWT), health, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, tzinfo
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from asyncmy.pool import Pool

from app.edges.auth import verify_admin_token
from app.model import JobExecution, Status
from app.pipeline.chunk import StepProgress
from app.repository.rules import allowed
from app.runtime.automation import Schedule
from app.runtime.job import JobSpec, UnknownJob, find_job
from app.runtime.launcher import Launcher, RunningJob
from app.runtime.operator import JobOperator, NoSuchExecution, Stopped
from app.runtime.parameters import ParameterError, iso_date, now_in
from app.runtime.resources import Resources
from app.runtime.scheduler import scheduled_runs
from app.spring_format import UNDECODABLE
from app.web.console import console_routes
from app.web.errors import ApiError, ServerLog, error_middleware, execution_url
from app.web.metrics import (
    EXPOSITION,
    REPOSITORY_METRICS,
    exposition_registry,
    metrics_middleware,
    prometheus,
)
from app.web.openapi import openapi
from app.web.repository_metrics import (
    READ_TIMEOUT_SECONDS,
    READ_TTL_SECONDS,
    Figures,
    RepositoryMetrics,
)

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[object]]  # returns when healthy, raises otherwise
HEALTH_TIMEOUT_SECONDS = 0.5
LIST_LIMIT_DEFAULT = 20
RECENT_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 100
_MAX_BIGINT = 2**63 - 1
_BIGINT_DIGITS = len(str(_MAX_BIGINT))

LAUNCHER = web.AppKey("launcher", Launcher)
DOCUMENT = web.AppKey("document", dict)
CLAIMS = web.RequestKey("claims", dict)


class Health:
    """Runs the checks concurrently; an answer waits at most `timeout` for each.

    A check still running when an answer is due is reported DOWN and left to finish
    (within `_CHECK_BOUND` x `timeout`), shared by the answers that come meanwhile:
    cancelling it would close what it checks with (the broker's check channel, a pinged
    connection), each next check would open that again, and under a load of probes one
    slow answer would snowball. `close` cancels what still runs.
    """

    def __init__(self, checks: Mapping[str, HealthCheck], timeout: float) -> None:
        self._checks = dict(checks)
        self._timeout = timeout
        self._running: dict[str, asyncio.Task[None]] = {}

    async def report(self) -> dict[str, Any]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._component(name) for name in names))
        components = dict(zip(names, results, strict=True))
        up = all(c["status"] == "UP" for c in components.values())
        return {"status": "UP" if up else "DOWN", "components": components}

    async def _component(self, name: str) -> dict[str, Any]:
        task = self._running.get(name)
        if task is None:
            task = self._running[name] = asyncio.create_task(self._bounded(name))
            task.add_done_callback(partial(self._forget, name))
        done, _ = await asyncio.wait({task}, timeout=self._timeout)
        if not done:
            return {"status": "DOWN", "details": {"error": f"no answer in {self._timeout:g} s"}}
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
        if error is not None:
            # The type only: messages of driver errors may carry hosts and user names.
            return {"status": "DOWN", "details": {"error": type(error).__name__}}
        return {"status": "UP"}

    async def _bounded(self, name: str) -> None:
        async with asyncio.timeout(self._timeout * _CHECK_BOUND):
            await self._checks[name]()

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._running.get(name) is task:
            del self._running[name]
        if not task.cancelled():
            task.exception()

    async def close(self) -> None:
        running = list(self._running.values())
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)


_CHECK_BOUND = 10  # a check left to finish is cancelled past 10 x the answer's timeout


HEALTH = web.AppKey("health", Health)


async def check_db(pool: Pool) -> None:
    async with pool.acquire() as conn:
        try:
            await conn.ping(reconnect=False)
        except BaseException:
            conn.close()  # a ping cut short leaves the protocol mid-answer: not reusable
            raise


def resource_checks(resources: Resources) -> dict[str, HealthCheck]:
    """The health components of a daemon: its database pool and its broker connection."""
    checks: dict[str, HealthCheck] = {"db": lambda: check_db(resources.pool)}
    if resources.broker is not None:
        checks["rabbit"] = resources.broker.check
    return checks


def create_app(
    launcher: Launcher,
    health_checks: Mapping[str, HealthCheck],
    *,
    health_timeout: float = HEALTH_TIMEOUT_SECONDS,
    metrics_ttl: float = READ_TTL_SECONDS,
    metrics_timeout: float = READ_TIMEOUT_SECONDS,
    schedules: Callable[[], Sequence[Schedule]] = tuple,
) -> web.Application:
    """The admin API, console and actuator of `launcher`; `schedules`: those this process
    runs at the time of a scrape (their latest due runs are exposed for the alert on runs
    not COMPLETED, but not those due before anyone ran them: `scheduled_runs`)."""
    settings = launcher.settings
    document = openapi(list(launcher.jobs.values()))
    app = web.Application(
        middlewares=[
            metrics_middleware,
            error_middleware(settings.timezone),
            _auth_middleware(settings.jwt_key),
            _query_middleware(document),
        ],
        handler_args={"logger": ServerLog()},
    )
    app[LAUNCHER] = launcher
    app[DOCUMENT] = document
    app[HEALTH] = Health(health_checks, health_timeout)
    app[REPOSITORY_METRICS] = RepositoryMetrics(
        functools.partial(_read_figures, launcher, schedules, datetime.now(settings.timezone)),
        ttl=metrics_ttl,
        timeout=metrics_timeout,
    )
    app[EXPOSITION] = exposition_registry(settings.APPLICATION_NAME, app[REPOSITORY_METRICS])
    app.cleanup_ctx.append(_close_health)
    app.cleanup_ctx.append(_close_repository_metrics)
    # executions/{id} before {jobName}/executions: both have five segments. No job is
    # named `executions`: that path is the list of every job's executions (GET only).
    app.router.add_routes(
        [
            web.get("/api/v1/jobs", list_jobs),
            web.get("/api/v1/jobs/executions", list_recent_executions),
            web.post("/api/v1/jobs/{jobName:(?!executions$)[^/]+}", launch_job),
            web.get("/api/v1/jobs/executions/{id}", get_execution),
            web.post("/api/v1/jobs/executions/{id}/stop", stop_execution),
            web.post("/api/v1/jobs/executions/{id}/restart", restart_execution),
            web.post("/api/v1/jobs/executions/{id}/abandon", abandon_execution),
            web.get("/api/v1/jobs/{jobName}/executions", list_executions),
            web.get("/api/v1/jobs/{jobName}/estimate", estimate_job),
            web.get("/actuator/health", health),
            web.get("/actuator/health/liveness", liveness),
            web.get("/actuator/health/readiness", readiness),
            web.get("/actuator/prometheus", prometheus),
            web.get("/v3/api-docs", api_docs),
            *console_routes(settings.APP_TIMEZONE),
        ]
    )
    return app


async def _read_figures(
    launcher: Launcher, schedules: Callable[[], Sequence[Schedule]], since: datetime
) -> Figures:
    """The job repository's figures; `since`: when this process began (the schedules it
    runs at a scrape are owed their runs from then on, or from their job's first run)."""
    repository = launcher.repository
    now = datetime.now(launcher.settings.timezone)
    scheduled = await scheduled_runs(repository, schedules(), now, since=since)
    return Figures(await repository.job_tallies(), scheduled)


async def _close_health(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[HEALTH].close()


async def _close_repository_metrics(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[REPOSITORY_METRICS].close()


def _auth_middleware(key: bytes) -> Middleware:
    """Everything under /api/ needs an admin token; the rest (actuator, docs) is open."""

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            request[CLAIMS] = verify_admin_token(request.headers.get("Authorization"), key)
        return await handler(request)

    return authorize


def _query_middleware(document: Mapping[str, Any]) -> Middleware:
    """Under /api/, the query parameters an operation declares in the OpenAPI document,
    each once: another name, or one given twice, is a 400 naming it (never ignored, nor
    the first of repeats taken). What a job takes is the job's own check (`JobSpec.read`)."""
    declared = {
        (path, method.upper()): [
            p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"
        ]
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
    }

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        names = None if resource is None else declared.get((resource.canonical, request.method))
        if names is not None:
            for name in request.query:
                if name not in names:
                    takes = ", ".join(_taken(request, names)) or "none"
                    raise ParameterError(
                        name[:40], f"not a parameter of this call (it takes {takes})"
                    )
                given = len(request.query.getall(name))
                if given > 1:
                    raise ParameterError(name, f"given {given} times; give it once")
        return await handler(request)

    return check


# ---- the admin API ----------------------------------------------------------------


def _operator(request: web.Request) -> JobOperator:
    return JobOperator.of(request.app[LAUNCHER])


def _taken(request: web.Request, names: Sequence[str]) -> list[str]:
    """Of the parameters a call declares, those it takes here: on a job's path, only that
    job's among the jobs' parameters (the stats job takes no targetHour)."""
    jobs = request.app[LAUNCHER].jobs.values()
    try:
        mine = {p.name for p in find_job(jobs, request.match_info.get("jobName", "")).parameters}
    except UnknownJob:
        return list(names)
    theirs = {p.name for spec in jobs for p in spec.parameters} - mine
    return [name for name in names if name not in theirs]


def _job(request: web.Request) -> JobSpec:
    return _find(request, "jobName", request.match_info["jobName"])


def _find(request: web.Request, parameter: str, name: str) -> JobSpec:
    """The job named by `parameter`; a ParameterError naming it if there is none."""
    launcher = request.app[LAUNCHER]
    try:
        return launcher.find(name)
    except UnknownJob:
        raise ParameterError(
            parameter, f"no job named {name[:60]!r}; known: {', '.join(launcher.jobs)}"
        ) from None


async def list_jobs(request: web.Request) -> web.Response:
    """The jobs as they declare themselves: what the console renders its forms from."""
    launcher = request.app[LAUNCHER]
    now = now_in(launcher.settings.timezone)
    return web.json_response({"jobs": [job_view(spec, now) for spec in launcher.jobs.values()]})


def job_view(spec: JobSpec, now: datetime) -> dict[str, Any]:
    """`suggested`: the parameters its schedule would give now (the console's form
    starts from them)."""
    schedule = spec.schedule
    return {
        "name": spec.name,
        "path": spec.path,
        "title": spec.title,
        "parameters": [
            {
                "name": p.name,
                "type": p.type,
                "help": p.help,
                "default": p.default,
                "choices": list(p.choices),
            }
            for p in spec.parameters
        ],
        "schedule": None
        if schedule is None
        else {"cron": schedule.cron, "punctual": schedule.punctual},
        "backfills": spec.backfills,
        "publishes": spec.publishes,
        "estimates": spec.estimate is not None,
        "confirm": spec.confirm,
        "suggested": {} if schedule is None else schedule.parameters(now),
    }


async def launch_job(request: web.Request) -> web.Response:
    """Start the job in the background; a completed instance runs again (that is what
    operators call the API for). `from` and `to` instead of `runDate` launch a backfill:
    each date its own instance, queued behind MAX_RUNNING_EXECUTIONS."""
    spec = _job(request)
    raw = dict(request.query)  # each given once (`_query_middleware`)
    if "from" in raw or "to" in raw:
        return await _backfill(request, spec, raw)
    operator = _operator(request)
    run = await _launched(request, "launch", lambda: operator.start(spec.path, raw, rerun=True))
    return _accepted(run)


async def _backfill(request: web.Request, spec: JobSpec, raw: dict[str, str]) -> web.Response:
    first, last = raw.pop("from", ""), raw.pop("to", "")
    runs, refusals = await _operator(request).backfill(spec.path, first, last, raw, rerun=True)
    launched = [_launch_body(run.execution) for _, run in runs]
    refused = [{"runDate": day.isoformat(), "message": str(exc)} for day, exc in refusals]
    log.info(
        "backfill requested through the API: job=%s dates=%d launched=%d refused=%d by=%s",
        spec.name,
        len(launched) + len(refused),
        len(launched),
        len(refused),
        _who(request),
    )
    return web.json_response({"executions": launched, "refused": refused}, status=202)


async def _launched(
    request: web.Request, what: str, start: Callable[[], Awaitable[RunningJob]]
) -> RunningJob:
    """A launch or a restart, logged with who asked for it."""
    run = await start()
    log.info(
        "%s requested through the API: execution=%d by=%s", what, run.execution.id, _who(request)
    )
    return run


def _who(request: web.Request) -> str:
    claims = request[CLAIMS]
    return str(claims.get("username") or claims.get("sub"))


def _launch_body(execution: JobExecution) -> dict[str, Any]:
    return {
        "executionId": execution.id,
        "jobName": execution.job_name,
        "status": execution.status,
        "parameters": execution.parameters,
    }


def _accepted(run: RunningJob) -> web.Response:
    execution = run.execution
    return web.json_response(
        _launch_body(execution), status=202, headers={"Location": execution_url(execution.id)}
    )


def _execution_id(request: web.Request) -> int | None:
    """The path's execution id; None where no execution can have it (past BIGINT)."""
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit():
        raise ParameterError("id", f"must be an execution id (digits), got {raw[:40]!r}")
    # Past BIGINT no execution can exist (and int() refuses over 4,300 digits).
    if len(raw) <= _BIGINT_DIGITS and int(raw) <= _MAX_BIGINT:
        return int(raw)
    return None


def _not_found(request: web.Request) -> NoSuchExecution:
    """For an id past BIGINT, which no execution can have."""
    return NoSuchExecution(f"no job execution {request.match_info['id'][:40]}")


async def get_execution(request: web.Request) -> web.Response:
    execution_id = _execution_id(request)
    if execution_id is None:
        raise _not_found(request)
    execution = await _operator(request).get(execution_id)
    return web.json_response(await _view(request, execution))


async def _operated(
    request: web.Request,
    command: Callable[[JobOperator, int], Awaitable[object]],
    what: str,
) -> JobExecution:
    """The operator's stop or abandon of the path's execution; the execution it reached
    (a stop may reach the one that carries its run on), as it is now."""
    operator = _operator(request)
    execution_id = _execution_id(request)
    if execution_id is None:
        raise _not_found(request)
    done = await command(operator, execution_id)
    reached = done.execution_id if isinstance(done, Stopped) else execution_id
    log.info(
        "%s through the API: execution=%d%s by=%s",
        what,
        execution_id,
        "" if reached == execution_id else f" (its run's execution {reached})",
        _who(request),
    )
    return await operator.get(reached)


async def stop_execution(request: web.Request) -> web.Response:
    """JobOperator's stop of the execution's run: STOPPING now; the runner stops after the
    chunks it is processing (STOPPED, restartable): at once on this replica, at its next
    chunk commit on another. A run taken over answers with the execution that carries it
    on (its Location); one awaiting its automatic restart is STOPPED at once."""
    execution = await _operated(request, JobOperator.stop, "stop requested")
    return web.json_response(
        await _view(request, execution),
        status=202,
        headers={"Location": execution_url(execution.id)},
    )


async def restart_execution(request: web.Request) -> web.Response:
    """JobOperator's restart: a FAILED or STOPPED execution's instance runs again, from
    its checkpoint, as a new execution."""
    operator = _operator(request)
    execution_id = _execution_id(request)
    if execution_id is None:
        raise _not_found(request)
    run = await _launched(request, "restart", lambda: operator.restart(execution_id))
    return _accepted(run)


async def abandon_execution(request: web.Request) -> web.Response:
    """JobOperator's abandon: a STOPPED, FAILED or STOPPING execution becomes ABANDONED;
    it is never restarted, and the next launch of its instance starts from scratch."""
    execution = await _operated(request, JobOperator.abandon, "abandoned")
    return web.json_response(await _view(request, execution))


def _limit(request: web.Request, default: int) -> int:
    raw = request.query.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= LIST_LIMIT_MAX):
        raise ParameterError(
            "limit", f"must be an integer from 1 to {LIST_LIMIT_MAX}, got {raw[:40]!r}"
        )
    return int(raw)


async def list_executions(request: web.Request) -> web.Response:
    """The job's most recent executions, newest first."""
    spec = _job(request)
    limit = _limit(request, LIST_LIMIT_DEFAULT)
    executions = await _operator(request).executions(job_name=spec.name, limit=limit)
    views = await _views(request, executions)
    return web.json_response({"jobName": spec.name, "executions": views})


async def list_recent_executions(request: web.Request) -> web.Response:
    """The most recent executions of every job, newest first, a page at a time: `job`,
    `status` and `runDate` filter; `before` (the previous page's `nextBefore`) pages on."""
    query = request.query
    status = query.get("status")
    known = [s.value for s in Status]
    if status is not None and status not in known:
        raise ParameterError("status", f"must be one of {', '.join(known)}, got {status[:40]!r}")
    job = query.get("job")
    job_name = None if job is None else _find(request, "job", job).name
    run_date = None if "runDate" not in query else iso_date("runDate", query["runDate"])
    before = None
    if "before" in query:
        raw = query["before"]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= _BIGINT_DIGITS):
            raise ParameterError("before", f"must be an execution id (digits), got {raw[:40]!r}")
        before = int(raw)
    limit = _limit(request, RECENT_LIMIT_DEFAULT)
    # One more than asked: whether an older page exists.
    executions = await _operator(request).executions(
        job_name=job_name, status=status, run_date=run_date, before=before, limit=limit + 1
    )
    page = executions[:limit]
    older = len(executions) > limit
    return web.json_response(
        {
            "executions": await _views(request, page),
            "nextBefore": page[-1].id if older else None,
        }
    )


async def estimate_job(request: web.Request) -> web.Response:
    """What a launch with these parameters would process (the job's own count, e.g. the
    fan-out's members for runDate/targetHour); 404 for a job that has no estimate."""
    launcher = request.app[LAUNCHER]
    spec = _job(request)
    if spec.estimate is None:
        raise ApiError(404, "NO_ESTIMATE", f"job {spec.path} has no estimate")
    parsed = spec.read(request.query, now_in(launcher.settings.timezone))
    values = {p.name: p.value for p in parsed if p.identifying}
    estimate = await spec.estimate(launcher.resources, values)
    return web.json_response(
        {
            "jobName": spec.name,
            "parameters": values,
            "count": estimate.count,
            "unit": estimate.unit,
        }
    )


async def _view(request: web.Request, execution: JobExecution) -> dict[str, Any]:
    [view] = await _views(request, [execution])
    return view


async def _views(request: web.Request, executions: Sequence[JobExecution]) -> list[dict[str, Any]]:
    """The executions as the API shows them, each with the commands the rules allow on it
    now (which needs its instance's newest execution)."""
    launcher = request.app[LAUNCHER]
    latest = await launcher.repository.latest_executions({e.instance_id for e in executions})
    return [
        execution_view(
            e,
            launcher.running.get(e.id),
            launcher.settings.timezone,
            allowed(e, latest.get(e.instance_id, e.id)),
        )
        for e in executions
    ]


def execution_view(
    execution: JobExecution, running: RunningJob | None, tz: tzinfo, actions: Sequence[str]
) -> dict[str, Any]:
    """Counts are the committed ones (summed over the steps); `progress` holds the live
    counts while the execution runs in this process, else null. Times are in APP_TIMEZONE,
    with their offset. `actions`: the commands the rules allow on it now."""

    def time(value: datetime | None) -> str | None:
        return value.astimezone(tz).isoformat() if value is not None else None

    steps = execution.steps
    skip_count = sum(s.skip_count for s in steps)
    skipped = [key for s in steps for key in s.context.get("skipped", [])]
    causes = [cause for s in steps for cause in s.context.get("skipCauses", [])]
    messages = [s.context["messages"] for s in steps if "messages" in s.context]
    return {
        "executionId": execution.id,
        "jobName": execution.job_name,
        "status": execution.status,
        "dryRun": execution.dry_run,
        "dryRunOutput": execution.context.get("dryRunOutput"),
        "exitCode": execution.exit_code,
        "exitMessage": execution.exit_message,
        "parameters": execution.parameters,
        "createTime": time(execution.create_time),
        "startTime": time(execution.start_time),
        "endTime": time(execution.end_time),
        "lastUpdated": time(execution.last_updated),
        "readCount": sum(s.read_count for s in steps),
        "writeCount": sum(s.write_count for s in steps),
        "filterCount": sum(s.filter_count for s in steps),
        "skipCount": skip_count,
        "commitCount": sum(s.commit_count for s in steps),
        "skippedItems": {"count": skip_count, "ids": skipped, "causes": causes},
        "messages": messages[0] if messages else None,
        "steps": [
            {
                "stepName": s.name,
                "status": s.status,
                "readCount": s.read_count,
                "writeCount": s.write_count,
                "filterCount": s.filter_count,
                "skipCount": s.skip_count,
                "commitCount": s.commit_count,
                "checkpoint": s.checkpoint,
                "contextError": s.context.get(UNDECODABLE),
                "startTime": time(s.start_time),
                "endTime": time(s.end_time),
                "exitMessage": s.exit_message,
            }
            for s in steps
        ],
        "progress": progress_view(running.progress, tz) if running is not None else None,
        "actions": list(actions),
    }


def progress_view(progress: StepProgress, tz: tzinfo) -> dict[str, Any]:
    """The live counts, and what is retrying now, oldest first, with its budget left."""
    return {
        **progress.as_dict(),
        "retrying": [
            {
                "what": retry.what,
                "error": retry.error,
                "attempts": retry.attempts,
                "since": retry.since.astimezone(tz).isoformat(),
                "budgetLeftSeconds": round(retry.budget_left(), 1),
            }
            for retry in progress.retries
        ],
    }


# ---- open endpoints -----------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    report = await request.app[HEALTH].report()
    return web.json_response(report, status=200 if report["status"] == "UP" else 503)


async def liveness(request: web.Request) -> web.Response:
    """Spring Boot's liveness probe: the process answers."""
    return web.json_response({"status": "UP"})


async def readiness(request: web.Request) -> web.Response:
    """Spring Boot's readiness probe: DOWN (503) once the service shuts down, so that a
    load balancer sends nothing more while running steps finish."""
    if request.app[LAUNCHER].accepting:
        return web.json_response({"status": "UP"})
    return web.json_response({"status": "DOWN"}, status=503)


async def api_docs(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])
