"""Settings: `config/default.toml`, then `.env` in the working directory, then the environment.

Every setting is named by its environment variable. A bad or missing setting stops
start-up with one line naming each bad setting; secret values never appear in it.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class ConfigError(ValueError):
    """One or more settings are missing or invalid; the message names each of them."""


@dataclass(frozen=True)
class DbTarget:
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Field names are the environment variables; defaults live in config/default.toml."""

    DB_URL: str
    DB_USERNAME: str
    DB_PASSWORD: str = field(repr=False)
    DB_POOL_SIZE: int
    RABBITMQ_HOST: str
    RABBITMQ_PORT: int
    RABBITMQ_USERNAME: str
    RABBITMQ_PASSWORD: str = field(repr=False)
    RABBITMQ_VHOST: str
    JWT_SECRET_KEY: str = field(repr=False)
    STORE_SERVICE_URL: str
    NOTIFICATION_SERVICE_URL: str
    PEER_TIMEOUT_SECONDS: float
    PEER_MAX_BODY_BYTES: int
    APPLICATION_NAME: str
    SERVER_PORT: int
    APP_TIMEZONE: str
    SCHEDULER_ENABLED: bool
    LOG_LEVEL: str
    SHUTDOWN_GRACE_SECONDS: float
    DRY_RUN_DIR: str
    CHUNK_SIZE: int
    STORE_LOOKUP_BATCH: int
    ENRICH_WORKERS: int
    QUEUE_SIZE: int
    FETCH_ROWS: int
    READ_STREAMS: int
    STATS_READ: str
    WINDOW_SLACK_MINUTES: int
    RETRY_ATTEMPTS: int
    RETRY_BASE_SECONDS: float
    SKIP_LIMIT: int
    PUBLISH_WINDOW: int
    JOB_ABANDON_AFTER_SECONDS: int
    HEARTBEAT_SECONDS: float

    @property
    def db(self) -> DbTarget:
        return parse_db_url(self.DB_URL, self.DB_USERNAME, self.DB_PASSWORD)

    @property
    def jwt_key(self) -> bytes:
        """The HMAC key: the decoded bytes of the base64 `JWT_SECRET_KEY`."""
        return base64.b64decode(self.JWT_SECRET_KEY, validate=True)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.APP_TIMEZONE)

    @property
    def rabbitmq_url(self) -> str:
        user = quote(self.RABBITMQ_USERNAME, safe="")
        password = quote(self.RABBITMQ_PASSWORD, safe="")
        vhost = quote(self.RABBITMQ_VHOST, safe="")
        return f"amqp://{user}:{password}@{self.RABBITMQ_HOST}:{self.RABBITMQ_PORT}/{vhost}"


SECRETS = frozenset({"DB_PASSWORD", "RABBITMQ_PASSWORD", "JWT_SECRET_KEY"})
_POSITIVE = frozenset(
    {
        "DB_POOL_SIZE",
        "CHUNK_SIZE",
        "STORE_LOOKUP_BATCH",
        "ENRICH_WORKERS",
        "QUEUE_SIZE",
        "FETCH_ROWS",
        "READ_STREAMS",
        "RETRY_ATTEMPTS",
        "PUBLISH_WINDOW",
        "JOB_ABANDON_AFTER_SECONDS",
        "HEARTBEAT_SECONDS",
        "PEER_TIMEOUT_SECONDS",
        "PEER_MAX_BODY_BYTES",
    }
)


def parse_db_url(url: str, user: str, password: str) -> DbTarget:
    """`jdbc:mysql://host:port/db?...` or `mysql://[user[:password]@]host[:port]/db`."""
    raw = url.removeprefix("jdbc:")
    parts = urlsplit(raw)
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
        raise ValueError("expected jdbc:mysql://host:port/db or mysql://host:port/db")
    database = parts.path.lstrip("/")
    if not database or "/" in database:
        raise ValueError("the URL names no database")
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise ValueError("the port is not a number") from exc
    return DbTarget(
        host=parts.hostname,
        port=port,
        database=database,
        user=unquote(parts.username) if parts.username else user,
        password=unquote(parts.password) if parts.password is not None else password,
    )


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    return int(str(value).strip())


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "bool": _to_bool,
    "int": _to_int,
    "float": lambda v: float(str(v).strip()),
    "str": str,
}


def _validate(name: str, value: Any) -> str | None:
    """A reason the value is unusable, or None."""
    if name in _POSITIVE and value <= 0:
        return "must be greater than 0"
    if name == "JWT_SECRET_KEY":
        if not value:
            return "is required (base64 of at least 32 bytes)"
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "is not valid base64"
        if len(key) < 32:
            return "decodes to fewer than 32 bytes (HS256 needs 256 bits)"
    if name == "DB_URL":
        try:
            parse_db_url(value, "", "")
        except ValueError as exc:
            return str(exc)
    if name == "APP_TIMEZONE":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            return "is not a known time zone"
    if name in ("STORE_SERVICE_URL", "NOTIFICATION_SERVICE_URL"):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "expected an http:// or https:// URL"
    if name in ("SERVER_PORT", "RABBITMQ_PORT") and not 0 <= value <= 65535:
        return "expected a port number 0..65535"
    if name == "STATS_READ" and value not in ("window", "full"):
        return "expected window or full"
    if name == "WINDOW_SLACK_MINUTES" and value < 0:
        return "must be 0 or more"
    if name == "LOG_LEVEL" and value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return "expected DEBUG, INFO, WARNING or ERROR"
    return None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: Path | None = Path(".env"),
    defaults_file: Path = DEFAULTS_FILE,
) -> Settings:
    """Merge defaults, `.env` and the environment; raise ConfigError naming every bad setting."""
    merged: dict[str, Any] = tomllib.loads(defaults_file.read_text(encoding="utf-8"))
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)

    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Settings):
        raw = merged.get(f.name, "" if f.name in SECRETS else None)
        if raw is None:
            problems.append(f"{f.name} is required")
            continue
        try:
            value = _PARSERS[str(f.type)](raw)
        except (TypeError, ValueError):
            shown = "" if f.name in SECRETS else f" (got {raw!r})"
            problems.append(f"{f.name} expected {f.type}{shown}")
            continue
        reason = _validate(f.name, value)
        if reason:
            problems.append(f"{f.name} {reason}")
        values[f.name] = value
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Settings(**values)
