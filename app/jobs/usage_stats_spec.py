"""couponUsageStatsJob declared: its parameters and schedule (this module imports nothing
heavy; the step's code, app.jobs.usage_stats, is imported when a run builds it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from app.model import JobParameter
from app.runtime import parameters
from app.runtime.job import DRY_RUN_PARAMETER, Cron, JobSpec, Parameter, code
from app.runtime.parameters import LOCAL_DATE

WINDOW_DAYS = 20  # the run date's window of coupon uses, in days up to it


def parse(raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
    """runDate (required). A dry run is an instance of its own (`parameters.dry_run`); a
    real run records runDate alone, as the old service's runs did."""
    dry_run = [parameter for parameter in parameters.dry_run(raw) if parameter.identifying]
    return [parameters.run_date(raw, lookback_days=WINDOW_DAYS), *dry_run]


SPEC = JobSpec(
    name="couponUsageStatsJob",
    path="coupon-usage-stats",
    title="Usage stats",
    parameters=(
        Parameter("runDate", LOCAL_DATE, "YYYY-MM-DD"),
        DRY_RUN_PARAMETER,
    ),
    parse=parse,
    build=code("app.jobs.usage_stats:build"),
    backfills=True,
    # Every night at 01:00 for yesterday; COMPLETED by 02:30, or the alert fires.
    schedule=Cron(
        "0 1 * * *",
        lambda at: {"runDate": (at.date() - timedelta(days=1)).isoformat()},
        completes_within=timedelta(minutes=90),
    ),
)
