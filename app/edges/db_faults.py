"""Which MySQL/MariaDB errors a later try may clear: the database's availability faults.

By class first: the SQLSTATE classes that say so (08 connection exception, 40
transaction rollback, 70100 query interrupted, HY001 memory allocation), then, where the
server says only HY000 or 42000, by code, in kinds an operator can read. The list, with
each server's codes, is in docs/faults.md. Anything else (syntax, a missing table, a
value the column cannot hold, a refused login) is not an outage: no retry clears it.
"""

from __future__ import annotations

import ssl

from asyncmy.errors import InterfaceError, MySQLError

_SQLSTATE_KINDS = {
    "08": "connection exception",
    "40": "transaction rolled back",
    "70100": "statement interrupted",
    "HY001": "out of memory",
}

_CODE_KINDS = {
    # The client's own: the server not reached, or gone mid-statement.
    **dict.fromkeys((2002, 2003, 2005), "cannot connect"),
    **dict.fromkeys((2006, 2013, 2055), "connection lost"),
    # MariaDB: the connection killed (KILL); MySQL 8.0.24+: closed for inactivity
    # (MariaDB uses 4031 for a trigger DDL error this service never runs).
    **dict.fromkeys((1927, 4031), "connection lost"),
    # A statement stopped by the server: KILL QUERY, max_execution_time (MySQL 3024),
    # max_statement_time (MariaDB 1969), a sort aborted with it.
    **dict.fromkeys((1317, 3024, 1969, 1028), "statement interrupted"),
    # Limits of the server or the account: connections, resources per hour, memory,
    # threads, locks, concurrent transactions, a full table or disk.
    **dict.fromkeys(
        (1040, 1203, 1226, 1037, 1038, 1041, 1135, 1206, 1637, 1114, 1021), "server limit"
    ),
    # Lock conflicts: lock wait timeout, deadlock, NOWAIT (MySQL 3572).
    **dict.fromkeys((1205, 1213, 3572), "lock conflict"),
    # The server stopping, or not the primary (read_only, super_read_only, a read-only
    # transaction, a Galera node not ready, group replication refusing a commit).
    **dict.fromkeys((1053, 1290, 1836, 1792, 1047, 1180, 3100, 3101), "shutdown or failover"),
}


def availability_kind(exc: MySQLError) -> str | None:
    """What kind of availability fault `exc` is ("connection lost", "lock conflict", ...),
    or None if it is none.

    A connect that failed on TLS (a certificate refused, no TLS where required) is none:
    asyncmy reports it as 2003, but no retry clears it."""
    if isinstance(exc, InterfaceError):  # asyncmy's own: a connection closed under it
        return "connection lost"
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if code == 2003 and isinstance(exc.__cause__, ssl.SSLError):
        return None
    kind = _CODE_KINDS.get(code) if code is not None else None
    sqlstate = exc.sqlstate
    if kind is None and isinstance(sqlstate, str):
        kind = _SQLSTATE_KINDS.get(sqlstate) or _SQLSTATE_KINDS.get(sqlstate[:2])
    return kind
