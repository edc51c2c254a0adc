from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from app.edges.auth import (
    AuthError,
    SystemToken,
    algorithm_for_key,
    verify_admin_token,
    verify_token,
)
from tests.settings import TEST_JWT_KEY

NOW = 1_760_000_000
KEY_32 = TEST_JWT_KEY
KEY_48 = b"k" * 48
KEY_64 = b"k" * 64


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": "7",
        "username": "admin",
        "memberType": "ADMIN",
        "iat": NOW,
        "exp": NOW + 3600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _token(key: bytes = KEY_32, algorithm: str | None = None, **claims: object) -> str:
    return jwt.encode(_claims(**claims), key, algorithm=algorithm or algorithm_for_key(key))


def _crafted(header: dict[str, object], claims: dict[str, object], signature: bytes) -> str:
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), signature)
    return ".".join(_b64(p) for p in parts)


def _rejected(authorization: str | None, key: bytes = KEY_32, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verify_admin_token(authorization, key, now=now)
    return caught.value


@pytest.mark.parametrize(
    ("length", "algorithm"),
    [(0, "HS256"), (32, "HS256"), (47, "HS256"), (48, "HS384"), (63, "HS384"), (64, "HS512")],
)
def test_algorithm_follows_key_length(length: int, algorithm: str) -> None:
    assert algorithm_for_key(b"k" * length) == algorithm


@pytest.mark.parametrize(
    ("key", "algorithm"), [(KEY_32, "HS256"), (KEY_48, "HS384"), (KEY_64, "HS512")]
)
def test_admin_token_of_each_algorithm_is_accepted(key: bytes, algorithm: str) -> None:
    token = _token(key)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    claims = verify_admin_token(f"Bearer {token}", key, now=NOW)
    assert claims["sub"] == "7"
    assert claims["memberType"] == "ADMIN"


def test_a_long_key_also_accepts_weaker_hmac_algorithms() -> None:
    for algorithm in ("HS256", "HS384", "HS512"):
        assert verify_admin_token(f"Bearer {_token(KEY_64, algorithm)}", KEY_64, now=NOW)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # minting it
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_an_algorithm_the_key_is_too_short_for_is_refused(algorithm: str) -> None:
    # jjwt refuses such a token (WeakKeyException); the error must not reveal the key length
    error = _rejected(f"Bearer {_token(KEY_32, algorithm)}")
    assert (error.http_status, error.code) == (401, "INVALID_TOKEN")
    assert "32" not in error.message


@pytest.mark.parametrize(
    "member_type", ["ADMIN", "admin", "ROLE_ADMIN", "role_admin", "Role_Admin"]
)
def test_admin_member_types_in_any_case(member_type: str) -> None:
    token = _token(memberType=member_type)
    assert verify_admin_token(f"Bearer {token}", KEY_32, now=NOW)["memberType"] == member_type


@pytest.mark.parametrize(
    "member_type", ["SYSTEM", "CUSTOMER", "OWNER", "ADMINISTRATOR", "", 1, None]
)
def test_a_valid_token_that_is_not_admin_is_forbidden(member_type: object) -> None:
    error = _rejected(f"Bearer {_token(memberType=member_type)}")
    assert (error.http_status, error.code) == (403, "ACCESS_DENIED")


def test_expired_by_one_second_is_expired() -> None:
    token = f"Bearer {_token(iat=NOW - 3601, exp=NOW - 1)}"
    error = _rejected(token)
    assert (error.http_status, error.code) == (401, "EXPIRED_TOKEN")


def test_expiry_has_no_leeway() -> None:
    token = f"Bearer {_token(exp=NOW + 1)}"
    assert verify_admin_token(token, KEY_32, now=NOW)
    assert _rejected(token, now=NOW + 1).code == "EXPIRED_TOKEN"


def test_default_clock_is_the_real_time() -> None:
    now = int(time.time())
    assert verify_admin_token(f"Bearer {_token(iat=now, exp=now + 60)}", KEY_32)
    with pytest.raises(AuthError) as caught:
        verify_admin_token(f"Bearer {_token(iat=now - 60, exp=now - 1)}", KEY_32)
    assert caught.value.code == "EXPIRED_TOKEN"


def test_an_iat_slightly_in_the_future_is_tolerated() -> None:
    # another service's clock may run ahead; jjwt does not check iat either
    assert verify_admin_token(f"Bearer {_token(iat=NOW + 5)}", KEY_32, now=NOW)


def _tampered() -> str:
    header, _, signature = _token().split(".")
    payload = _b64(json.dumps(_claims(sub="8")).encode())
    return f"{header}.{payload}.{signature}"


def _alg_none() -> str:
    return _crafted({"alg": "none", "typ": "JWT"}, _claims(), b"")


def _rs256() -> str:
    return _crafted({"alg": "RS256", "typ": "JWT"}, _claims(), b"\x01" * 256)


def _unknown_alg() -> str:
    # a token signed with the right key but claiming an algorithm outside the list
    signing_input = ".".join(
        _b64(json.dumps(p).encode()) for p in ({"alg": "HS1", "typ": "JWT"}, _claims())
    )
    return f"{signing_input}.{_b64(b'x' * 32)}"


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no header"),
        pytest.param("", id="empty header"),
        pytest.param("Bearer", id="bearer without token"),
        pytest.param("Bearer   ", id="bearer with blanks"),
        pytest.param(_token(), id="missing Bearer prefix"),
        pytest.param(f"Basic {_token()}", id="other scheme"),
        pytest.param(f"bearer {_token()}", id="lower-case scheme"),
        pytest.param("Bearer garbage", id="garbage"),
        pytest.param("Bearer a.b.c", id="three garbage segments"),
        pytest.param(f"Bearer {_tampered()}", id="tampered payload"),
        pytest.param(f"Bearer {_token(b'another-key-of-thirty-two-bytes!')}", id="other key"),
        pytest.param(f"Bearer {_alg_none()}", id="alg none"),
        pytest.param(f"Bearer {_alg_none()}signature", id="alg none with signature"),
        pytest.param(f"Bearer {_rs256()}", id="RS256"),
        pytest.param(f"Bearer {_unknown_alg()}", id="unknown alg"),
        pytest.param(f"Bearer {_token(sub=None)}", id="no sub"),
        pytest.param(f"Bearer {_token(exp=None)}", id="no exp"),
        pytest.param(f"Bearer {_token(iat=None)}", id="no iat"),
        pytest.param(f"Bearer {_token(exp='tomorrow')}", id="exp not a number"),
        pytest.param(f"Bearer {_token(sub=7)}", id="sub not a string"),
    ],
)
def test_invalid_tokens_are_401_invalid_token(authorization: str | None) -> None:
    error = _rejected(authorization)
    assert (error.http_status, error.code) == (401, "INVALID_TOKEN")
    assert error.message
    assert str(error) == error.message  # what the answer says


def test_verify_token_skips_the_admin_check() -> None:
    claims = verify_token(f"Bearer {_token(memberType='SYSTEM')}", KEY_32, now=NOW)
    assert claims["memberType"] == "SYSTEM"


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("key", [KEY_32, KEY_48, KEY_64])
def test_system_token_claims(key: bytes) -> None:
    token = SystemToken(key, "batch-service", clock=_Clock(NOW + 0.7)).get()
    assert jwt.get_unverified_header(token)["alg"] == algorithm_for_key(key)
    claims = jwt.decode(
        token, key, algorithms=[algorithm_for_key(key)], options={"verify_exp": False}
    )
    assert claims == {
        "sub": "0",
        "username": "batch-service",
        "memberType": "SYSTEM",
        "iat": NOW,
        "exp": NOW + 3600,
    }
    assert verify_token(f"Bearer {token}", key, now=NOW + 1)["username"] == "batch-service"


def test_system_token_is_not_an_admin_token() -> None:
    token = SystemToken(KEY_32, "batch-service", clock=_Clock(NOW)).get()
    assert _rejected(f"Bearer {token}").code == "ACCESS_DENIED"


def test_system_token_is_reused_until_ten_seconds_before_expiry() -> None:
    clock = _Clock(NOW)
    system = SystemToken(KEY_32, "batch-service", clock=clock)
    first = system.get()
    clock.now = NOW + 3600 - 10 - 0.001
    assert system.get() == first
    clock.now = NOW + 3600 - 10
    second = system.get()
    assert second != first
    assert (
        jwt.decode(second, KEY_32, algorithms=["HS256"], options={"verify_exp": False})["iat"]
        == NOW + 3590
    )
    clock.now = NOW + 3600 - 9
    assert system.get() == second


def test_system_token_is_valid_with_the_real_clock() -> None:
    token = SystemToken(KEY_32, "batch-service").get()
    assert verify_token(f"Bearer {token}", KEY_32)["sub"] == "0"


def test_system_token_bytes_are_the_hand_signed_ones() -> None:
    """The exact token the hand-written signer gave before PyJWT signed it (issue 29): the
    header's and the claims' JSON, their order and the signature, byte for byte."""
    token = SystemToken(b"k" * 32, "batch-service", clock=lambda: 1761900000.7).get()
    assert token == (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        ".eyJzdWIiOiIwIiwidXNlcm5hbWUiOiJiYXRjaC1zZXJ2aWNlIiwibWVtYmVyVHlwZSI6IlNZU1RFTSIsImlh"
        "dCI6MTc2MTkwMDAwMCwiZXhwIjoxNzYxOTAzNjAwfQ"
        ".GVDI9A_fQKZ0iy3M410IK5aBKY9PNgR6y98vZd_UOtI"
    )
