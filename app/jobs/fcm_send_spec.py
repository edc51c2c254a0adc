"""couponUsageStatsFcmSendJob declared: its parameters and schedule (this module imports
nothing heavy; the step's code, app.jobs.fcm_send, and its broker client are imported
when a run builds it)."""

from __future__ import annotations

from datetime import timedelta

from app.runtime.job import DRY_RUN_PARAMETER, Cron, JobSpec, Parameter, code
from app.runtime.parameters import Integer, LocalDate

LOOKBACK_DAYS = 2  # the stats it reads: those of the run date and the day before


SPEC = JobSpec(
    name="couponUsageStatsFcmSendJob",
    path="coupon-usage-stats-fcm-send",
    title="Push fan-out",
    # The defaults from the time of the launch in APP_TIMEZONE; a dry run is an instance
    # of its own (`parameters.dry_run`).
    parameters=(
        Parameter(
            "runDate",
            LocalDate(lookback_days=LOOKBACK_DAYS),
            "YYYY-MM-DD",
            default="today",
            default_of=lambda now: now.date().isoformat(),
        ),
        Parameter(
            "targetHour",
            Integer(0, 23),
            "0..23",
            default="the current hour",
            default_of=lambda now: str(now.hour),
        ),
        DRY_RUN_PARAMETER,
    ),
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
