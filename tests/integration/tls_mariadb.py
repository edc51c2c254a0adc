"""A second MariaDB of the test's own, on a port of its own, that admits TLS logins only,
with the certificates of `tests.certs`."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.certs import write_certificates

USER = "batch"
PASSWORD = "tls-only-pw"
DATABASE = "couponpop_tls"
_START_SECONDS = 60.0  # a bound on a loaded machine; it starts in about a second


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_file: Path  # signed the server's certificate
    other_ca_file: Path  # signed nothing the server has

    def url(self, host: str = "127.0.0.1", options: str = "") -> str:
        return f"mysql://{host}:{self.port}/{DATABASE}{'?' + options if options else ''}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sql(sock: Path, sql: str) -> None:
    """As root over the server's socket (a socket counts as secure transport)."""
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={sock}", "--user=root", "-e", sql],
        check=True,
        capture_output=True,
        timeout=_START_SECONDS,
    )


@contextmanager
def run_tls_mariadb(folder: Path) -> Iterator[TlsServer]:
    """Initialise a datadir in `folder`, start the server, create the test's user and
    database; stop the server on the way out."""
    files = write_certificates(folder)
    datadir, sock, error_log = folder / "data", folder / "mysqld.sock", folder / "error.log"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--user=root",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
        timeout=_START_SECONDS,
    )
    port = _free_port()
    server = subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={datadir}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            f"--log-error={error_log}",
            f"--pid-file={folder / 'mariadbd.pid'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            f"--ssl-ca={files['ca.pem']}",
            f"--ssl-cert={files['server.pem']}",
            f"--ssl-key={files['server-key.pem']}",
            "--require-secure-transport=ON",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(server, sock, error_log)
        _sql(
            sock,
            f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';"
            f" CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;"
            f" GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';",
        )
        yield TlsServer(port=port, ca_file=files["ca.pem"], other_ca_file=files["other-ca.pem"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=_START_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_ready(server: subprocess.Popen[bytes], sock: Path, error_log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mariadbd exited {server.returncode}: {_tail(error_log)}")
        if error_log.is_file() and "ready for connections" in error_log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"mariadbd not ready in {_START_SECONDS:g} s: {_tail(error_log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-2000:]
    except FileNotFoundError:
        return ""
