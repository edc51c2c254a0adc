"""TLS to the database: a MariaDB of this module's own that admits TLS logins only
(require_secure_transport), with a certificate made here, and the machine's MariaDB,
which offers no TLS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from asyncmy.errors import OperationalError

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.edges.db import fetch_all, open_connection, open_pool
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from app.schema.migrate import migrate
from tests.conftest import DB_SERVER
from tests.integration.test_migrate import ALL as ALL_MIGRATIONS
from tests.integration.tls_mariadb import PASSWORD, USER, TlsServer, run_tls_mariadb
from tests.samples import SAMPLE_STORES
from tests.settings import make_settings

_ACCESS_DENIED = 1045
_CANNOT_CONNECT = 2003


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with run_tls_mariadb(tmp_path_factory.mktemp("tls-mariadb")) as running:
        yield running


def tls_settings(url: str, **overrides: object) -> Settings:
    return make_settings(DB_URL=url, DB_USERNAME=USER, DB_PASSWORD=PASSWORD, **overrides)


async def session_tls(settings: Settings) -> tuple[str, str]:
    """(Ssl_version, Ssl_cipher) of a pool connection and of a stream's connection."""
    sql = "SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')"
    async with open_pool(settings.database) as pool:
        pooled = dict(await fetch_all(pool, sql))
    async with open_connection(settings.database) as conn, conn.cursor() as cur:
        await cur.execute(sql)
        streamed = dict(await cur.fetchall())
    assert streamed == pooled
    return pooled["Ssl_version"], pooled["Ssl_cipher"]


async def test_verify_ca_encrypts_every_connection(server: TlsServer) -> None:
    settings = tls_settings(server.url(options="sslMode=VERIFY_CA"), DB_SSL_CA=server.ca_file)
    version, cipher = await session_tls(settings)
    assert version == "TLSv1.3"
    assert cipher.startswith("TLS_")


async def test_migrate_and_the_stats_job_run_over_tls(server: TlsServer) -> None:
    settings = tls_settings(
        server.url(options="useSSL=true&verifyServerCertificate=true"),
        DB_SSL_CA=server.ca_file,
        CHUNK_SIZE=2,
    )
    assert settings.database.target.ssl_mode == "VERIFY_CA"
    async with open_pool(settings.database) as pool:
        assert await migrate(pool, dev_schema=True) == ALL_MIGRATIONS
        async with pool.acquire() as conn, conn.cursor() as cur:
            # member 1: 5 rows, 3 at store 9 (서교동) at 15:00; member 2: 4 rows, not eligible
            await cur.executemany(
                "INSERT INTO coupon_histories (member_id, coupon_id, store_id, coupon_event_id,"
                " coupon_status, created_at) VALUES (%s, 1, %s, 1, 'USED', %s)",
                [(1, 9, f"2025-10-1{d} 15:00:00") for d in range(3)]
                + [(1, 1, "2025-10-20 09:00:00"), (1, 2, "2025-10-21 10:00:00")]
                + [(2, 3, f"2025-10-2{d} 12:00:00") for d in range(4)],
            )
    stores = {str(k): v for k, v in SAMPLE_STORES.items()}
    async with run_fake_peers({"stores": stores, "tokens": {}}) as fake:
        job_settings = tls_settings(
            settings.DB_URL,
            DB_SSL_CA=server.ca_file,
            CHUNK_SIZE=2,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
        )
        async with open_resources(job_settings, broker=False) as resources:
            execution = await Launcher(resources, JOBS).run(
                find_job(JOBS, "coupon-usage-stats"), {"runDate": "2025-10-26"}, rerun=False
            )
    assert execution.status == "COMPLETED", execution.exit_message
    (step,) = execution.steps
    assert (step.read_count, step.write_count, step.filter_count) == (2, 1, 1)
    async with open_pool(settings.database) as pool:
        rows = await fetch_all(
            pool, "SELECT member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats"
        )
    assert [tuple(r) for r in rows] == [(1, "서교동", 15, date(2025, 10, 26))]


async def test_a_plain_login_is_refused_by_the_server(server: TlsServer) -> None:
    # The same user and password pass over TLS (above): the transport is what is refused.
    # MariaDB answers require_secure_transport with "access denied" (MySQL 8 with 3159).
    with pytest.raises(OperationalError) as error:
        async with open_pool(tls_settings(server.url(options="useSSL=false")).database):
            pass
    assert error.value.args == (
        _ACCESS_DENIED,
        f"Access denied for user '{USER}'@'localhost' (using password: YES)",
    )


async def test_verify_ca_refuses_a_certificate_of_another_ca(server: TlsServer) -> None:
    settings = tls_settings(server.url(options="sslMode=VERIFY_CA"), DB_SSL_CA=server.other_ca_file)
    with pytest.raises(OperationalError) as error:
        async with open_pool(settings.database):
            pass
    code, message = error.value.args
    assert code == _CANNOT_CONNECT
    # The server sends its chain with the test CA in it, which this side does not trust.
    assert (
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed:"
        " self-signed certificate in certificate chain"
    ) in message


async def test_verify_identity_checks_the_host_name(server: TlsServer) -> None:
    """The certificate names `localhost`: VERIFY_CA takes it at 127.0.0.1, VERIFY_IDENTITY
    only at localhost."""
    for host, mode in (("localhost", "VERIFY_IDENTITY"), ("127.0.0.1", "VERIFY_CA")):
        settings = tls_settings(server.url(host, f"sslMode={mode}"), DB_SSL_CA=server.ca_file)
        assert (await session_tls(settings))[0] == "TLSv1.3"
    settings = tls_settings(
        server.url("127.0.0.1", "sslMode=VERIFY_IDENTITY"), DB_SSL_CA=server.ca_file
    )
    with pytest.raises(OperationalError) as error:
        async with open_pool(settings.database):
            pass
    assert "IP address mismatch, certificate is not valid for '127.0.0.1'" in error.value.args[1]


async def test_db_ssl_mode_wins_over_the_url(server: TlsServer) -> None:
    settings = tls_settings(
        server.url(options="useSSL=false"), DB_SSL_MODE="verify_ca", DB_SSL_CA=server.ca_file
    )
    assert (await session_tls(settings))[0] == "TLSv1.3"


async def test_preferred_uses_tls_where_the_server_offers_it(server: TlsServer) -> None:
    # Connector/J's default: no TLS option at all means PREFERRED, unverified.
    assert (await session_tls(tls_settings(server.url())))[0] == "TLSv1.3"
    plain = make_settings(DB_URL=f"{DB_SERVER}/mysql")  # the machine's MariaDB: no TLS
    assert plain.database.target.ssl_mode == "PREFERRED"
    assert await session_tls(plain) == ("", "")


async def test_required_fails_where_the_server_offers_no_tls() -> None:
    settings = make_settings(DB_URL=f"{DB_SERVER}/mysql?sslMode=REQUIRED")
    with pytest.raises(OperationalError) as error:
        async with open_pool(settings.database):
            pass
    code, message = error.value.args
    assert code == _CANNOT_CONNECT
    assert "[SSL: WRONG_VERSION_NUMBER]" in message
