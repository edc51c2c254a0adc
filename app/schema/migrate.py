"""Versioned SQL migrations, applied once each, safe to run from several replicas at once."""

from __future__ import annotations

import logging
import re
from importlib import resources

from asyncmy.cursors import Cursor
from asyncmy.errors import MySQLError
from asyncmy.pool import Pool

log = logging.getLogger(__name__)

HISTORY_TABLE = "batch_service_schema_history"
_LOCK_NAME = "couponpop-batch.migrate"
_LOCK_WAIT_SECONDS = 60
# Already there (a table, a column, an index): a database that predates the history.
_ALREADY_APPLIED_CODES = frozenset({1050, 1060, 1061})
_VERSIONED = re.compile(r"^V(\d+)__(\w+)\.sql$")


def _statements(sql: str) -> list[str]:
    """Split on semicolons at line ends; the migration files hold no procedures."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in re.split(r";\s*(?:\n|$)", body) if part.strip()]


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("app.schema") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _VERSIONED.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(pool: Pool, *, dev_schema: bool = False) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT GET_LOCK(%s, %s)", (_LOCK_NAME, _LOCK_WAIT_SECONDS))
        (locked,) = await cur.fetchone()
        if locked != 1:
            raise RuntimeError(f"another process holds the migration lock {_LOCK_NAME!r}")
        try:
            await cur.execute("SET SESSION sql_notes = 0")  # "already exists" is expected
            await cur.execute(
                f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} ("
                " version INT NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL,"
                " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
            )
            await cur.execute(f"SELECT version FROM {HISTORY_TABLE}")
            done = {row[0] for row in await cur.fetchall()}
            for version, name, sql in _migrations():
                if version in done:
                    continue
                for statement in _statements(sql):
                    await _execute_tolerating_existing(cur, statement)
                await cur.execute(
                    f"INSERT INTO {HISTORY_TABLE} (version, name) VALUES (%s, %s)", (version, name)
                )
                applied.append(f"V{version:03d}__{name}")
                log.info("migration applied: V%03d__%s", version, name)
            if dev_schema:
                sql = (resources.files("app.schema") / "dev" / "peer_tables.sql").read_text("utf-8")
                for statement in _statements(sql):
                    await cur.execute(statement)
        finally:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (_LOCK_NAME,))
    return applied


async def _execute_tolerating_existing(cur: Cursor, statement: str) -> None:
    try:
        await cur.execute(statement)
    except MySQLError as exc:
        if exc.args and exc.args[0] in _ALREADY_APPLIED_CODES:
            log.info("migration statement found its object already there: %s", exc.args[1])
            return
        raise
