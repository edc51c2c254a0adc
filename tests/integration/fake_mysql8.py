"""The login of a MySQL 8 account with `caching_sha2_password`, MySQL 8's default, played
by a fake server: MariaDB 10.11 has no such plugin, so no real server here can show it.

The fake speaks the protocol's connection phase as MySQL 8 documents it (greeting,
optional switch to TLS, fast authentication or full authentication with the server's
RSA key or, over TLS, the password itself), then answers every command with OK. The
password it is sent is decrypted and checked, so a wrong encryption fails the login.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_CAPABILITIES = (
    0x1  # LONG_PASSWORD
    | 0x4  # LONG_FLAG
    | 0x8  # CONNECT_WITH_DB
    | 0x200  # PROTOCOL_41
    | 0x2000  # TRANSACTIONS
    | 0x8000  # SECURE_CONNECTION
    | 0x10000  # MULTI_STATEMENTS
    | 0x20000  # MULTI_RESULTS
    | 0x80000  # PLUGIN_AUTH
    | 0x200000  # PLUGIN_AUTH_LENENC_CLIENT_DATA
)
_CLIENT_SSL = 0x800
_AUTOCOMMIT = 0x2
_COM_QUIT = 0x01
_FAST_AUTH_OK, _FULL_AUTH_NEEDED, _KEY_REQUEST = 3, 4, b"\x02"


@dataclass
class FakeMySQL8:
    port: int
    password: bytes
    tls: ssl.SSLContext | None
    cached: bool  # True: the server's cache knows the account, fast authentication passes
    private_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    events: list[str] = field(default_factory=list)  # what each login did, in order


class _Session:
    """One connection, on blocking sockets in a thread of its own: an asyncio stream
    would read the client's TLS hello into its buffer along with the SSL request."""

    def __init__(self, fake: FakeMySQL8, sock: socket.socket) -> None:
        self.fake, self.sock = fake, sock
        self.seq = 0
        self.secure = False

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def read(self) -> bytes:
        header = self._exactly(4)
        self.seq = (header[3] + 1) & 0xFF
        return self._exactly(int.from_bytes(header[:3], "little"))

    def send(self, payload: bytes) -> None:
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes([self.seq]) + payload)
        self.seq = (self.seq + 1) & 0xFF

    def send_ok(self) -> None:
        self.send(b"\x00\x00\x00" + _AUTOCOMMIT.to_bytes(2, "little") + b"\x00\x00")

    def send_error(self, code: int, message: str) -> None:
        self.send(b"\xff" + code.to_bytes(2, "little") + b"#28000" + message.encode())

    def login(self) -> bool:
        nonce = os.urandom(20).replace(b"\0", b"\1")
        capabilities = _CAPABILITIES | (_CLIENT_SSL if self.fake.tls else 0)
        self.send(
            b"\x0a8.0.36\0"
            + (7).to_bytes(4, "little")
            + nonce[:8]
            + b"\0"
            + (capabilities & 0xFFFF).to_bytes(2, "little")
            + bytes([255])  # utf8mb4_0900_ai_ci
            + _AUTOCOMMIT.to_bytes(2, "little")
            + (capabilities >> 16).to_bytes(2, "little")
            + bytes([21])
            + b"\0" * 10
            + nonce[8:]
            + b"\0"
            + b"caching_sha2_password\0"
        )
        response = self.read()
        if len(response) == 32 and self.fake.tls:  # an SSL request: the rest goes over TLS
            self.sock = self.fake.tls.wrap_socket(self.sock, server_side=True)
            self.secure = True
            self.fake.events.append("tls")
            response = self.read()
        if self.fake.cached:
            self.fake.events.append("fast auth")
            self.send(bytes([1, _FAST_AUTH_OK]))
            self.send_ok()
            return True
        self.send(bytes([1, _FULL_AUTH_NEEDED]))
        answer = self.read()
        if self.secure:
            self.fake.events.append("password over tls")
            password = answer
        else:
            if answer != _KEY_REQUEST:
                self.fake.events.append(f"unexpected {answer[:8]!r}")
                self.send_error(1045, "expected a key request")
                return False
            self.fake.events.append("public key sent")
            self.send(
                b"\x01"
                + self.fake.private_key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            oaep = padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None
            )
            xored = self.fake.private_key.decrypt(self.read(), oaep)
            password = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(xored))
        if password != self.fake.password + b"\0":
            self.fake.events.append("wrong password")
            self.send_error(1045, "Access denied")
            return False
        self.fake.events.append("password accepted")
        self.send_ok()
        return True

    def serve(self) -> None:
        try:
            if self.login():
                while self.read()[0] != _COM_QUIT:
                    self.send_ok()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.sock.close()


@contextmanager
def run_fake_mysql8(
    password: str, *, tls: ssl.SSLContext | None = None, cached: bool = False
) -> Iterator[FakeMySQL8]:
    listener = socket.create_server(("127.0.0.1", 0))
    fake = FakeMySQL8(
        port=listener.getsockname()[1], password=password.encode(), tls=tls, cached=cached
    )

    def accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=_Session(fake, sock).serve, daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield fake
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
        listener.close()
        acceptor.join()
