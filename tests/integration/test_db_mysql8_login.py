"""MySQL 8's default login, caching_sha2_password, through the service's connections,
against a fake MySQL 8 (tests/integration/fake_mysql8.py): MariaDB 10.11 lacks the plugin."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from asyncmy.errors import OperationalError

from app.config import Settings
from app.edges.db import fetch_all, open_connection, open_pool
from tests.certs import write_certificates
from tests.integration.fake_mysql8 import run_fake_mysql8
from tests.settings import make_settings

PASSWORD = "MySQL-8-pw"


def settings_for(port: int, options: str, **overrides: object) -> Settings:
    return make_settings(
        DB_URL=f"jdbc:mysql://localhost:{port}/coupon_db?{options}",
        DB_USERNAME="batch",
        DB_PASSWORD=PASSWORD,
        **overrides,
    )


async def login(settings: Settings) -> None:
    """A pool connection and a stream's connection; the fake answers any statement OK."""
    async with open_pool(settings.database) as pool:
        assert await fetch_all(pool, "SET @x = 1") == []
    async with open_connection(settings.database):
        pass


async def test_full_authentication_over_plain_tcp_with_the_platforms_url() -> None:
    """The platform's URL: no TLS, the server's RSA key fetched, the password sent
    encrypted with it (the `cryptography` package does that)."""
    with run_fake_mysql8(PASSWORD) as fake:
        await login(settings_for(fake.port, "useSSL=false&allowPublicKeyRetrieval=true"))
    assert fake.events == ["public key sent", "password accepted"] * 2


async def test_without_allow_public_key_retrieval_the_key_is_not_asked_for() -> None:
    with run_fake_mysql8(PASSWORD) as fake, pytest.raises(OperationalError) as error:
        await login(settings_for(fake.port, "useSSL=false"))
    assert error.value.args[0] == 2061
    assert error.value.args[1].startswith("Public Key Retrieval is not allowed")
    assert fake.events == []  # the fake heard no key request and no password


async def test_fast_authentication_needs_no_key() -> None:
    with run_fake_mysql8(PASSWORD, cached=True) as fake:
        await login(settings_for(fake.port, "useSSL=false"))
    assert fake.events == ["fast auth"] * 2


async def test_full_authentication_over_tls_sends_the_password_itself(tmp_path: Path) -> None:
    files = write_certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(files["server.pem"], files["server-key.pem"])
    with run_fake_mysql8(PASSWORD, tls=tls) as fake:
        await login(settings_for(fake.port, "sslMode=VERIFY_IDENTITY", DB_SSL_CA=files["ca.pem"]))
    assert fake.events == ["tls", "password over tls", "password accepted"] * 2
