"""Which MySQL/MariaDB errors a later try may clear, by class (docs/faults.md)."""

from __future__ import annotations

import ssl

import pytest
from asyncmy.errors import (
    DataError,
    IntegrityError,
    InterfaceError,
    MySQLError,
    OperationalError,
    ProgrammingError,
)

from app.edges.db_faults import availability_kind


def error(cls: type[MySQLError], code: int, sqlstate: str | None = None) -> MySQLError:
    exc = cls(code, "the server's words")
    exc.sqlstate = sqlstate
    return exc


@pytest.mark.parametrize(
    ("code", "sqlstate", "kind"),
    [
        (2013, None, "connection lost"),  # the client's own: no SQLSTATE
        (2006, None, "connection lost"),
        (2003, None, "cannot connect"),
        (1927, "70100", "connection lost"),  # MariaDB: KILL
        (1317, "70100", "statement interrupted"),  # KILL QUERY
        (3024, "HY000", "statement interrupted"),  # MySQL: max_execution_time
        (1969, "70100", "statement interrupted"),  # MariaDB: max_statement_time
        (1040, "08004", "server limit"),  # too many connections
        (1203, "42000", "server limit"),  # max_user_connections
        (1226, "42000", "server limit"),  # max_questions and others per hour
        (1205, "HY000", "lock conflict"),
        (1213, "40001", "lock conflict"),
        (1053, "08S01", "shutdown or failover"),
        (1290, "HY000", "shutdown or failover"),  # read_only, super_read_only
        (1836, "HY000", "shutdown or failover"),
        # by SQLSTATE class where the code is not listed
        (1159, "08S01", "connection exception"),  # got timeout reading packets
        (1614, "40001", "transaction rolled back"),  # XA: rolled back, deadlock
        (1135, "HY000", "server limit"),  # cannot create a thread
        (9999, "HY001", "out of memory"),  # a code of a later server, its SQLSTATE known
    ],
)
def test_availability_faults_by_code_and_class(code: int, sqlstate: str, kind: str) -> None:
    assert availability_kind(error(OperationalError, code, sqlstate)) == kind


@pytest.mark.parametrize(
    ("cls", "code", "sqlstate"),
    [
        (ProgrammingError, 1064, "42000"),  # syntax
        (ProgrammingError, 1146, "42S02"),  # no such table
        (OperationalError, 1054, "42S22"),  # unknown column
        (DataError, 1406, "22001"),  # data too long
        (IntegrityError, 1062, "23000"),  # duplicate key
        (OperationalError, 1045, "28000"),  # access denied
        (OperationalError, 1049, "42000"),  # unknown database
        (OperationalError, 1129, "HY000"),  # host blocked: FLUSH HOSTS, not time, clears it
    ],
)
def test_faults_no_retry_clears_are_none(cls: type[MySQLError], code: int, sqlstate: str) -> None:
    assert availability_kind(error(cls, code, sqlstate)) is None


def test_a_lost_connection_of_the_driver_s_own_is_one() -> None:
    assert availability_kind(InterfaceError(0, "Not connected")) == "connection lost"


def test_a_connect_refused_over_tls_is_none() -> None:
    """asyncmy reports a refused certificate as 2003 (cannot connect): no retry clears it."""
    refused = error(OperationalError, 2003)
    refused.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert availability_kind(refused) is None
    unreachable = error(OperationalError, 2003)
    unreachable.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert availability_kind(unreachable) == "cannot connect"
