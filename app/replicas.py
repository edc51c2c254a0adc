"""The replicas' registry: the `serve` processes that run (or would run) the schedules, with
their APP_TIMEZONE, in this service's own table (`batch_service_replicas`).

Each such process joins when its scheduler starts, renews its row at every pass of the
scheduler and leaves when it stops; a row not renewed for the lease no longer counts. A
process that ran the schedules leaves its row to expire with the lease, as a killed one
does: the zone of the schedules outlives a rolling restart, so a replica of another zone
beside it never takes them up in the moment between a stop and the next start. Rows are
numbered in the order the processes joined: that order settles whose zone the schedules
run in (`app.runtime.automation.schedules_zone`). Times are the database's UTC clock, so
skewed hosts and the BATCH_* tables' zone change nothing here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from app.edges.db import DbPool, fetch_all, transaction

# A row not renewed for this long is deleted by the next process that joins.
_FORGOTTEN_AFTER_SECONDS = 86_400


@dataclass(frozen=True)
class Replica:
    id: int  # the order of joining
    name: str  # host:pid, for operators
    zone: str  # its APP_TIMEZONE
    runs_schedules: bool


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ReplicaRegistry:
    def __init__(self, pool: DbPool, *, lease_seconds: float) -> None:
        self.pool = pool
        self.lease_seconds = lease_seconds

    async def join(self, name: str, zone: str) -> int:
        """A row of this process's, not running the schedules yet; its id."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "DELETE FROM batch_service_replicas"
                " WHERE last_seen < UTC_TIMESTAMP(6) - INTERVAL %s SECOND",
                (_FORGOTTEN_AFTER_SECONDS,),
            )
            await cur.execute(
                "INSERT INTO batch_service_replicas"
                " (name, app_timezone, runs_schedules, joined_at, last_seen)"
                " VALUES (%s, %s, FALSE, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                (name, zone),
            )
            return int(cur.lastrowid)

    async def renew(self, replica_id: int, *, runs_schedules: bool) -> list[Replica] | None:
        """Renew this process's row (whether it runs the schedules now); the live rows,
        its own included, in the order of joining. None: its row is gone (forgotten
        after a long silence): it joins again."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE batch_service_replicas SET last_seen = UTC_TIMESTAMP(6),"
                " runs_schedules = %s WHERE id = %s",
                (runs_schedules, replica_id),
            )
            if not cur.rowcount:
                return None
        rows = await fetch_all(
            self.pool,
            "SELECT id, name, app_timezone, runs_schedules FROM batch_service_replicas"
            " WHERE last_seen >= UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND ORDER BY id",
            (int(self.lease_seconds * 1e6),),
        )
        return [Replica(int(i), name, zone, bool(runs)) for i, name, zone, runs in rows]

    async def leave(self, replica_id: int) -> None:
        """Remove this process's row, unless it ran the schedules: that one counts until
        the lease expires (see the module)."""
        async with transaction(self.pool) as conn, conn.cursor() as cur:
            await cur.execute(
                "DELETE FROM batch_service_replicas WHERE id = %s AND NOT runs_schedules",
                (replica_id,),
            )
