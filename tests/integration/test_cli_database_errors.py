"""`python -m app migrate | run | serve` when the database cannot be used (issue 13, finding
5), or `serve`'s port is in use (issue 20): one line on stderr and exit code 2, no
traceback. And `migrate` reads only the database's settings (and the log's): it needs no
JWT_SECRET_KEY."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import asyncmy
import pytest
from asyncmy.errors import OperationalError

from app.__main__ import EXIT_USAGE
from app.config import Settings
from tests.conftest import DB_SERVER
from tests.reliability.support import cli_environment
from tests.waits import waiting

COMMANDS = {
    "migrate": ["migrate"],
    "run": ["run", "coupon-usage-stats", "--run-date", "2025-10-26", "--quiet"],
    "serve": ["serve"],
}


async def cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """`python -m app *args` run from `cwd` (no .env there), with no terminal (stdin at end
    of file): exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args, env=env, cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with waiting(60, "the command's exit"):
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def refusal(settings: Settings, user: str, password: str) -> str:
    """The server's own words when it refuses this login."""
    target = settings.database.target
    with pytest.raises(OperationalError) as raised:
        await asyncmy.connect(
            host=target.host, port=target.port, user=user, password=password, connect_timeout=10
        )
    return str(raised.value.args[1])


@pytest.mark.parametrize("command", COMMANDS)
async def test_an_unreachable_database_is_one_line(
    command: str, settings: Settings, tmp_path: Path
) -> None:
    env = cli_environment(settings, DB_URL="mysql://127.0.0.1:1/couponpop", SERVER_PORT=0)
    assert await cli(COMMANDS[command], env, tmp_path) == (
        EXIT_USAGE,
        "",
        "error: cannot reach the database at 127.0.0.1:1: [Errno 111] Connection refused\n",
    )


@pytest.mark.parametrize("command", COMMANDS)
async def test_an_unknown_database_is_one_line(
    command: str, settings: Settings, tmp_path: Path
) -> None:
    name = f"cpb_no_such_database_{os.getpid()}"
    env = cli_environment(settings, DB_URL=f"{DB_SERVER}/{name}", SERVER_PORT=0)
    assert await cli(COMMANDS[command], env, tmp_path) == (
        EXIT_USAGE,
        "",
        f"error: unknown database '{name}': create it first (CREATE DATABASE `{name}`"
        " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci), then `python -m app migrate`\n",
    )


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_refused_login_is_one_line(
    command: str, settings: Settings, tmp_path: Path
) -> None:
    said = await refusal(settings, "cpb_nobody", "wrong")
    assert said.startswith("Access denied for user 'cpb_nobody'@"), said
    env = cli_environment(settings, DB_USERNAME="cpb_nobody", DB_PASSWORD="wrong", SERVER_PORT=0)
    assert await cli(COMMANDS[command], env, tmp_path) == (
        EXIT_USAGE,
        "",
        f"error: the database refused user 'cpb_nobody': {said}\n",
    )


async def test_migrate_needs_no_jwt_key_nor_any_setting_but_the_database(
    settings: Settings, tmp_path: Path
) -> None:
    env = cli_environment(settings, CHUNK_SIZE="many", RABBITMQ_PORT="none")
    del env["JWT_SECRET_KEY"]
    assert await cli(COMMANDS["migrate"], env, tmp_path) == (
        0,
        "migrations applied: none (up to date)\n",
        "",
    )
    # The other commands still name every bad setting of theirs.
    code, out, err = await cli(COMMANDS["run"], env, tmp_path)
    assert (code, out, err) == (
        EXIT_USAGE,
        "",
        "error: invalid configuration: RABBITMQ_PORT expected int (got 'none');"
        " JWT_SECRET_KEY is required (base64 of at least 32 bytes);"
        " CHUNK_SIZE expected int (got 'many')\n",
    )


async def test_migrate_still_names_a_bad_database_setting(
    settings: Settings, tmp_path: Path
) -> None:
    env = cli_environment(settings, DB_POOL_SIZE=0, DB_STALL_SECONDS="soon")
    del env["JWT_SECRET_KEY"]
    assert await cli(COMMANDS["migrate"], env, tmp_path) == (
        EXIT_USAGE,
        "",
        "error: invalid configuration: DB_POOL_SIZE must be greater than 0;"
        " DB_STALL_SECONDS expected float (got 'soon')\n",
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_serve_on_a_port_in_use_is_one_line(
    settings: Settings, tmp_path: Path, log_format: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cli_environment(
            settings, SERVER_PORT=port, SCHEDULER_ENABLED="false", LOG_FORMAT=log_format
        )
        code, out, err = await cli(COMMANDS["serve"], env, tmp_path)
    line = f"error: port {port} is in use by another process; stop it or set SERVER_PORT"
    assert (code, out) == (EXIT_USAGE, "")
    if log_format == "text":
        assert err == line + "\n"
    else:
        [record] = [json.loads(text) for text in err.splitlines()]
        assert (record["log.level"], record["message"]) == ("ERROR", line)
