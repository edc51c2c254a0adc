"""Settings for tests: the loopback services of this machine, overridable per test."""

from __future__ import annotations

import base64

from app.config import Settings, load_settings

# A fixed 32-byte key: HS256 by the platform's key-length rule.
TEST_JWT_KEY = b"couponpop-batch-test-key-32bytes"
TEST_JWT_SECRET = base64.b64encode(TEST_JWT_KEY).decode()


def make_settings(**overrides: object) -> Settings:
    env = {
        "JWT_SECRET_KEY": TEST_JWT_SECRET,
        "RETRY_BASE_SECONDS": "0.01",
        "RETRY_MAX_WAIT_SECONDS": "0.2",
        "RETRY_BUDGET_SECONDS": "2",
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return load_settings(env, env_file=None)


__all__ = ["TEST_JWT_KEY", "TEST_JWT_SECRET", "make_settings"]
