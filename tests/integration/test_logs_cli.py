"""`python -m app run` as a process: with LOG_FORMAT=json every stderr line is an ECS JSON
object, and the lines of the run carry its job, execution and step; text lines carry the
offset of the service's zone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from asyncmy.pool import Pool

from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.db import fetch_all
from tests.conftest import DB_SERVER, _admin
from tests.integration import rabbit
from tests.integration.test_cli_database_errors import cli
from tests.integration.test_fcm_send_job import old_service_world
from tests.integration.test_usage_stats_job import OLD_SERVICE_EXPECTED, load_old_service_rows
from tests.reliability.support import cli_environment
from tests.samples import SAMPLE_STORES

ECS_KEYS = {
    "@timestamp",
    "log.level",
    "process.pid",
    "process.thread.name",
    "service.name",
    "log.logger",
    "message",
    "ecs.version",
}
RUN_KEYS = {"jobName", "executionId", "stepName"}


async def run_cli(settings: Settings, cwd: Path, **env: object) -> tuple[int, str, str]:
    """`python -m app run coupon-usage-stats` for the old service's rows: (exit code,
    stdout, stderr)."""
    data = {"stores": {str(k): v for k, v in SAMPLE_STORES.items()}, "tokens": {}}
    async with run_fake_peers(data) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "run", "coupon-usage-stats",
            "--run-date", "2025-10-26", "--quiet",
            env=cli_environment(
                settings,
                STORE_SERVICE_URL=fake.store_url,
                NOTIFICATION_SERVICE_URL=fake.notification_url,
                **env,
            ),
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


async def execution_id(pool: Pool) -> int:
    ((found,),) = await fetch_all(pool, "SELECT JOB_EXECUTION_ID FROM BATCH_JOB_EXECUTION")
    return int(found)


async def test_json_logs_are_one_ecs_object_per_line_with_the_run_context(
    settings: Settings, pool: Pool, tmp_path: Path
) -> None:
    await load_old_service_rows(pool)
    code, out, err = await run_cli(settings, tmp_path, LOG_FORMAT="json")
    assert code == 0, err
    assert out == ""
    assert await fetch_all(
        pool, "SELECT member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats"
    ) == [tuple(row) for row in OLD_SERVICE_EXPECTED]
    execution = await execution_id(pool)

    lines = [json.loads(line) for line in err.splitlines()]  # every line, or this fails
    assert lines
    for line in lines:
        assert set(line) >= ECS_KEYS, line
        assert line["service.name"] == "batch-service"
        assert line["ecs.version"] == "8.11"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+09:00", line["@timestamp"])

    finished = [line for line in lines if line["message"].startswith("job finished:")]
    assert len(finished) == 1
    assert finished[0]["log.logger"] == "app.runtime.launcher"
    assert {k: finished[0][k] for k in RUN_KEYS} == {
        "jobName": "couponUsageStatsJob",
        "executionId": execution,
        "stepName": "couponUsageStatsStep",
    }
    # The CLI's own summary is a record too, not a plain line among the JSON.
    assert lines[-1]["log.logger"] == "app"
    assert lines[-1]["log.level"] == "INFO"
    assert lines[-1]["message"] == (
        f"couponUsageStatsJob execution {execution}: COMPLETED;"
        " read 5, written 4, filtered 1, skipped 0"
    )


async def test_text_logs_carry_the_offset_of_the_service_zone(
    settings: Settings, pool: Pool, tmp_path: Path
) -> None:
    await load_old_service_rows(pool)
    code, _, err = await run_cli(settings, tmp_path)
    assert code == 0, err
    execution = await execution_id(pool)
    *records, summary = err.splitlines()
    assert records
    for line in records:
        assert re.match(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+09:00 (INFO|WARNING|ERROR) app[.\w]* ", line
        ), line
    assert summary == (
        f"couponUsageStatsJob execution {execution}: COMPLETED;"
        " read 5, written 4, filtered 1, skipped 0"
    )


async def test_json_logs_make_a_bad_setting_a_json_line(settings: Settings, tmp_path: Path) -> None:
    env = cli_environment(settings, LOG_FORMAT="json", DB_POOL_SIZE="many")
    code, out, err = await cli(["executions"], env, tmp_path)
    assert (code, out) == (2, "")
    [line] = [json.loads(text) for text in err.splitlines()]
    assert (line["log.level"], line["log.logger"], line["message"]) == (
        "ERROR",
        "app",
        "error: invalid configuration: DB_POOL_SIZE expected int (got 'many')",
    )
    # With the log's own settings bad, JSON is not known to be wanted: a plain line.
    env = cli_environment(settings, LOG_FORMAT="yaml")
    assert await cli(["executions"], env, tmp_path) == (
        2,
        "",
        "error: invalid configuration: LOG_FORMAT expected text or json\n",
    )


async def test_json_logs_put_a_traceback_in_one_ecs_line(
    settings: Settings, tmp_path: Path
) -> None:
    """An unforeseen error (here: a database never migrated) is one ECS object, its
    traceback in error.stack_trace."""
    name = f"cpb_not_migrated_{os.getpid()}"
    await _admin(f"CREATE DATABASE {name}")
    try:
        env = cli_environment(settings, DB_URL=f"{DB_SERVER}/{name}", LOG_FORMAT="json")
        code, out, err = await cli(["executions"], env, tmp_path)
    finally:
        await _admin(f"DROP DATABASE {name}")
    assert (code, out) == (1, "")
    [line] = [json.loads(text) for text in err.splitlines()]
    error_type = "asyncmy.errors.ProgrammingError"
    error_message = f"(1146, \"Table '{name}.BATCH_JOB_EXECUTION' doesn't exist\")"
    assert (line["log.level"], line["message"], line["error.type"], line["error.message"]) == (
        "ERROR",
        "the command failed",
        error_type,
        error_message,
    )
    assert line["error.stack_trace"].startswith("Traceback (most recent call last):\n")
    assert line["error.stack_trace"].endswith(f"\n{error_type}: {error_message}")


async def test_push_tokens_are_never_logged_even_at_debug(
    settings: Settings, pool: Pool, queue: str, tmp_path: Path
) -> None:
    async with old_service_world(pool) as fake:
        env = cli_environment(
            settings,
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
            RABBITMQ_VHOST=queue,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
        )
        code, out, err = await cli(
            ["run", "coupon-usage-stats-fcm-send", "--run-date", "2025-10-25",
             "--target-hour", "10", "--quiet"],
            env,
            tmp_path,
        )  # fmt: skip
    assert (code, out) == (0, ""), err
    published = [json.loads(m.body) for m in await rabbit.consume(queue, 2, idle=0.3)]
    assert sorted(p["token"] for p in published) == ["token-101-a", "token-101-b"]
    assert "token-101" not in err
    lines = [json.loads(text) for text in err.splitlines()]
    assert sum(line["log.level"] == "DEBUG" for line in lines) > 2  # DEBUG was on
    assert sorted(
        line["message"] for line in lines if line["message"].startswith("publishing:")
    ) == sorted(f"publishing: message id {p['traceId']}" for p in published)


async def test_json_logs_make_a_usage_error_a_json_line(settings: Settings, tmp_path: Path) -> None:
    code, out, plain = await cli(["run", "nope"], cli_environment(settings), tmp_path)
    usage, *_, said = plain.splitlines()
    assert (code, out) == (2, "")
    assert usage.startswith("usage: python -m app run [-h]")
    assert said.startswith("python -m app run: error: argument job: invalid choice: 'nope'")
    env = cli_environment(settings, LOG_FORMAT="json")
    code, out, err = await cli(["run", "nope"], env, tmp_path)
    [line] = [json.loads(text) for text in err.splitlines()]
    assert (code, out, line["log.level"], line["message"]) == (2, "", "ERROR", said)
