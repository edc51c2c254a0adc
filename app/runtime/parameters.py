"""Job parameters as operators type them (`runDate=2025-10-31`, `targetHour=10`), checked."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.errors import Refusal
from app.model import JobParameter

LOCAL_DATE = "java.time.LocalDate"
INTEGER = "java.lang.Integer"
BOOLEAN = "java.lang.Boolean"
LONG = "java.lang.Long"
DRY_RUN = "dryRun"  # a job's parameter: true writes what its writer would send, sends nothing


class ParameterError(Refusal):
    """A parameter is missing or malformed; `parameter` names it for the 400 answer."""

    code = "INVALID_PARAMETER"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


def run_date(
    raw: Mapping[str, str], *, default: date | None = None, lookback_days: int = 0
) -> JobParameter:
    """runDate as YYYY-MM-DD; the job looks `lookback_days` back from it, so the
    earliest accepted date is that many days after 0001-01-01."""
    value = raw.get("runDate")
    if value is None or value == "":
        if default is None:
            raise ParameterError("runDate", "is required, as YYYY-MM-DD")
        return JobParameter("runDate", LOCAL_DATE, default.isoformat())
    parsed = iso_date("runDate", value)
    earliest = date.min + timedelta(days=lookback_days)
    if parsed < earliest:
        raise ParameterError("runDate", f"must be {earliest.isoformat()} or later")
    return JobParameter("runDate", LOCAL_DATE, parsed.isoformat())


def iso_date(name: str, value: str) -> date:
    """`value` as a YYYY-MM-DD date, or a ParameterError naming `name`."""
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 10:
        raise ParameterError(name, f"must be a date as YYYY-MM-DD, got {value[:40]!r}")
    return parsed


MAX_BACKFILL_DAYS = 366


def backfill_dates(first: str, last: str) -> list[date]:
    """The run dates `first` to `last`, both included (a backfill's `from` and `to`)."""
    start, end = iso_date("from", first), iso_date("to", last)
    if end < start:
        raise ParameterError("to", f"must not be before from ({start.isoformat()})")
    days = (end - start).days + 1
    if days > MAX_BACKFILL_DAYS:
        raise ParameterError("to", f"a backfill covers at most {MAX_BACKFILL_DAYS} days")
    return [start + timedelta(days=n) for n in range(days)]


def target_hour(raw: Mapping[str, str], *, default: int) -> JobParameter:
    value = raw.get("targetHour")
    if value is None or value == "":
        return JobParameter("targetHour", INTEGER, str(default))
    if not (value.isascii() and value.isdigit() and len(value) <= 2 and int(value) <= 23):
        raise ParameterError("targetHour", f"must be an integer from 0 to 23, got {value[:40]!r}")
    return JobParameter("targetHour", INTEGER, str(int(value)))


def dry_run(raw: Mapping[str, str]) -> list[JobParameter]:
    """dryRun as true or false. A real run records `dryRun=false`, not identifying, so
    its instance is the one the schedules launch. A dry run is an instance of its own:
    `dryRun=true` and a fresh `run.id` identify it (Spring's RunIdIncrementer), so it
    never blocks, completes or checkpoints anything a real run reads, and repeats at will.
    """
    value = raw.get("dryRun", "false").lower()
    if value not in ("true", "false"):
        raise ParameterError("dryRun", f"must be true or false, got {value[:40]!r}")
    if value == "false":
        return [JobParameter("dryRun", BOOLEAN, value, identifying=False)]
    return [
        JobParameter("dryRun", BOOLEAN, value),
        JobParameter("run.id", LONG, str(_next_run_id())),
    ]


_last_run_id = 0


def _next_run_id() -> int:
    """The clock in microseconds, strictly increasing within the process."""
    global _last_run_id
    _last_run_id = max(_last_run_id + 1, time.time_ns() // 1000)
    return _last_run_id


def now_in(tz: ZoneInfo) -> datetime:
    return datetime.now(tz)
