"""Job parameters as operators type them (`runDate=2025-10-31`, `targetHour=10`), checked."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LocalDate:
    """A date as YYYY-MM-DD; the job looks `lookback_days` back from it, so the earliest
    accepted date is that many days after 0001-01-01."""

    lookback_days: int = 0
    java = LOCAL_DATE
    blank_is_absent = True  # runDate= takes the default, as the old service's did
    choices: tuple[str, ...] = ()
    form = "YYYY-MM-DD"

    def parse(self, name: str, value: str) -> list[JobParameter]:
        parsed = iso_date(name, value)
        earliest = date.min + timedelta(days=self.lookback_days)
        if parsed < earliest:
            raise ParameterError(name, f"must be {earliest.isoformat()} or later")
        return [JobParameter(name, LOCAL_DATE, parsed.isoformat())]


@dataclass(frozen=True)
class Integer:
    """A whole number in decimal digits, from `low` to `high` where given (within a
    Java Long), a sign only where it may be negative."""

    low: int | None = None
    high: int | None = None
    java = INTEGER
    blank_is_absent = True
    form = "an integer"

    @property
    def choices(self) -> tuple[str, ...]:
        """Its values, where they are few enough to pick from (a select)."""
        if self.low is None or self.high is None or self.high - self.low >= 32:
            return ()
        return tuple(str(n) for n in range(self.low, self.high + 1))

    def parse(self, name: str, value: str) -> list[JobParameter]:
        low, high = self.low, self.high
        signed = low is None or low < 0
        digits = 18 if high is None or signed else len(str(high))
        number = re.fullmatch(rf"{'[+-]?' if signed else ''}[0-9]{{1,{digits}}}", value)
        if (
            number is None
            or not (low is None or low <= int(value))
            or (high is not None and int(value) > high)
        ):
            bounds = "" if low is None or high is None else f" from {low} to {high}"
            raise ParameterError(name, f"must be an integer{bounds}, got {value[:40]!r}")
        return [JobParameter(name, INTEGER, str(int(value)))]


@dataclass(frozen=True)
class DryRunFlag:
    """dryRun, true or false (see `dry_run`); `records_false`: whether a real run records
    dryRun=false (not identifying) or nothing."""

    records_false: bool = True
    java = BOOLEAN
    blank_is_absent = False  # dryRun= is refused: a real run is never a blank's default
    choices: tuple[str, ...] = ()
    form = "true or false"

    def parse(self, name: str, value: str) -> list[JobParameter]:
        parsed = dry_run({name: value})
        return [p for p in parsed if p.identifying or self.records_false]


# What parses a parameter's value: the Java type Spring records, the values it takes where
# they are few, what it looks like; `parse` raises ParameterError naming the parameter.
Kind = LocalDate | Integer | DryRunFlag


_last_run_id = 0


def _next_run_id() -> int:
    """The clock in microseconds, strictly increasing within the process."""
    global _last_run_id
    _last_run_id = max(_last_run_id + 1, time.time_ns() // 1000)
    return _last_run_id


def now_in(tz: ZoneInfo) -> datetime:
    return datetime.now(tz)
