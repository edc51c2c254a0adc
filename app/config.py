"""Settings: `app/defaults.toml`, then `.env` in the working directory, then the environment.

Every setting is named by its environment variable. A bad or missing setting stops
start-up with one line naming each bad setting; secret values never appear in it.
Components receive the narrow part they use (`Settings.database`, `.broker`, `.peers`,
`.step`), never the whole; a job, the settings its JobSpec names.

Not pydantic-settings (considered for issue 20): it would replace the few checks of
`_validate`, but importing it costs several times this whole module (docs/performance.md);
and its errors quote the values, which must stay out of the line for secrets.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from app.errors import Refusal

# Inside the package, so that an installed (not editable) package finds it.
DEFAULTS_FILE = Path(__file__).resolve().with_name("defaults.toml")


# Folders of jobs beside app/jobs (os.pathsep between them): each holds job modules, named
# <name>_spec.py with their SPEC, and the migrations of their tables (V<n>__<name>.sql).
# Read from the environment alone: the CLI's commands are built from the jobs before any
# other setting is read.
JOB_DIRS = "JOB_DIRS"


def job_dirs() -> list[Path]:
    """The folders of JOB_DIRS, in order."""
    return [Path(folder) for folder in os.environ.get(JOB_DIRS, "").split(os.pathsep) if folder]


class ConfigError(Refusal):
    """One or more settings are missing or invalid; the message names each of them."""


# Connector/J's sslMode values, weakest first.
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")


@dataclass(frozen=True)
class DbTarget:
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    # TLS as Connector/J: PREFERRED uses TLS when the server offers it; VERIFY_CA checks
    # the server's certificate against `ssl_ca` (the system's CAs when empty);
    # VERIFY_IDENTITY checks the host name too.
    ssl_mode: str = "PREFERRED"
    ssl_ca: str = ""
    # Whether a login may ask the server for its RSA key (MySQL 8's caching_sha2_password
    # full authentication without TLS): a man in the middle could hand out its own key.
    allow_public_key_retrieval: bool = False
    # The URL's connectionTimeZone or its alias serverTimezone (that option's name), as
    # written; empty: none.
    time_zone: str = ""
    time_zone_option: str = ""


@dataclass(frozen=True)
class RepositoryClock:
    """The zone BATCH_* times are written and compared in, as Connector/J's
    connectionTimeZone makes Spring Batch write them: that zone's wall time, whatever the
    server's own zone. `zone` None: the database session's zone (the server's NOW())."""

    zone: tzinfo | None
    source: str  # where it is declared, for the logs: "DB_URL serverTimezone", ...


@dataclass(frozen=True)
class DatabaseSettings:
    target: DbTarget
    pool_size: int
    stall_seconds: float  # the longest wait for an answer to one statement or transaction
    clock: RepositoryClock = RepositoryClock(None, "the database session's zone")


@dataclass(frozen=True)
class BrokerSettings:
    url: str = field(repr=False)  # carries the password
    publish_window: int  # unconfirmed messages in flight at most
    stall_seconds: float  # the longest wait for a confirmation or any other answer

    @property
    def address(self) -> str:
        """host:port, for messages (the URL carries the password)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}"


@dataclass(frozen=True)
class PeerSettings:
    store_url: str
    notification_url: str
    timeout_seconds: float
    max_body_bytes: int
    lookup_batch: int  # ids per call


@dataclass(frozen=True)
class StepPolicy:
    """How a chunk step runs: its sizes, its retries, its skips."""

    chunk_size: int
    workers: int
    queue_size: int
    fetch_rows: int
    retry_budget_seconds: float  # per chunk, for availability faults
    retry_base_seconds: float
    retry_max_wait_seconds: float
    skip_limit: int


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Field names are the environment variables; defaults live in app/defaults.toml."""

    DB_URL: str
    DB_USERNAME: str
    DB_PASSWORD: str = field(repr=False)
    DB_POOL_SIZE: int
    DB_SSL_MODE: str
    DB_SSL_CA: str
    DB_STALL_SECONDS: float
    DB_TIMEZONE: str
    RABBITMQ_HOST: str
    RABBITMQ_PORT: int
    RABBITMQ_USERNAME: str
    RABBITMQ_PASSWORD: str = field(repr=False)
    RABBITMQ_VHOST: str
    BROKER_STALL_SECONDS: float
    JWT_SECRET_KEY: str = field(repr=False)
    STORE_SERVICE_URL: str
    NOTIFICATION_SERVICE_URL: str
    PEER_TIMEOUT_SECONDS: float
    PEER_MAX_BODY_BYTES: int
    APPLICATION_NAME: str
    SERVER_PORT: int
    APP_TIMEZONE: str
    SCHEDULER_ENABLED: bool
    FANOUT_MISFIRE_GRACE_MINUTES: float
    AUTO_RESTART_ATTEMPTS: int
    AUTO_RESTART_BACKOFF_SECONDS: float
    LOG_LEVEL: str
    LOG_FORMAT: str
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
    RETRY_BUDGET_SECONDS: float
    RETRY_BASE_SECONDS: float
    RETRY_MAX_WAIT_SECONDS: float
    SKIP_LIMIT: int
    PUBLISH_WINDOW: int
    JOB_ABANDON_AFTER_SECONDS: int
    MAX_RUNNING_EXECUTIONS: int
    HEARTBEAT_SECONDS: float

    @property
    def database(self) -> DatabaseSettings:
        target = parse_db_url(
            self.DB_URL,
            self.DB_USERNAME,
            self.DB_PASSWORD,
            ssl_mode=self.DB_SSL_MODE,
            ssl_ca=self.DB_SSL_CA,
        )
        return DatabaseSettings(
            target=target,
            pool_size=self.DB_POOL_SIZE,
            stall_seconds=self.DB_STALL_SECONDS,
            clock=repository_clock(target, self.DB_TIMEZONE),
        )

    @property
    def broker(self) -> BrokerSettings:
        user = quote(self.RABBITMQ_USERNAME, safe="")
        password = quote(self.RABBITMQ_PASSWORD, safe="")
        vhost = quote(self.RABBITMQ_VHOST, safe="")
        return BrokerSettings(
            url=f"amqp://{user}:{password}@{self.RABBITMQ_HOST}:{self.RABBITMQ_PORT}/{vhost}",
            publish_window=self.PUBLISH_WINDOW,
            stall_seconds=self.BROKER_STALL_SECONDS,
        )

    @property
    def peers(self) -> PeerSettings:
        return PeerSettings(
            store_url=self.STORE_SERVICE_URL,
            notification_url=self.NOTIFICATION_SERVICE_URL,
            timeout_seconds=self.PEER_TIMEOUT_SECONDS,
            max_body_bytes=self.PEER_MAX_BODY_BYTES,
            lookup_batch=self.STORE_LOOKUP_BATCH,
        )

    @property
    def step(self) -> StepPolicy:
        return StepPolicy(
            chunk_size=self.CHUNK_SIZE,
            workers=self.ENRICH_WORKERS,
            queue_size=self.QUEUE_SIZE,
            fetch_rows=self.FETCH_ROWS,
            retry_budget_seconds=self.RETRY_BUDGET_SECONDS,
            retry_base_seconds=self.RETRY_BASE_SECONDS,
            retry_max_wait_seconds=self.RETRY_MAX_WAIT_SECONDS,
            skip_limit=self.SKIP_LIMIT,
        )

    @property
    def jwt_key(self) -> bytes:
        """The HMAC key: the decoded bytes of the base64 `JWT_SECRET_KEY`."""
        return base64.b64decode(self.JWT_SECRET_KEY, validate=True)

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.APP_TIMEZONE)


SECRETS = frozenset({"DB_PASSWORD", "RABBITMQ_PASSWORD", "JWT_SECRET_KEY"})
# What a command that only reaches the database reads (`migrate`), and what every command
# logs with.
DATABASE_SETTINGS = frozenset(
    {
        "DB_URL",
        "DB_USERNAME",
        "DB_PASSWORD",
        "DB_POOL_SIZE",
        "DB_SSL_MODE",
        "DB_SSL_CA",
        "DB_STALL_SECONDS",
        "DB_TIMEZONE",
    }
)
LOG_SETTINGS = frozenset({"LOG_LEVEL", "LOG_FORMAT", "APPLICATION_NAME", "APP_TIMEZONE"})
# The broker's: where `migrate --dev-queue` declares the consumer queue.
BROKER_SETTINGS = frozenset(
    {
        "RABBITMQ_HOST",
        "RABBITMQ_PORT",
        "RABBITMQ_USERNAME",
        "RABBITMQ_PASSWORD",
        "RABBITMQ_VHOST",
        "BROKER_STALL_SECONDS",
    }
)
_POSITIVE = frozenset(
    {
        "DB_POOL_SIZE",
        "DB_STALL_SECONDS",
        "BROKER_STALL_SECONDS",
        "CHUNK_SIZE",
        "STORE_LOOKUP_BATCH",
        "ENRICH_WORKERS",
        "QUEUE_SIZE",
        "FETCH_ROWS",
        "READ_STREAMS",
        "RETRY_BUDGET_SECONDS",
        "RETRY_BASE_SECONDS",
        "RETRY_MAX_WAIT_SECONDS",
        "PUBLISH_WINDOW",
        "JOB_ABANDON_AFTER_SECONDS",
        "HEARTBEAT_SECONDS",
        "MAX_RUNNING_EXECUTIONS",
        "AUTO_RESTART_BACKOFF_SECONDS",
        "PEER_TIMEOUT_SECONDS",
        "PEER_MAX_BODY_BYTES",
    }
)

_NON_NEGATIVE = frozenset(
    {"AUTO_RESTART_ATTEMPTS", "FANOUT_MISFIRE_GRACE_MINUTES", "WINDOW_SLACK_MINUTES"}
)


def parse_db_url(
    url: str, user: str, password: str, *, ssl_mode: str = "", ssl_ca: str = ""
) -> DbTarget:
    """`jdbc:mysql://host:port/db?...` or `mysql://[user[:password]@]host[:port]/db?...`.

    Of the URL's options, those of Connector/J below count: the TLS ones (`sslMode`, or
    the older `useSSL`, `requireSSL`, `verifyServerCertificate`),
    `allowPublicKeyRetrieval`, and `connectionTimeZone` or its alias `serverTimezone`;
    others are ignored. A non-empty `ssl_mode` (DB_SSL_MODE) wins over the URL's.
    """
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
    # A JDBC URL's query is not form-encoded: a + is itself (serverTimezone=+09:00).
    options = dict(parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True))
    flags: dict[str, bool] = {}
    for name in ("useSSL", "requireSSL", "verifyServerCertificate", "allowPublicKeyRetrieval"):
        if name in options:
            try:
                flags[name] = _to_bool(options[name])
            except ValueError:
                raise ValueError(
                    f"option {name} expected true or false (got {options[name]!r})"
                ) from None
    if ssl_mode:
        mode = _ssl_mode(ssl_mode)
    elif "sslMode" in options:
        try:
            mode = _ssl_mode(options["sslMode"])
        except ValueError as exc:
            raise ValueError(f"option sslMode {exc}") from None
    else:
        mode = _legacy_ssl_mode(flags)
    zone_option = next((o for o in _ZONE_OPTIONS if o in options), None)
    if zone_option is not None:
        try:
            parse_time_zone(options[zone_option])
        except ValueError as exc:
            raise ValueError(f"option {zone_option} {exc}") from None
    return DbTarget(
        host=parts.hostname,
        port=port,
        database=database,
        user=unquote(parts.username) if parts.username else user,
        password=unquote(parts.password) if parts.password is not None else password,
        ssl_mode=mode,
        ssl_ca=ssl_ca,
        allow_public_key_retrieval=flags.get("allowPublicKeyRetrieval", False),
        time_zone=options[zone_option] if zone_option is not None else "",
        time_zone_option=zone_option or "",
    )


# Connector/J's option first, then its alias (the name before 8.0.23).
_ZONE_OPTIONS = ("connectionTimeZone", "serverTimezone")
# An offset as java.time.ZoneId parses one: Z, +9, +09:00, UTC+09:00, GMT-0530, ...
_OFFSET = re.compile(r"(?:UTC|GMT|UT)?([+-])(\d{1,2})(?::?(\d{2}))?")


def parse_time_zone(name: str) -> tzinfo | None:
    """A zone named as Connector/J's connectionTimeZone takes it: an IANA name
    (`Asia/Seoul`, `UTC`), an offset (`+09:00`, `GMT+9`), `LOCAL` (this process's zone)
    or `SERVER` (None: the database session's). ValueError if none of these."""
    text = name.strip()
    if text.upper() == "SERVER":
        return None
    if text.upper() == "LOCAL":
        return _local_zone()
    if text == "Z":
        return UTC
    offset = _OFFSET.fullmatch(text)
    if offset is not None:
        sign, hours, minutes = offset.groups()
        span = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if span < timedelta(hours=18):
            return timezone(-span if sign == "-" else span)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"is not a known time zone (got {name!r})") from None


def _local_zone() -> tzinfo:
    """This process's zone: TZ, else the system's (/etc/localtime), else UTC."""
    key = os.environ.get("TZ", "").removeprefix(":")
    try:
        if key:
            return ZoneInfo(key)
        with open("/etc/localtime", "rb") as system:
            return ZoneInfo.from_file(system, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return UTC


def repository_clock(target: DbTarget, setting: str) -> RepositoryClock:
    """The URL's zone where it names one (as Connector/J), else DB_TIMEZONE's, else the
    database session's. Both are checked by `load_settings`."""
    if target.time_zone_option:
        zone = parse_time_zone(target.time_zone)
        return RepositoryClock(zone, f"DB_URL {target.time_zone_option}")
    if setting:
        return RepositoryClock(parse_time_zone(setting), "DB_TIMEZONE")
    return RepositoryClock(None, "the database session's zone")


def _ssl_mode(value: str) -> str:
    mode = value.strip().upper()
    if mode not in SSL_MODES:
        raise ValueError(f"expected one of {', '.join(SSL_MODES)} (got {value!r})")
    return mode


def _unusable_ca_file(path: str) -> str | None:
    """Why `path` is no PEM file of CA certificates, or None; read once, at start-up."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except OSError as exc:  # ssl.SSLError is one too
        if isinstance(exc, ssl.SSLError):
            return f"holds no PEM certificate ({path})"
        return f"cannot be read ({path}: {exc.strerror})"
    return None


def _legacy_ssl_mode(flags: Mapping[str, bool]) -> str:
    """Connector/J 8's mapping of its older options; PREFERRED, its default, if none."""
    if flags.get("useSSL") is False:
        return "DISABLED"
    if flags.get("verifyServerCertificate"):
        return "VERIFY_CA"
    if flags.get("requireSSL"):
        return "REQUIRED"
    return "PREFERRED"


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
    if name in _NON_NEGATIVE and value < 0:
        return "must be 0 or more"
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
    if name == "DB_SSL_MODE" and value:
        try:
            _ssl_mode(value)
        except ValueError as exc:
            return str(exc)
    if name == "DB_SSL_CA" and value:
        return _unusable_ca_file(value)
    if name == "DB_TIMEZONE" and value:
        try:
            parse_time_zone(value)
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
    if name == "LOG_LEVEL" and value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return "expected DEBUG, INFO, WARNING or ERROR"
    if name == "LOG_FORMAT" and value not in ("text", "json"):
        return "expected text or json"
    return None


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    env_file: Path | None = Path(".env"),
    defaults_file: Path = DEFAULTS_FILE,
    only: Collection[str] | None = None,
) -> Settings:
    """Merge defaults, `.env` and the environment; raise ConfigError naming every bad setting.

    With `only`, just those settings are read and checked; every other one keeps its
    default, unchecked (JWT_SECRET_KEY, which has none, is empty): for a command that
    uses no other, such as `migrate`.
    """
    defaults: dict[str, Any] = tomllib.loads(defaults_file.read_text(encoding="utf-8"))
    merged = dict(defaults)
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)

    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Settings):
        parse = _PARSERS[str(f.type)]
        if only is not None and f.name not in only:
            values[f.name] = parse(defaults[f.name]) if f.name in defaults else ""
            continue
        raw = merged.get(f.name, "" if f.name in SECRETS else None)
        if raw is None:
            problems.append(f"{f.name} is required")
            continue
        try:
            value = parse(raw)
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
