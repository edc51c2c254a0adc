"""The platform's shared JWT scheme (CONTRACTS section 4): the system token and admin checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.errors import Refusal

# The HMAC algorithms the platform signs with.
ALGORITHMS = ("HS256", "HS384", "HS512")
ADMIN_TYPES = frozenset({"ADMIN", "ROLE_ADMIN"})
TOKEN_LIFETIME_SECONDS = 3600
RENEW_BEFORE_SECONDS = 10
SYSTEM_SUBJECT = "0"
SYSTEM_MEMBER_TYPE = "SYSTEM"


def algorithm_for_key(key: bytes) -> str:
    """The HMAC algorithm the platform (jjwt) picks for a key of this length."""
    if len(key) >= 64:
        return "HS512"
    if len(key) >= 48:
        return "HS384"
    return "HS256"


def mint_token(
    key: bytes,
    *,
    subject: str,
    username: str,
    member_type: str,
    lifetime_seconds: int = TOKEN_LIFETIME_SECONDS,
    now: float,
) -> tuple[str, int]:
    """A token of the platform's scheme: its claims, signed with the HMAC the platform
    picks for the key; with its `exp` (epoch seconds)."""
    import jwt  # here: a run that asks no peer starts without PyJWT (docs/performance.md)

    issued = int(now)
    expires = issued + lifetime_seconds
    claims = {
        "sub": subject,
        "username": username,
        "memberType": member_type,
        "iat": issued,
        "exp": expires,
    }
    return jwt.encode(claims, key, algorithm=algorithm_for_key(key)), expires


class SystemToken:
    """The token this service sends to its peers; minted once and reused until near expiry."""

    def __init__(
        self, key: bytes, application_name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._application_name = application_name
        self._clock = clock
        self._token = ""
        self._renew_at = float("-inf")

    def get(self) -> str:
        now = self._clock()
        if now >= self._renew_at:
            self._token, expires = mint_token(
                self._key,
                subject=SYSTEM_SUBJECT,
                username=self._application_name,
                member_type=SYSTEM_MEMBER_TYPE,
                now=now,
            )
            self._renew_at = expires - RENEW_BEFORE_SECONDS
        return self._token


class AuthError(Refusal):
    """A rejected token: the HTTP status and the platform's error code for the answer
    (INVALID_TOKEN, EXPIRED_TOKEN: 401; ACCESS_DENIED: 403)."""

    code = "INVALID_TOKEN"
    http_status = 401

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> AuthError:
    return AuthError(401, "INVALID_TOKEN", message)


def verify_token(authorization: str | None, key: bytes, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid `Bearer` token signed with `key`; AuthError (401) otherwise.

    Like the platform (jjwt) this checks `exp` without leeway, does not reject an `iat`
    in the future (clock skew between services), and refuses an HMAC algorithm whose
    minimum key length the key does not reach.
    """
    import jwt  # here, as in mint_token

    scheme, _, token = (authorization or "").partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise _invalid("expected an Authorization: Bearer <token> header")
    try:
        claims = jwt.decode(
            token.strip(),
            key,
            algorithms=list(ALGORITHMS),
            options={
                "require": ["sub", "exp", "iat"],
                "verify_exp": False,
                "verify_iat": False,
                "enforce_minimum_key_length": True,
            },
        )
    except jwt.InvalidKeyError:
        raise _invalid("invalid token: algorithm not accepted for this key") from None
    except jwt.PyJWTError as exc:
        raise _invalid(f"invalid token: {exc}") from None
    except UnicodeError:  # header bytes that are not UTF-8 reach us as surrogate escapes
        raise _invalid("invalid token: not UTF-8") from None
    exp, iat = claims["exp"], claims["iat"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat)):
        raise _invalid("invalid token: exp and iat must be numbers")
    if exp <= (time.time() if now is None else now):
        raise AuthError(401, "EXPIRED_TOKEN", "the token has expired")
    return claims


def verify_admin_token(
    authorization: str | None, key: bytes, now: float | None = None
) -> dict[str, Any]:
    """The claims of a valid admin token (`memberType` ADMIN or ROLE_ADMIN, any case)."""
    claims = verify_token(authorization, key, now)
    member_type = claims.get("memberType")
    if not isinstance(member_type, str) or member_type.upper() not in ADMIN_TYPES:
        raise AuthError(403, "ACCESS_DENIED", "an admin token is required")
    return claims
