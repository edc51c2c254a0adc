"""The log formats: ECS JSON objects and text lines, with the run's context and one clock."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.logs import (
    EcsJsonFormatter,
    TextFormatter,
    bind_log_context,
    configure_logging,
)

SEOUL = ZoneInfo("Asia/Seoul")
# 2025-10-26 01:00:00.123456 in Seoul
CREATED = datetime(2025, 10, 25, 16, 0, 0, 123456, tzinfo=UTC).timestamp()


def record(
    message: str = "job finished: read=%d",
    args: tuple = (3,),
    level: int = logging.INFO,
    exc_info: Any = None,
) -> logging.LogRecord:
    made = logging.LogRecord(
        "app.runtime.launcher",
        level,
        __file__,
        1,
        message,
        args,
        exc_info,
    )
    made.created = CREATED
    made.process = 4242
    made.threadName = "MainThread"
    return made


def ecs(made: logging.LogRecord) -> dict:
    line = EcsJsonFormatter("batch-service", SEOUL).format(made)
    assert "\n" not in line
    return json.loads(line)


def test_an_ecs_line_has_the_spring_keys_in_the_service_zone() -> None:
    line = EcsJsonFormatter("batch-service", SEOUL).format(record())
    assert json.loads(line) == {
        "@timestamp": "2025-10-26T01:00:00.123456+09:00",
        "log.level": "INFO",
        "process.pid": 4242,
        "process.thread.name": "MainThread",
        "service.name": "batch-service",
        "log.logger": "app.runtime.launcher",
        "message": "job finished: read=3",
        "ecs.version": "8.11",
    }
    assert next(iter(json.loads(line))) == "@timestamp"


async def test_the_context_is_on_every_line_of_its_task_and_gone_after() -> None:
    async def run() -> tuple[dict, dict]:
        bind_log_context(jobName="couponUsageStatsJob", executionId=7)
        outer = ecs(record())
        bind_log_context(stepName="couponUsageStatsStep", ignored=None)
        return outer, ecs(record())

    outer, inner = await asyncio.create_task(run())
    after = ecs(record())
    assert (outer["jobName"], outer["executionId"], "stepName" in outer) == (
        "couponUsageStatsJob",
        7,
        False,
    )
    assert {k: inner[k] for k in ("jobName", "executionId", "stepName")} == {
        "jobName": "couponUsageStatsJob",
        "executionId": 7,
        "stepName": "couponUsageStatsStep",
    }
    assert "ignored" not in inner
    assert not {"jobName", "executionId", "stepName"} & set(after)


async def test_a_context_field_never_replaces_an_ecs_field() -> None:
    async def run() -> dict:
        bind_log_context(message="spoofed", executionId=1)
        return ecs(record())

    line = await asyncio.create_task(run())
    assert (line["message"], line["executionId"]) == ("job finished: read=3", 1)


async def test_a_task_carries_the_context_of_its_run_and_binding_ends_with_the_task() -> None:
    seen: list[dict] = []

    async def worker() -> None:
        seen.append(ecs(record()))

    async def run() -> None:
        bind_log_context(jobName="couponUsageStatsFcmSendJob", executionId=9)
        bind_log_context(stepName="couponUsageStatsFcmSendStep")
        await asyncio.create_task(worker())

    await asyncio.create_task(run())
    seen.append(ecs(record()))
    assert {k: seen[0].get(k) for k in ("jobName", "executionId", "stepName")} == {
        "jobName": "couponUsageStatsFcmSendJob",
        "executionId": 9,
        "stepName": "couponUsageStatsFcmSendStep",
    }
    assert not {"jobName", "executionId", "stepName"} & set(seen[1])


def test_an_exception_becomes_the_error_fields() -> None:
    try:
        raise TimeoutError("no answer from the store service in 10 s")
    except TimeoutError:
        failed = record(
            "step failed: job=%s", ("couponUsageStatsJob",), logging.ERROR, sys.exc_info()
        )
        line = ecs(failed)
    assert line["log.level"] == "ERROR"
    assert line["message"] == "step failed: job=couponUsageStatsJob"
    assert line["error.type"] == "TimeoutError"
    assert line["error.message"] == "no answer from the store service in 10 s"
    trace = line["error.stack_trace"]
    assert trace.startswith("Traceback (most recent call last):\n")
    assert trace.endswith("TimeoutError: no answer from the store service in 10 s")
    assert "test_an_exception_becomes_the_error_fields" in trace
    assert list(line)[-4:] == ["error.type", "error.message", "error.stack_trace", "ecs.version"]


def test_a_library_exception_is_named_with_its_module() -> None:
    try:
        json.loads("{")
    except json.JSONDecodeError:
        line = ecs(record(level=logging.ERROR, exc_info=sys.exc_info()))
    assert line["error.type"] == "json.decoder.JSONDecodeError"


def test_text_lines_carry_the_offset() -> None:
    line = TextFormatter(SEOUL).format(record())
    assert line == "2025-10-26T01:00:00.123+09:00 INFO app.runtime.launcher job finished: read=3"


@contextmanager
def bare_root_logger() -> Iterator[None]:
    """The root logger without handlers, as at start-up; pytest's put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_configure_logging_writes_json_lines_at_the_level() -> None:
    out = io.StringIO()
    with bare_root_logger():
        configure_logging("warning", "json", "batch-service", SEOUL, out)
        logging.getLogger("app.test").info("dropped below the level")
        logging.getLogger("app.test").warning("kept: %s", "노량진동")
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["kept: 노량진동"]
    assert json.loads(lines[0])["service.name"] == "batch-service"
    with pytest.raises(ValueError, match="unknown log format 'ecs'"):
        configure_logging("INFO", "ecs", "batch-service", SEOUL)


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "ERROR"),
    ],
)
def test_ecs_levels_are_the_names_spring_boot_writes(level: int, name: str) -> None:
    assert ecs(record(level=level))["log.level"] == name


def test_amqp_frames_are_not_logged_even_at_debug() -> None:
    """aiormq's DEBUG lines are the frames, message bodies (FCM tokens) included."""
    out = io.StringIO()
    with bare_root_logger():
        configure_logging("DEBUG", "json", "batch-service", SEOUL, out)
        logging.getLogger("aiormq.connection").debug("Prepare to send %r", b'"token":"t-1"')
        logging.getLogger("aiormq.connection").info("Connection made")
        logging.getLogger("app.edges.broker").debug("publishing: traceId=%s", "x")
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == [
        "Connection made",
        "publishing: traceId=x",
    ]
