"""The one clock of every BATCH_* time: the database's, so that replicas with skewed
clocks agree on heartbeats, read as the wall time of the declared zone (the JDBC URL's
serverTimezone, in which Connector/J has Spring Batch write them; or DB_TIMEZONE), else
the session's NOW(6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

from app.edges.db import DbPool, fetch_all


class DatabaseClock:
    def __init__(self, pool: DbPool, zone: tzinfo | None) -> None:
        """`zone`: the zone BATCH_* times are written and compared in (None: the database
        session's, NOW(6))."""
        self._pool = pool
        self._zone = zone
        self._session_zone: timezone | None = None

    def now(self) -> str:
        """The SQL of the clock's now: the database's UTC clock as the zone's wall time
        (its offset as of now: a zone's DST change moves it), or the session's NOW(6)."""
        if self._zone is None:
            return "NOW(6)"
        offset = datetime.now(self._zone).utcoffset() or timedelta()
        return f"(UTC_TIMESTAMP(6) + INTERVAL {int(offset.total_seconds())} SECOND)"

    async def zone(self) -> tzinfo:
        """The zone of every BATCH_* time: the declared one, else the session's. The times
        read back carry it, so that every time shown has its offset."""
        return self._zone if self._zone is not None else await self.session_zone()

    async def session_zone(self) -> timezone:
        """The offset of the database session's NOW(6) (read once)."""
        if self._session_zone is None:
            [(seconds,)] = await fetch_all(
                self._pool, "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(6), NOW(6))"
            )
            self._session_zone = timezone(timedelta(minutes=round(int(seconds) / 60)))
        return self._session_zone


def on(clock: tzinfo, value: datetime | None) -> datetime | None:
    """A BATCH_* time as read (naive), in the clock's zone."""
    return value.replace(tzinfo=clock) if value is not None else None


def zone_label(zone: tzinfo, at: datetime | None = None) -> str:
    """`Asia/Seoul (UTC+09:00)`, or `UTC+09:00` for a bare offset: the zone and its
    offset at `at` (now)."""
    offset = (at or datetime.now(UTC)).astimezone(zone).utcoffset() or timedelta()
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    text = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    key = getattr(zone, "key", None)
    return f"{key} ({text})" if key and key != "localtime" else text
