"""couponUsageStatsJob declared: its parameters and schedule (this module imports nothing
heavy; the step's code, app.jobs.usage_stats, is imported when a run builds it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from app.runtime.job import DRY_RUN_PARAMETER, Cron, JobSpec, Parameter, code
from app.runtime.parameters import DryRunFlag, LocalDate

WINDOW_DAYS = 20  # the run date's window of coupon uses, in days up to it


@dataclass(frozen=True)
class StatsSettings:
    """The settings the stats job reads (app/defaults.toml says what each is)."""

    STATS_READ: str
    WINDOW_SLACK_MINUTES: int
    READ_STREAMS: int


SPEC = JobSpec(
    name="couponUsageStatsJob",
    path="coupon-usage-stats",
    title="Usage stats",
    # A real run records runDate alone, as the old service's runs did; a dry run is an
    # instance of its own (`parameters.dry_run`).
    parameters=(
        Parameter("runDate", LocalDate(lookback_days=WINDOW_DAYS), "YYYY-MM-DD"),
        replace(DRY_RUN_PARAMETER, kind=DryRunFlag(records_false=False)),
    ),
    build=code("app.jobs.usage_stats:build"),
    settings=StatsSettings,
    backfills=True,
    # Every night at 01:00 for yesterday; COMPLETED by 02:30, or the alert fires.
    schedule=Cron(
        "0 1 * * *",
        lambda at: {"runDate": (at.date() - timedelta(days=1)).isoformat()},
        completes_within=timedelta(minutes=90),
    ),
)
