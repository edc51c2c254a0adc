"""The service as production runs it: a database user with only SELECT, INSERT, UPDATE
and DELETE. `migrate` of an up-to-date schema needs no DDL; `run` and `serve` work; a
pending migration without the privilege is one line and exit code 2 (issue 19)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from asyncmy.pool import Pool

from app.__main__ import EXIT_USAGE
from app.config import Settings
from app.devtools.fake_peers import FakePeers
from app.edges.db import fetch_all
from tests.conftest import DB_SERVER, _admin
from tests.integration.test_cli_database_errors import cli
from tests.integration.test_daemon_serve import serve
from tests.integration.test_web_api import add_members, fake
from tests.reliability.support import cli_environment

__all__ = ["fake"]  # the fixture: the store service of test_web_api

PASSWORD = "least-privilege-1"


@pytest.fixture
async def service_user(database: str) -> AsyncIterator[dict[str, str]]:
    """A user of this session's own with only SELECT, INSERT, UPDATE and DELETE on the
    test database: DB_USERNAME and DB_PASSWORD for it."""
    name = f"cpb_svc_{os.getpid()}"
    await _admin(f"DROP USER IF EXISTS '{name}'@'%'")
    await _admin(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{PASSWORD}'")
    await _admin(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO '{name}'@'%'")
    try:
        yield {"DB_USERNAME": name, "DB_PASSWORD": PASSWORD}
    finally:
        await _admin(f"DROP USER IF EXISTS '{name}'@'%'")


@pytest.fixture
async def empty_database(service_user: dict[str, str]) -> AsyncIterator[str]:
    """A database with no schema yet, on which the service user has the same grants."""
    name = f"cpb_unmigrated_{os.getpid()}"
    await _admin(f"DROP DATABASE IF EXISTS {name}")
    await _admin(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    await _admin(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{name}`.* TO '{service_user['DB_USERNAME']}'@'%'"
    )
    yield name
    await _admin(f"DROP DATABASE IF EXISTS {name}")


async def test_migrate_of_an_up_to_date_schema_needs_no_ddl(
    settings: Settings, service_user: dict[str, str], tmp_path: Path
) -> None:
    env = cli_environment(settings, **service_user)
    assert await cli(["migrate"], env, tmp_path) == (
        0,
        "migrations applied: none (up to date)\n",
        "",
    )


async def test_a_pending_migration_without_the_privilege_is_one_line(
    settings: Settings, service_user: dict[str, str], empty_database: str, tmp_path: Path
) -> None:
    env = cli_environment(settings, DB_URL=f"{DB_SERVER}/{empty_database}", **service_user)
    code, out, err = await cli(["migrate"], env, tmp_path)
    assert (code, out) == (EXIT_USAGE, "")
    (line,) = err.splitlines()
    assert line.startswith(
        "error: migration V001__spring_batch_metadata needs the CREATE privilege, which this"
        " database user lacks (CREATE command denied to user"
    )
    assert line.endswith("run `migrate` as a user with DDL privileges")


async def test_run_and_serve_work_as_the_service_user(
    settings: Settings,
    service_user: dict[str, str],
    fake: FakePeers,
    pool: Pool,
    vhost: str,
    tmp_path: Path,
) -> None:
    await add_members(pool, range(1, 4))
    peers = {"STORE_SERVICE_URL": fake.store_url, "NOTIFICATION_SERVICE_URL": fake.notification_url}
    env = cli_environment(settings, **service_user, **peers)
    run = ["run", "coupon-usage-stats", "--run-date", "2025-10-26", "--quiet"]
    code, _, err = await cli(run, env, tmp_path)
    assert (code, "Traceback" in err) == (0, False), err
    assert await fetch_all(pool, "SELECT STATUS, EXIT_CODE FROM BATCH_JOB_EXECUTION") == [
        ("COMPLETED", "COMPLETED")
    ]
    assert await fetch_all(pool, "SELECT COUNT(*) FROM coupon_usage_stats") == [(3,)]

    async with serve(settings, fake, vhost, tmp_path / "serve.log", **service_user) as daemon:
        async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/actuator/health") as r:
            assert (await r.json())["status"] == "UP"
        assert await daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()
