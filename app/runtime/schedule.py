"""The cron triggers of the daemon, in APP_TIMEZONE.

Every replica fires every schedule; the job repository's launch rules make exactly one
of them run the instance, and the others are refused (AlreadyRunning/AlreadyComplete).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

import aiocron

from app.jobs import fcm_send, usage_stats
from app.metrics import SCHEDULER_ENABLED
from app.runtime.job import JobSpec
from app.runtime.launcher import Launcher, RunningJob, ShuttingDown
from app.runtime.repository import AlreadyComplete, AlreadyRunning

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    cron: str
    job: JobSpec
    parameters: Callable[[datetime], dict[str, str]]  # from the scheduled time


SCHEDULES: tuple[Schedule, ...] = (
    Schedule(
        "0 1 * * *",
        usage_stats.SPEC,
        lambda at: {"runDate": (at.date() - timedelta(days=1)).isoformat()},
    ),
    Schedule(
        "0 * * * *",
        fcm_send.SPEC,
        lambda at: {"runDate": at.date().isoformat(), "targetHour": str(at.hour)},
    ),
)


def scheduled_time(now: datetime) -> datetime:
    """The minute a trigger was meant for: the loop's monotonic timer may fire a few
    milliseconds before the wall clock reaches it, and 00:59:59.998 must not launch
    the instance of the hour (or the day) before."""
    return (now + timedelta(seconds=30)).replace(second=0, microsecond=0)


async def fire(launcher: Launcher, schedule: Schedule, now: datetime) -> RunningJob | None:
    """Launch the schedule's instance for `now` unless it ran or runs already (never a
    rerun of a completed one). Logs and swallows every failure: a schedule must never
    bring the daemon down."""
    at = scheduled_time(now)
    name = schedule.job.name
    try:
        parameters = schedule.parameters(at)
        return await launcher.launch(schedule.job, parameters, rerun=False)
    except (AlreadyComplete, AlreadyRunning) as exc:
        log.info("schedule %s at %s: not launched: %s", name, at.isoformat(), exc)
    except ShuttingDown:
        log.info("schedule %s at %s: not launched: shutting down", name, at.isoformat())
    except Exception:
        log.exception("schedule %s at %s: launch failed", name, at.isoformat())
    return None


class Scheduler:
    """The triggers of one process; `stop` ends them and awaits the launches in progress."""

    def __init__(
        self, launcher: Launcher, tz: tzinfo, schedules: Sequence[Schedule] = SCHEDULES
    ) -> None:
        self._launcher = launcher
        self._tz = tz
        self._schedules = tuple(schedules)
        self._crons: list[aiocron.Cron] = []
        self._firing: set[asyncio.Task[RunningJob | None]] = set()
        self._stopped = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for schedule in self._schedules:
            cron = aiocron.Cron(
                schedule.cron, func=self._trigger, args=(schedule,), loop=loop, tz=self._tz
            )
            cron.start()  # not start=True: that defers the start past a prompt stop()
            self._crons.append(cron)
        SCHEDULER_ENABLED.set(1)

    def _trigger(self, schedule: Schedule) -> None:
        # aiocron runs this in a task of its own that nobody awaits; the launch goes in
        # a task of ours, so that stop() can await it.
        if self._stopped:
            return
        now = datetime.now(self._tz)
        task = asyncio.create_task(fire(self._launcher, schedule, now))
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    async def stop(self) -> None:
        self._stopped = True
        SCHEDULER_ENABLED.set(0)
        for cron in self._crons:
            cron.stop()
        self._crons.clear()
        if self._firing:
            await asyncio.wait(self._firing)
