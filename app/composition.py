"""The composition root: the one place that wires the jobs, their schedules, the launcher
and the web app together (the runtime knows no job and no web module)."""

from __future__ import annotations

import errno
import importlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from app import jobs
from app.config import Settings, job_dirs
from app.errors import Refusal
from app.replicas import ReplicaRegistry
from app.repository.clock import zone_label
from app.runtime.automation import RestartPolicy, Schedule, schedules_of
from app.runtime.job import JobSpec
from app.runtime.launcher import Launcher
from app.runtime.reconciler import Reconciler
from app.runtime.resources import open_resources
from app.runtime.scheduler import Scheduler
from app.runtime.signals import stop_signals

if TYPE_CHECKING:
    from aiohttp.web import TCPSite

log = logging.getLogger(__name__)


def discover_jobs() -> tuple[JobSpec, ...]:
    """The SPEC of every job module, app/jobs/*_spec.py and those of JOB_DIRS (each folder
    goes on the import path), ordered by path; a new job is a module there."""
    names = [f"app.jobs.{module.stem}" for module in Path(jobs.__file__).parent.glob("*_spec.py")]
    for folder in job_dirs():
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
        names += [module.stem for module in folder.glob("*_spec.py")]
    found = [importlib.import_module(name).SPEC for name in names]
    return tuple(sorted(found, key=lambda spec: spec.path))


# Each job as declared; its step's code is imported when a run builds it: a run loads
# its own job alone.
JOBS: tuple[JobSpec, ...] = discover_jobs()


def schedules() -> tuple[Schedule, ...]:
    """The daemon's cron triggers, as the jobs declare them."""
    return schedules_of(JOBS)


# Admin and actuator requests are short; a request still open after this is cut off.
_HTTP_SHUTDOWN_SECONDS = 5.0


class CannotListen(Refusal):
    """`serve` cannot listen on SERVER_PORT (a start-up error: one line, exit 2)."""


def restart_policy(settings: Settings) -> RestartPolicy:
    return RestartPolicy(
        attempts=settings.AUTO_RESTART_ATTEMPTS,
        backoff_seconds=settings.AUTO_RESTART_BACKOFF_SECONDS,
        misfire_grace=timedelta(minutes=settings.FANOUT_MISFIRE_GRACE_MINUTES),
    )


@asynccontextmanager
async def open_launcher(settings: Settings, *, broker: bool) -> AsyncIterator[Launcher]:
    """A launcher of the service's jobs on resources of its own, closed on exit."""
    async with open_resources(settings, broker=broker) as resources:
        yield Launcher(resources, JOBS)


async def _listen(site: TCPSite, port: int) -> None:
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(
                f"port {port} is in use by another process; stop it or set SERVER_PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise CannotListen(
                f"port {port} needs privileges to listen on; set SERVER_PORT"
            ) from None
        raise


async def serve(settings: Settings) -> int:
    """`python -m app serve`: the admin API and the schedules until SIGTERM/SIGINT, then
    a graceful stop (running steps end STOPPED after their chunks in flight, restartable).
    The exit code: 0, or 1 if an outcome could not be recorded (the database away)."""
    # Imported here: the web server is the daemon's alone; `run` and the operator's
    # commands start without it.
    from aiohttp import web

    from app.web.app import create_app, resource_checks

    with stop_signals() as stopping:
        async with open_launcher(settings, broker=True) as launcher:
            registry = ReplicaRegistry(
                launcher.resources.pool, lease_seconds=settings.JOB_ABANDON_AFTER_SECONDS
            )
            scheduler = Scheduler(
                launcher,
                settings.timezone,
                schedules(),
                restart_policy(settings),
                registry,
                every=settings.HEARTBEAT_SECONDS,
            )
            # Every replica takes over the executions whose runner died; those that run
            # the schedules restart them, as every automatic launch, by their passes.
            reconciler = Reconciler(launcher.repository, every=settings.HEARTBEAT_SECONDS)
            runner = web.AppRunner(
                create_app(
                    launcher,
                    resource_checks(launcher.resources),
                    schedules=scheduler.active_schedules,
                ),
                access_log=None,
                shutdown_timeout=_HTTP_SHUTDOWN_SECONDS,
            )
            await runner.setup()
            try:
                site = web.TCPSite(runner, "0.0.0.0", settings.SERVER_PORT)
                await _listen(site, settings.SERVER_PORT)
                if settings.SCHEDULER_ENABLED:
                    scheduler.start()
                reconciler.start()
                clock = settings.database.clock
                log.info(
                    "serving on port %d; scheduler %s (%s); BATCH_* times in %s (%s)",
                    runner.addresses[0][1],
                    "enabled" if settings.SCHEDULER_ENABLED else "disabled",
                    settings.APP_TIMEZONE,
                    zone_label(await launcher.repository.clock_zone()),
                    clock.source,
                )
                for line in await launcher.repository.second_clock_warnings(clock.source):
                    log.warning(line)
                await stopping.wait()
                log.info(
                    "signal received: stopping (grace %g s for running jobs)",
                    settings.SHUTDOWN_GRACE_SECONDS,
                )
            finally:
                # The API stays up meanwhile: health answers, readiness and launches 503.
                launcher.stop_accepting()
                await reconciler.stop()
                await scheduler.stop()
                await launcher.shutdown(settings.SHUTDOWN_GRACE_SECONDS)
                await runner.cleanup()
            unrecorded = launcher.unrecorded
    if unrecorded:
        log.error(
            "stopped; %d outcome(s) could not be recorded: the next launch of each instance"
            " recovers it after JOB_ABANDON_AFTER_SECONDS",
            unrecorded,
        )
        return 1
    log.info("stopped")
    return 0
