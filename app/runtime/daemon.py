"""`python -m app serve`: the admin API and the schedules until SIGTERM/SIGINT, then a
graceful stop (running steps end STOPPED after their chunks in flight, restartable)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from app.config import Settings
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.runtime.schedule import Scheduler
from app.web.app import create_app, resource_checks

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Admin and actuator requests are short; a request still open after this is cut off.
_HTTP_SHUTDOWN_SECONDS = 5.0


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with open_resources(settings, broker=True) as resources:
            launcher = Launcher(resources)
            scheduler = Scheduler(launcher, settings.timezone)
            runner = web.AppRunner(
                create_app(launcher, resource_checks(resources)),
                access_log=None,
                shutdown_timeout=_HTTP_SHUTDOWN_SECONDS,
            )
            await runner.setup()
            try:
                await web.TCPSite(runner, "0.0.0.0", settings.SERVER_PORT).start()
                if settings.SCHEDULER_ENABLED:
                    scheduler.start()
                log.info(
                    "serving on port %d; scheduler %s (%s)",
                    runner.addresses[0][1],
                    "enabled" if settings.SCHEDULER_ENABLED else "disabled",
                    settings.APP_TIMEZONE,
                )
                await stopping.wait()
                log.info(
                    "signal received: stopping (grace %g s for running jobs)",
                    settings.SHUTDOWN_GRACE_SECONDS,
                )
            finally:
                # The API stays up meanwhile: health answers, launches get 503.
                await scheduler.stop()
                await launcher.shutdown(settings.SHUTDOWN_GRACE_SECONDS)
                await runner.cleanup()
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
    log.info("stopped")
