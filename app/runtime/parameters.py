"""Job parameters as operators type them (`runDate=2025-10-31`, `targetHour=10`), checked."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.model import JobParameter

LOCAL_DATE = "java.time.LocalDate"
INTEGER = "java.lang.Integer"
BOOLEAN = "java.lang.Boolean"


class ParameterError(ValueError):
    """A parameter is missing or malformed; `parameter` names it for the 400 answer."""

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
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 10:
        raise ParameterError("runDate", f"must be a date as YYYY-MM-DD, got {value[:40]!r}")
    earliest = date.min + timedelta(days=lookback_days)
    if parsed < earliest:
        raise ParameterError("runDate", f"must be {earliest.isoformat()} or later")
    return JobParameter("runDate", LOCAL_DATE, parsed.isoformat())


def target_hour(raw: Mapping[str, str], *, default: int) -> JobParameter:
    value = raw.get("targetHour")
    if value is None or value == "":
        return JobParameter("targetHour", INTEGER, str(default))
    if not (value.isascii() and value.isdigit() and len(value) <= 2 and int(value) <= 23):
        raise ParameterError("targetHour", f"must be an integer from 0 to 23, got {value[:40]!r}")
    return JobParameter("targetHour", INTEGER, str(int(value)))


def flag(raw: Mapping[str, str], name: str) -> JobParameter:
    """A non-identifying boolean switch such as dryRun."""
    value = raw.get(name, "false").lower()
    if value not in ("true", "false"):
        raise ParameterError(name, f"must be true or false, got {value[:40]!r}")
    return JobParameter(name, BOOLEAN, value, identifying=False)


def now_in(tz: ZoneInfo) -> datetime:
    return datetime.now(tz)
