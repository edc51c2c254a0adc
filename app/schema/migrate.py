"""Versioned SQL migrations, applied once each, safe to run from several replicas at once.

The history is read first: an up-to-date schema needs no DDL, so a user with only SELECT,
INSERT, UPDATE and DELETE (as the service runs) migrates it; a pending migration needs a
user with the DDL privileges (docs/deployment.md, "Migrations as a privileged step").
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from importlib.resources.abc import Traversable

from asyncmy.cursors import Cursor
from asyncmy.errors import MySQLError
from asyncmy.pool import Pool

from app.config import job_dirs
from app.errors import Refusal

log = logging.getLogger(__name__)

HISTORY_TABLE = "batch_service_schema_history"
_LOCK_NAME = "couponpop-batch.migrate"
_LOCK_WAIT_SECONDS = 60
# Already there (a table, a column, an index): a database that predates the history.
_ALREADY_APPLIED_CODES = frozenset({1050, 1060, 1061})
_NO_SUCH_TABLE = 1146
# The user lacks a privilege: on a database (1044), a table (1142), a column (1143), or a
# global one (1227).
_DENIED_CODES = frozenset({1044, 1142, 1143, 1227})
_DENIED_PRIVILEGE = re.compile(r"(\w+(?: \w+)?) command denied")

_VERSIONED = re.compile(r"^V(\d+)__(\w+)\.sql$")
_DEV_SCHEMA = resources.files("app.schema") / "dev" / "peer_tables.sql"


class MigrationDenied(Refusal):
    """A pending migration needs a privilege the database user lacks."""


def _statements(sql: str) -> list[str]:
    """Split on semicolons at line ends; the migration files hold no procedures."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in re.split(r";\s*(?:\n|$)", body) if part.strip()]


def _migrations() -> list[tuple[int, str, str]]:
    """Every migration by its file name, V<version>__<name>.sql: the service's, then those
    of the folders of JOB_DIRS (a job's tables); a version given twice is an error."""
    folders: list[Traversable] = [resources.files("app.schema") / "migrations", *job_dirs()]
    found: dict[int, tuple[int, str, str]] = {}
    for folder in folders:
        for entry in folder.iterdir():
            match = _VERSIONED.match(entry.name)
            if not match:
                continue
            version = int(match.group(1))
            if version in found:
                raise ValueError(f"two migrations of version {version}: {entry.name}")
            found[version] = (version, match.group(2), entry.read_text(encoding="utf-8"))
    return sorted(found.values())


_CREATE_TABLE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?`?(\w+)", re.IGNORECASE)


def created_tables(*, dev_schema: bool = False) -> list[str]:
    """The tables the migrations create, in their order; with `dev_schema`, the peers'
    tables of the development schema too."""
    sql = [text for _, _, text in _migrations()]
    if dev_schema:
        sql.append(_DEV_SCHEMA.read_text("utf-8"))
    return [name for text in sql for name in _CREATE_TABLE.findall("\n".join(_statements(text)))]


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
            done = await _history(cur)
            pending = [m for m in _migrations() if m[0] not in (done or ())]
            for version, name, sql in pending:
                label = f"V{version:03d}__{name}"
                if done is None:  # the history's table comes with the first migration
                    await _guarded(cur, f"migration {label}", _CREATE_HISTORY)
                    done = set()
                for statement in _statements(sql):
                    await _guarded(cur, f"migration {label}", statement)
                await cur.execute(
                    f"INSERT INTO {HISTORY_TABLE} (version, name) VALUES (%s, %s)", (version, name)
                )
                applied.append(label)
                log.info("migration applied: %s", label)
            if dev_schema:
                for statement in _statements(_DEV_SCHEMA.read_text("utf-8")):
                    await cur.execute(statement)
        finally:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (_LOCK_NAME,))
    return applied


_CREATE_HISTORY = (
    f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} ("
    " version INT NOT NULL PRIMARY KEY, name VARCHAR(200) NOT NULL,"
    " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
)


async def _history(cur: Cursor) -> set[int] | None:
    """The versions applied; None when there is no history table yet."""
    try:
        await cur.execute(f"SELECT version FROM {HISTORY_TABLE}")
    except MySQLError as exc:
        if exc.args and exc.args[0] == _NO_SUCH_TABLE:
            return None
        raise
    return {row[0] for row in await cur.fetchall()}


async def _guarded(cur: Cursor, what: str, statement: str) -> None:
    """Run a migration's statement: an object already there is tolerated (a database that
    predates the history); a missing privilege is MigrationDenied, naming it and `what`."""
    try:
        await cur.execute(statement)
    except MySQLError as exc:
        code, message = (*exc.args, None, "")[:2]
        if code in _ALREADY_APPLIED_CODES:
            log.info("migration statement found its object already there: %s", message)
            return
        if code in _DENIED_CODES:
            found = _DENIED_PRIVILEGE.search(str(message))
            privilege = f"the {found.group(1)} privilege" if found else "a privilege"
            raise MigrationDenied(
                f"{what} needs {privilege}, which this database user lacks ({message});"
                " run `migrate` as a user with DDL privileges"
            ) from None
        raise
