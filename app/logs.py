"""Log lines on stderr: text for a terminal, or one ECS JSON object per line for a log pipeline
(what Spring Boot's structured logging calls `ecs`), with the context of the run they belong to.

The context (`jobName`, `executionId`, `stepName`) lives in a ContextVar: an asyncio task
copies the context it is created in, so the tasks a run starts (readers, enrich workers,
the writer) carry the run's fields without passing them around.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime, tzinfo
from types import MappingProxyType
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
ECS_VERSION = "8.11"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# ECS `log.level` as Spring Boot writes it (Logback's names): WARN, not Python's WARNING.
_ECS_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}
# Libraries whose DEBUG lines carry what must never be logged: aiormq's are the AMQP
# frames themselves, push request bodies (members' FCM tokens) included.
_WIRE_LOGGERS = ("aiormq",)

_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=MappingProxyType({}))


def bind_log_context(**fields: Any) -> None:
    """Add `fields` for the rest of the current task (a task runs in a copy of the context
    it was created in, so this ends with the task)."""
    _context.set({**_context.get(), **_present(fields)})


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def local_time(seconds: float, timezone: tzinfo) -> datetime:
    """A log record's time: aware, in the service's zone (as the error bodies' timestamps)."""
    return datetime.fromtimestamp(seconds, timezone)


class TextFormatter(logging.Formatter):
    """`2025-10-26T01:00:00.123+09:00 INFO app.runtime.launcher job finished: ...`"""

    def __init__(self, timezone: tzinfo) -> None:
        super().__init__(TEXT_FORMAT)
        self.timezone = timezone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return local_time(record.created, self.timezone).isoformat(timespec="milliseconds")


class EcsJsonFormatter(logging.Formatter):
    """One ECS JSON object per record, on one line, in the key order of Spring Boot's `ecs`
    format; the context fields follow `message`, then the exception's, then `ecs.version`."""

    def __init__(self, service_name: str, timezone: tzinfo) -> None:
        super().__init__()
        self.service_name = service_name
        self.timezone = timezone

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "@timestamp": local_time(record.created, self.timezone).isoformat(
                timespec="microseconds"
            ),
            "log.level": _ECS_LEVELS.get(record.levelname, record.levelname),
            "process.pid": record.process,
            "process.thread.name": record.threadName,
            "service.name": self.service_name,
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _context.get().items():
            entry.setdefault(key, value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["error.type"] = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix(
                "builtins."
            )
            entry["error.message"] = str(exc)
            entry["error.stack_trace"] = "".join(traceback.format_exception(exc)).rstrip("\n")
        entry["ecs.version"] = ECS_VERSION
        return json.dumps(entry, default=str)


def configure_logging(
    level: str,
    log_format: str,
    service_name: str,
    timezone: tzinfo,
    stream: TextIO | None = None,
) -> None:
    """The root logger writes to `stream` (stderr) in `log_format` ("text" or "json"). Like
    logging.basicConfig, does nothing if the root logger has handlers already."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; expected text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(EcsJsonFormatter(service_name, timezone))
        logging.captureWarnings(True)  # Python's warnings as log records, not plain lines
    else:
        handler.setFormatter(TextFormatter(timezone))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    floor = max(logging.INFO, logging.getLevelName(level.upper()))
    for name in _WIRE_LOGGERS:
        logging.getLogger(name).setLevel(floor)
