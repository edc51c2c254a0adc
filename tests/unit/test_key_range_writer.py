"""KeyRangeWriter's INSERT text, formatted column by column, against every value escaped
alone (what `executemany` would send)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from app.pipeline.chunk import KeyRange
from app.pipeline.writers import KeyRangeWriter


def literal(value: Any) -> str:
    """A stand-in for the connection's escaping, which tells the types apart."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value)


class FakeCursor:
    def __init__(self, executed: list[str]) -> None:
        self.executed = executed

    async def __aenter__(self) -> FakeCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def execute(self, sql: str, args: Any = None) -> None:
        self.executed.append(sql)

    async def fetchone(self) -> tuple[int] | None:
        return None  # the scope has no row yet: no deletes


class FakeConnection:
    def __init__(self) -> None:
        self.executed: list[str] = []
        self.literal = literal

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.executed)


def test_the_insert_is_each_value_escaped_alone_row_by_row() -> None:
    rows: list[tuple[Any, ...]] = [
        (1, "역삼1동", 9, None, 1.5),
        (2, "it's", 10, 7, 1.0),
        (3, "역삼1동", 11, True, 1),
        (4, "a\\b", 12, "x", 2.5),
    ]
    writer = KeyRangeWriter(
        "t",
        key="k",
        columns=("k", "dong", "hour", "mixed", "ratio"),
        scope={"day": date(2025, 1, 2)},
    )
    conn = FakeConnection()
    asyncio.run(writer.write(conn, rows, KeyRange(None, None)))  # type: ignore[arg-type]
    expected = "INSERT INTO t (k, dong, hour, mixed, ratio, day) VALUES " + ",".join(
        "(" + ",".join(map(literal, (*row, date(2025, 1, 2)))) + ")" for row in rows
    )
    assert conn.executed[1:] == [expected]
    assert "(1,'역삼1동',9,NULL,1.5,'2025-01-02')" in expected
    assert "(3,'역삼1동',11,1,1,'2025-01-02')" in expected


def test_a_thousand_rows_a_statement() -> None:
    rows = [(key, "x") for key in range(2500)]
    writer = KeyRangeWriter("t", key="k", columns=("k", "v"), scope={"day": date(2025, 1, 2)})
    conn = FakeConnection()
    asyncio.run(writer.write(conn, rows, KeyRange(None, None)))  # type: ignore[arg-type]
    inserts = conn.executed[1:]
    assert [statement.count("),(") + 1 for statement in inserts] == [1000, 1000, 500]
    assert inserts[2].endswith(",(2499,'x','2025-01-02')")
    assert inserts[0].startswith("INSERT INTO t (k, v, day) VALUES (0,'x','2025-01-02'),(1,")
