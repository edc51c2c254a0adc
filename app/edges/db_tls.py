"""TLS and the login's RSA key on the database connections, as Connector/J's options mean them.

asyncmy takes an `ssl.SSLContext` and always upgrades to TLS when given one, whether or
not the server offers it; PREFERRED therefore asks the server first (once per process
and server) and connects plain to a server without TLS. asyncmy also always asks the
server for its RSA key when MySQL 8's `caching_sha2_password` (or `sha256_password`)
needs full authentication without TLS; `allowPublicKeyRetrieval=false` (Connector/J's
default) is enforced by the guard on that request below.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import asyncmy.auth
from asyncmy.errors import OperationalError

from app.config import DbTarget

# asyncmy's own connect timeout: the greeting must come as fast as a connection would.
_GREETING_TIMEOUT_SECONDS = 10.0
_CLIENT_SSL = 0x0800  # capability flag: the server can switch to TLS
_CR_AUTH_PLUGIN_ERR = 2061

# A key of asyncmy's `auth_plugin_map` that names no plugin: asyncmy only looks plugins
# up by name, so it just marks the connection for the guard.
NO_PUBLIC_KEY_RETRIEVAL = "couponpop-batch: no public key retrieval"
# The client's "send me your public key" of sha256_password and caching_sha2_password;
# every other answer of theirs is a password, a scramble or an RSA block.
_KEY_REQUESTS = (b"\x01", b"\x02")

_tls_offered: dict[tuple[str, int], bool] = {}


async def tls_connect_args(target: DbTarget) -> dict[str, Any]:
    """asyncmy.connect's `ssl` and `auth_plugin_map` for `target`.

    The context is made once per process for each mode and CA file (reading the CA
    file, or the system's CAs, off the event loop), and shared by every connection.
    """
    mode = target.ssl_mode
    if mode == "PREFERRED" and not await server_offers_tls(target.host, target.port):
        mode = "DISABLED"
    context = None
    if mode != "DISABLED":
        context = await asyncio.to_thread(ssl_context, mode, target.ssl_ca)
    plugins = {} if target.allow_public_key_retrieval else {NO_PUBLIC_KEY_RETRIEVAL: None}
    return {"ssl": context, "auth_plugin_map": plugins}


@functools.cache
def ssl_context(mode: str, ca_file: str) -> ssl.SSLContext:
    """REQUIRED and PREFERRED encrypt without checking the certificate, as Connector/J."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if mode in ("REQUIRED", "PREFERRED"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs()
    context.check_hostname = mode == "VERIFY_IDENTITY"
    return context


async def server_offers_tls(host: str, port: int) -> bool:
    """Whether the server's greeting offers TLS; remembered once it has answered.

    A server that cannot be reached (or greets with an error) counts as offering none
    for now: the connection that follows reports why.
    """
    known = _tls_offered.get((host, port))
    if known is not None:
        return known
    try:
        flags = await asyncio.wait_for(
            _greeting_capabilities(host, port), _GREETING_TIMEOUT_SECONDS
        )
    except (OSError, EOFError, TimeoutError, ValueError):
        return False
    offered = _tls_offered[(host, port)] = bool(flags & _CLIENT_SSL)
    return offered


async def _greeting_capabilities(host: str, port: int) -> int:
    """The lower capability flags of the server's handshake packet (protocol 10)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        header = await reader.readexactly(4)
        payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
    finally:
        writer.close()
    if not payload or payload[0] != 10:
        raise ValueError("not a protocol 10 greeting")
    # version NUL-terminated, thread id (4), scramble part 1 (8), filler (1), flags (2)
    start = payload.index(b"\0", 1) + 1 + 4 + 8 + 1
    return int.from_bytes(payload[start : start + 2], "little")


Roundtrip = Callable[[Any, bytes], Coroutine[Any, Any, Any]]


def _guard_key_requests(roundtrip: Roundtrip) -> Roundtrip:
    async def roundtrip_unless_key_refused(conn: Any, data: bytes) -> Any:
        if (
            data in _KEY_REQUESTS
            and not conn._secure
            and NO_PUBLIC_KEY_RETRIEVAL in conn._auth_plugin_map
        ):
            raise OperationalError(
                _CR_AUTH_PLUGIN_ERR,
                "Public Key Retrieval is not allowed: the login needs the server's RSA key"
                " and the connection has no TLS; use TLS (sslMode) or add"
                " allowPublicKeyRetrieval=true to DB_URL",
            )
        return await roundtrip(conn, data)

    roundtrip_unless_key_refused.guarded = True  # type: ignore[attr-defined]
    return roundtrip_unless_key_refused


# asyncmy's auth module sends every answer of the RSA logins through `_roundtrip`.
if not getattr(asyncmy.auth._roundtrip, "guarded", False):
    asyncmy.auth._roundtrip = _guard_key_requests(asyncmy.auth._roundtrip)
