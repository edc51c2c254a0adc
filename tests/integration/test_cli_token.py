"""`python -m app token`: an ADMIN token of the platform's scheme, alone on stdout, that
the admin API accepts until its ttl and no longer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from app.config import Settings
from app.edges.auth import AuthError, verify_admin_token
from tests.integration import test_web_api
from tests.integration.test_cli_database_errors import cli
from tests.integration.test_web_api import Client
from tests.reliability.support import cli_environment
from tests.settings import TEST_JWT_KEY

# The admin API's fixtures: a test client over a real launcher, the fake store service.
client, fake = test_web_api.client, test_web_api.fake


async def token_cli(settings: Settings, cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    return await cli(["token", *args], cli_environment(settings, **env), cwd)


async def test_the_token_is_accepted_by_the_admin_api_until_its_ttl(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    api = await client()
    before = int(time.time())
    # It signs only: no database is needed.
    code, out, err = await token_cli(
        settings, tmp_path, "--ttl", "2s", "--sub", "alice", DB_URL="mysql://127.0.0.1:1/none"
    )
    after = int(time.time())
    assert (code, err) == (0, "")
    token = out.removesuffix("\n")
    assert out == token + "\n" and "\n" not in token  # alone on stdout: TOKEN=$(...)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, TEST_JWT_KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert before <= claims["iat"] <= after
    assert claims == {
        "sub": "alice",
        "username": "alice",
        "memberType": "ADMIN",
        "iat": claims["iat"],
        "exp": claims["iat"] + 2,
    }

    resp = await api.get("/api/v1/jobs/executions", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    assert await resp.json() == {"executions": [], "nextBefore": None}

    # Valid up to its exp, not at it: what the API's check says at either side.
    verify_admin_token(f"Bearer {token}", TEST_JWT_KEY, now=claims["exp"] - 0.001)
    with pytest.raises(AuthError) as expired:
        verify_admin_token(f"Bearer {token}", TEST_JWT_KEY, now=claims["exp"])
    assert (expired.value.http_status, expired.value.code) == (401, "EXPIRED_TOKEN")
    await asyncio.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)
    resp = await api.get("/api/v1/jobs/executions", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "EXPIRED_TOKEN"


async def test_the_default_ttl_is_fifteen_minutes(settings: Settings, tmp_path: Path) -> None:
    code, out, _ = await token_cli(settings, tmp_path)
    claims = jwt.decode(out.strip(), TEST_JWT_KEY, algorithms=["HS256"])
    assert code == 0
    assert (claims["exp"] - claims["iat"], claims["sub"], claims["memberType"]) == (
        900,
        "operator",
        "ADMIN",
    )


async def test_a_bad_ttl_is_one_line_and_exit_2(settings: Settings, tmp_path: Path) -> None:
    for ttl in ("2d", "0s", "61m", "15", "-5m"):
        assert await token_cli(settings, tmp_path, f"--ttl={ttl}") == (
            2,
            "",
            f"error: --ttl expects a lifetime such as 90s, 15m or 1h, at most 1h (got {ttl!r})\n",
        )
