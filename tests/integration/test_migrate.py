"""Migrations: idempotent, and safe on a database the old Spring service already set up."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from asyncmy.pool import Pool

from app.edges.db import fetch_all, open_pool
from app.schema.migrate import migrate
from tests.conftest import DB_SERVER, _admin
from tests.settings import make_settings

ALL = [
    "V001__spring_batch_metadata",
    "V002__coupon_usage_stats",
    "V003__coupon_usage_stats_by_date",
    "V004__spring_batch_job_keys",
    "V005__batch_service_replicas",
]


@pytest.fixture
async def empty_db() -> AsyncIterator[Pool]:
    name = f"cpb_migrate_{os.getpid()}"
    await _admin(f"DROP DATABASE IF EXISTS {name}")
    await _admin(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    async with open_pool(make_settings(DB_URL=f"{DB_SERVER}/{name}").database) as pool:
        yield pool
    await _admin(f"DROP DATABASE IF EXISTS {name}")


async def tables(pool: Pool) -> set[str]:
    return {row[0] for row in await fetch_all(pool, "SHOW TABLES")}


async def test_migrate_twice_applies_each_version_once(empty_db: Pool) -> None:
    assert await migrate(empty_db) == ALL
    assert await migrate(empty_db) == []
    found = await tables(empty_db)
    assert {
        "BATCH_JOB_INSTANCE",
        "BATCH_JOB_EXECUTION",
        "BATCH_JOB_EXECUTION_PARAMS",
        "BATCH_STEP_EXECUTION",
        "BATCH_STEP_EXECUTION_CONTEXT",
        "BATCH_JOB_EXECUTION_CONTEXT",
        "BATCH_JOB_SEQ",
        "BATCH_JOB_EXECUTION_SEQ",
        "BATCH_STEP_EXECUTION_SEQ",
        "coupon_usage_stats",
    } <= found
    assert "coupon_histories" not in found  # peer-owned: only with --dev-schema
    for seq in ("BATCH_JOB_SEQ", "BATCH_JOB_EXECUTION_SEQ", "BATCH_STEP_EXECUTION_SEQ"):
        assert await fetch_all(empty_db, f"SELECT ID, UNIQUE_KEY FROM {seq}") == [(0, "0")]


async def test_dev_schema_adds_the_peer_tables(empty_db: Pool) -> None:
    await migrate(empty_db, dev_schema=True)
    await migrate(empty_db, dev_schema=True)
    assert {"coupon_histories", "coupon_events"} <= await tables(empty_db)


async def test_a_database_that_predates_the_history_keeps_its_rows(empty_db: Pool) -> None:
    await migrate(empty_db)
    async with empty_db.acquire() as conn, conn.cursor() as cur:
        await cur.execute("UPDATE BATCH_JOB_SEQ SET ID = 41")
        await cur.execute(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (1, '상도동', 9, '2025-10-01')"
        )
        await cur.execute("DROP TABLE batch_service_schema_history")
    assert await migrate(empty_db) == ALL  # index already there: tolerated
    assert await fetch_all(empty_db, "SELECT ID FROM BATCH_JOB_SEQ") == [(41,)]
    assert await fetch_all(empty_db, "SELECT member_id, top_dong FROM coupon_usage_stats") == [
        (1, "상도동")
    ]
