"""couponUsageStatsFcmSendJob declared: its parameters and schedule (this module imports
nothing heavy; the step's code, app.jobs.fcm_send, and its broker client are imported
when a run builds it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from app.model import JobParameter
from app.runtime import parameters
from app.runtime.job import DRY_RUN_PARAMETER, Cron, JobSpec, Parameter, code
from app.runtime.parameters import INTEGER, LOCAL_DATE

LOOKBACK_DAYS = 2  # the stats it reads: those of the run date and the day before


def parse(raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
    """runDate (default: today) and targetHour (default: this hour), from `now` in
    APP_TIMEZONE; a dry run is an instance of its own (`parameters.dry_run`)."""
    return [
        parameters.run_date(raw, default=now.date(), lookback_days=LOOKBACK_DAYS),
        parameters.target_hour(raw, default=now.hour),
        *parameters.dry_run(raw),
    ]


SPEC = JobSpec(
    name="couponUsageStatsFcmSendJob",
    path="coupon-usage-stats-fcm-send",
    title="Push fan-out",
    parameters=(
        Parameter("runDate", LOCAL_DATE, "YYYY-MM-DD", default="today"),
        Parameter(
            "targetHour",
            INTEGER,
            "0..23",
            default="the current hour",
            choices=tuple(str(hour) for hour in range(24)),
        ),
        DRY_RUN_PARAMETER,
    ),
    parse=parse,
    build=code("app.jobs.fcm_send:build"),
    publishes=True,
    # At the top of every hour, for today and this hour; later pushes would arrive at the
    # wrong hour, so only within the misfire grace. A run takes seconds to minutes; with
    # its automatic restarts (7 minutes of backoff by default) it is over within 30.
    schedule=Cron(
        "0 * * * *",
        lambda at: {"runDate": at.date().isoformat(), "targetHour": str(at.hour)},
        punctual=True,
        completes_within=timedelta(minutes=30),
    ),
    estimate=code("app.jobs.fcm_send:estimate"),
    confirm="Send real pushes for {runDate} {targetHour}:00 ({zone})? Not a dry run: it reads"
    " {estimate} whose latest stats name that hour, and pushes each who has a push token"
    " and an active coupon event in their dong.",
)
