"""Settings: defaults, .env, environment, DB_URL forms, and one clear line for bad settings."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app.config import (
    DATABASE_SETTINGS,
    LOG_SETTINGS,
    ConfigError,
    RepositoryClock,
    Settings,
    load_settings,
    parse_db_url,
)
from tests.certs import write_certificates
from tests.settings import TEST_JWT_SECRET

SECRET_PASSWORD = "s3cr3t-never-shown"


def load(env: dict[str, str], env_file: Path | None = None) -> Settings:
    return load_settings({"JWT_SECRET_KEY": TEST_JWT_SECRET, **env}, env_file=env_file)


def test_defaults_come_from_the_config_file() -> None:
    settings = load({})
    assert settings.SERVER_PORT == 8085
    assert settings.APP_TIMEZONE == "Asia/Seoul"
    assert settings.SCHEDULER_ENABLED is True
    assert (settings.CHUNK_SIZE, settings.STORE_LOOKUP_BATCH, settings.RETRY_BUDGET_SECONDS) == (
        1000,
        200,
        60.0,
    )
    assert settings.JOB_ABANDON_AFTER_SECONDS == 120
    assert settings.STORE_SERVICE_URL == "http://localhost:8082"
    assert settings.NOTIFICATION_SERVICE_URL == "http://localhost:8084"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "jdbc:mysql://db.internal:3307/couponpop?useSSL=false&serverTimezone=Asia/Seoul",
            ("db.internal", 3307, "couponpop", "app", "pw"),
        ),
        ("mysql://127.0.0.1/couponpop", ("127.0.0.1", 3306, "couponpop", "app", "pw")),
        ("mysql://u%40x:p%3Aw@h:3306/d", ("h", 3306, "d", "u@x", "p:w")),
    ],
)
def test_db_url_forms(url: str, expected: tuple) -> None:
    target = parse_db_url(url, "app", "pw")
    assert (target.host, target.port, target.database, target.user, target.password) == expected


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SERVER_PORT=9000\nCHUNK_SIZE=500\n", encoding="utf-8")
    settings = load({"CHUNK_SIZE": "250"}, env_file=env_file)
    assert (settings.SERVER_PORT, settings.CHUNK_SIZE) == (9000, 250)


def test_every_bad_setting_is_named_on_one_line_without_secrets() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            {
                "JWT_SECRET_KEY": "not base64!",
                "DB_URL": "postgres://h/d",
                "DB_PASSWORD": SECRET_PASSWORD,
                "CHUNK_SIZE": "ten",
                "SERVER_PORT": "70000",
                "APP_TIMEZONE": "Mars/Olympus",
                "SCHEDULER_ENABLED": "perhaps",
                "ENRICH_WORKERS": "0",
            },
            env_file=None,
        )
    message = str(error.value)
    assert "\n" not in message
    for name in (
        "JWT_SECRET_KEY is not valid base64",
        "DB_URL expected jdbc:mysql://",
        "CHUNK_SIZE expected int (got 'ten')",
        "SERVER_PORT expected a port number",
        "APP_TIMEZONE is not a known time zone",
        "SCHEDULER_ENABLED expected bool",
        "ENRICH_WORKERS must be greater than 0",
    ):
        assert name in message
    assert SECRET_PASSWORD not in message


def test_missing_or_short_jwt_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY is required"):
        load_settings({}, env_file=None)
    with pytest.raises(ConfigError, match="fewer than 32 bytes"):
        load_settings({"JWT_SECRET_KEY": "c2hvcnQ="}, env_file=None)


def test_only_the_settings_asked_for_are_read_and_checked() -> None:
    settings = load_settings(
        {"DB_URL": "mysql://db.internal:3307/coupons", "DB_STALL_SECONDS": "5", "CHUNK_SIZE": "x"},
        env_file=None,
        only=DATABASE_SETTINGS | LOG_SETTINGS,
    )
    assert settings.database.target.host == "db.internal"
    assert settings.database.stall_seconds == 5.0
    assert settings.CHUNK_SIZE == 1000  # its default: not read, not checked
    assert settings.JWT_SECRET_KEY == ""  # not required
    with pytest.raises(ConfigError) as raised:
        load_settings(
            {"DB_POOL_SIZE": "0", "CHUNK_SIZE": "x"}, env_file=None, only=DATABASE_SETTINGS
        )
    assert str(raised.value) == "invalid configuration: DB_POOL_SIZE must be greater than 0"


def test_stall_deadlines_reach_the_narrow_settings() -> None:
    settings = load({"DB_STALL_SECONDS": "2.5", "BROKER_STALL_SECONDS": "4"})
    assert (settings.database.stall_seconds, settings.broker.stall_seconds) == (2.5, 4.0)
    assert settings.broker.address == "127.0.0.1:5672"
    assert (load({}).database.stall_seconds, load({}).broker.stall_seconds) == (30.0, 30.0)
    with pytest.raises(ConfigError) as raised:
        load({"DB_STALL_SECONDS": "0", "BROKER_STALL_SECONDS": "-1"})
    assert str(raised.value) == (
        "invalid configuration: DB_STALL_SECONDS must be greater than 0;"
        " BROKER_STALL_SECONDS must be greater than 0"
    )


def test_secrets_stay_out_of_repr() -> None:
    settings = load({"DB_PASSWORD": SECRET_PASSWORD, "RABBITMQ_PASSWORD": SECRET_PASSWORD})
    assert SECRET_PASSWORD not in repr(settings)
    assert TEST_JWT_SECRET not in repr(settings)


def test_log_format_is_text_by_default_and_json_or_text_only() -> None:
    assert load({}).LOG_FORMAT == "text"
    assert load({"LOG_FORMAT": "json"}).LOG_FORMAT == "json"
    with pytest.raises(ConfigError) as error:
        load({"LOG_FORMAT": "ecs"})
    assert str(error.value) == "invalid configuration: LOG_FORMAT expected text or json"


@pytest.mark.parametrize(
    ("options", "db_ssl_mode", "expected"),
    [
        ("", "", ("PREFERRED", False)),  # Connector/J's defaults
        (
            "useSSL=false&allowPublicKeyRetrieval=true&serverTimezone=Asia/Seoul",
            "",
            ("DISABLED", True),
        ),
        ("useSSL=true", "", ("PREFERRED", False)),
        ("useSSL=true&requireSSL=true", "", ("REQUIRED", False)),
        ("requireSSL=true&verifyServerCertificate=true", "", ("VERIFY_CA", False)),
        ("useSSL=false&requireSSL=true", "", ("DISABLED", False)),
        ("sslMode=verify_identity&useSSL=false", "", ("VERIFY_IDENTITY", False)),
        ("sslMode=DISABLED&allowPublicKeyRetrieval=false", "Required", ("REQUIRED", False)),
    ],
)
def test_db_tls_from_the_url_and_db_ssl_mode(
    options: str, db_ssl_mode: str, expected: tuple[str, bool]
) -> None:
    settings = load(
        {"DB_URL": f"jdbc:mysql://db:3306/coupon_db?{options}", "DB_SSL_MODE": db_ssl_mode}
    )
    assert (
        settings.database.target.ssl_mode,
        settings.database.target.allow_public_key_retrieval,
    ) == expected
    assert settings.database.target.ssl_ca == ""


def test_db_ca_file_is_passed_on(tmp_path: Path) -> None:
    ca = write_certificates(tmp_path)["ca.pem"]
    settings = load({"DB_SSL_CA": str(ca), "DB_SSL_MODE": "VERIFY_CA"})
    assert (settings.database.target.ssl_mode, settings.database.target.ssl_ca) == (
        "VERIFY_CA",
        str(ca),
    )


def test_bad_tls_settings_are_named_on_one_line(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello", encoding="utf-8")
    for env, expected in [
        (
            {"DB_URL": "mysql://h/d?sslMode=STRICT"},
            "DB_URL option sslMode expected one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA,"
            " VERIFY_IDENTITY (got 'STRICT')",
        ),
        (
            {"DB_URL": "mysql://h/d?useSSL=maybe"},
            "DB_URL option useSSL expected true or false (got 'maybe')",
        ),
        (
            {"DB_URL": "mysql://h/d?allowPublicKeyRetrieval="},
            "DB_URL option allowPublicKeyRetrieval expected true or false (got '')",
        ),
        (
            {"DB_SSL_MODE": "on"},
            "DB_SSL_MODE expected one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA,"
            " VERIFY_IDENTITY (got 'on')",
        ),
        (
            {"DB_SSL_CA": str(tmp_path / "missing.pem")},
            f"DB_SSL_CA cannot be read ({tmp_path / 'missing.pem'}: No such file or directory)",
        ),
        ({"DB_SSL_CA": str(not_pem)}, f"DB_SSL_CA holds no PEM certificate ({not_pem})"),
    ]:
        with pytest.raises(ConfigError) as error:
            load(env)
        assert str(error.value) == f"invalid configuration: {expected}"


def test_the_stats_read_settings() -> None:
    settings = load({})
    assert (settings.STATS_READ, settings.WINDOW_SLACK_MINUTES) == ("window", 60)
    assert load({"STATS_READ": "full", "WINDOW_SLACK_MINUTES": "0"}).STATS_READ == "full"
    with pytest.raises(ConfigError) as error:
        load({"STATS_READ": "scan", "WINDOW_SLACK_MINUTES": "-1"})
    assert str(error.value) == (
        "invalid configuration: STATS_READ expected window or full;"
        " WINDOW_SLACK_MINUTES must be 0 or more"
    )


@pytest.mark.parametrize(
    ("env", "zone", "source"),
    [
        ({}, None, "the database session's zone"),
        ({"DB_TIMEZONE": "Asia/Seoul"}, ZoneInfo("Asia/Seoul"), "DB_TIMEZONE"),
        (
            {"DB_URL": "jdbc:mysql://h:3306/d?useSSL=false&serverTimezone=Asia/Seoul"},
            ZoneInfo("Asia/Seoul"),
            "DB_URL serverTimezone",
        ),
        # the URL's wins, as with Connector/J; connectionTimeZone before its alias
        (
            {"DB_URL": "mysql://h/d?serverTimezone=UTC&connectionTimeZone=+09:00"},
            timezone(timedelta(hours=9)),
            "DB_URL connectionTimeZone",
        ),
        (
            {"DB_URL": "mysql://h/d?serverTimezone=GMT-05:30", "DB_TIMEZONE": "Asia/Seoul"},
            timezone(-timedelta(hours=5, minutes=30)),
            "DB_URL serverTimezone",
        ),
        ({"DB_URL": "mysql://h/d?serverTimezone=SERVER"}, None, "DB_URL serverTimezone"),
        ({"DB_TIMEZONE": "Z"}, UTC, "DB_TIMEZONE"),
    ],
)
def test_the_repository_clock_is_the_urls_zone_else_db_timezone(
    env: dict[str, str], zone: tzinfo | None, source: str
) -> None:
    assert load(env).database.clock == RepositoryClock(zone, source)


def test_a_local_zone_is_this_process_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    clock = load({"DB_URL": "mysql://h/d?serverTimezone=LOCAL"}).database.clock
    assert clock.zone == ZoneInfo("America/New_York")


def test_an_unknown_zone_is_named_on_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        load({"DB_URL": "mysql://h/d?serverTimezone=KST", "DB_TIMEZONE": "+25:00"})
    assert str(error.value) == (
        "invalid configuration: DB_URL option serverTimezone is not a known time zone"
        " (got 'KST'); DB_TIMEZONE is not a known time zone (got '+25:00')"
    )
