"""The database edge: several ordered streams merged into one order."""

from __future__ import annotations

import pytest
from asyncmy.errors import OperationalError
from asyncmy.pool import Pool

from app.edges.db import fetch_all, stream_merged

ROWS = 600
# Row i has key i * 7 % 50: every key is spread over the whole id range, so each of
# the id-range queries below holds a share of every key.
ORDERED = "SELECT k, id FROM merge_rows WHERE {where} ORDER BY k"


@pytest.fixture
async def merge_rows(pool: Pool) -> Pool:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("DROP TABLE IF EXISTS merge_rows")
        await cur.execute("CREATE TABLE merge_rows (id INT PRIMARY KEY, k INT NOT NULL)")
        await cur.execute(f"INSERT INTO merge_rows SELECT seq, seq * 7 % 50 FROM seq_1_to_{ROWS}")
    return pool


def queries(*wheres: str) -> list[tuple[str, list[object]]]:
    return [(ORDERED.format(where=where), []) for where in wheres]


@pytest.mark.parametrize(
    "wheres",
    [
        ["TRUE"],
        ["id < 200", "id >= 200 AND id < 400", "id >= 400"],
        ["id < 590", "id >= 590"],  # one stream ends long before the other
        ["id < 300", "id >= 300", "FALSE"],  # a stream without rows
    ],
)
@pytest.mark.parametrize("fetch_rows", [1, 7, 1000])
async def test_merged_streams_are_one_ordered_stream_never_splitting_a_key(
    merge_rows: Pool, wheres: list[str], fetch_rows: int
) -> None:
    batches = [batch async for batch in stream_merged(merge_rows, queries(*wheres), fetch_rows)]

    merged = [tuple(row) for batch in batches for row in batch]
    assert [k for k, _ in merged] == sorted(k for k, _ in merged)
    expected = await fetch_all(merge_rows, "SELECT k, id FROM merge_rows ORDER BY k, id")
    assert sorted(merged) == [tuple(row) for row in expected]
    keys_per_batch = [{k for k, _ in batch} for batch in batches]
    assert sum(map(len, keys_per_batch)) == len(set().union(*keys_per_batch)) == 50
    assert all(batches)


async def test_a_failing_query_fails_the_stream_and_gives_every_connection_back(
    merge_rows: Pool,
) -> None:
    broken = [*queries("id < 300"), ("SELECT k, id FROM merge_rows ORDER BY no_such_column", [])]
    with pytest.raises(OperationalError, match="no_such_column"):
        async for _ in stream_merged(merge_rows, broken, 10):
            pass
    assert merge_rows.size == merge_rows.freesize  # none is left held
