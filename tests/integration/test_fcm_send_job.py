"""couponUsageStatsFcmSendJob end to end: real MariaDB, real RabbitMQ, fake peers over HTTP.

The queue is declared exactly as the notification service declares it; what arrives
there is compared byte for byte with bodies and trace ids written out in this file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from asyncmy.pool import Pool

from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import FakePeers, run_fake_peers
from app.model import JobExecution
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources
from tests.integration import rabbit
from tests.settings import make_settings

# The old service's own test rows, as the demo loads them.
OLD_SERVICE_ROWS = (
    Path(__file__).resolve().parents[2] / "scripts/demo_data/usage_stats_and_events.sql"
).read_text("utf-8")
JOB = "coupon-usage-stats-fcm-send"
TYPE_ID = "com.couponpop.couponpopcoremodule.dto.coupon.event.model.CouponUsageStatsFcmSendMessage"
QUEUE = "coupon.usage.stats.fcm.send.queue.v1"
TOKEN_SEARCH = "/internal/v1/fcm-tokens/search"
STORE_SEARCH = "/internal/v1/stores/search"

OLD_SERVICE_PEERS = {
    "stores": {"1": "노량진동", "2": "풍무동"},
    "tokens": {"101": ["token-101-a", "token-101-b"]},
}


def java_name_uuid(name: str) -> str:
    """Java's UUID.nameUUIDFromBytes, written out: MD5, then version 3 and the IETF variant."""
    digest = bytearray(hashlib.md5(name.encode("utf-8")).digest())
    digest[6] = (digest[6] & 0x0F) | 0x30
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def test_trace_id_helper_matches_the_contract_example() -> None:
    assert (
        java_name_uuid("2025-10-25:101:token-101-a:노량진동:10")
        == "f85971b0-2d71-3dc0-b533-047f9a578d93"
    )


def expected_body(day: str, member: int, token: str, dong: str, hour: int, count: int) -> bytes:
    """The body Jackson writes: fields in order, no spaces, raw UTF-8."""
    trace = java_name_uuid(f"{day}:{member}:{token}:{dong}:{hour}")
    return (
        f'{{"traceId":"{trace}","memberId":{member},"token":"{token}",'
        f'"topDong":"{dong}","topHour":{hour},"activeEventCount":{count}}}'
    ).encode()


def assert_messages(got: Sequence[AbstractIncomingMessage], expected: Sequence[bytes]) -> None:
    """Exactly `expected` bodies (any order), each with the contract's properties."""
    assert sorted(m.body for m in got) == sorted(expected)
    for message in got:
        trace = json.loads(message.body)["traceId"]
        assert message.message_id == trace
        assert message.content_type == "application/json"
        assert message.content_encoding == "UTF-8"
        assert message.delivery_mode == 2
        assert message.headers == {"__TypeId__": TYPE_ID}
        assert message.exchange == "coupon.exchange"
        assert message.routing_key == "coupon.usage.stats.fcm.send"


# --- fixtures and helpers ----------------------------------------------------------------


async def queue_depth(vhost: str) -> int:
    async with await aio_pika.connect(rabbit.amqp_url(vhost)) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(QUEUE, passive=True)
        return declared.declaration_result.message_count or 0


async def load_old_service_rows(pool: Pool) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        for statement in OLD_SERVICE_ROWS.split(";\n"):
            if statement.strip():
                await cur.execute(statement)


async def insert_stats(pool: Pool, rows: Sequence[tuple[int, str, int, str]]) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_usage_stats (member_id, top_dong, top_hour, aggregated_at)"
            " VALUES (%s, %s, %s, %s)",
            rows,
        )


async def insert_events(pool: Pool, rows: Sequence[tuple[int, str, str, int, int]]) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO coupon_events"
            " (store_id, event_start_at, event_end_at, total_count, issued_count)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


def job_settings(
    settings: Settings, vhost: str, store: FakePeers, notification: FakePeers | None = None, **kw
) -> Settings:
    return make_settings(
        DB_URL=settings.DB_URL,
        RABBITMQ_VHOST=vhost,
        STORE_SERVICE_URL=store.store_url,
        NOTIFICATION_SERVICE_URL=(notification or store).notification_url,
        **kw,
    )


async def run_job(
    settings: Settings,
    parameters: dict[str, str],
    *,
    broker: bool = True,
    dry_run_output: Any = None,
    rerun: bool = True,
) -> JobExecution:
    async with open_resources(settings, broker=broker) as resources:
        return await Launcher(resources, JOBS).run(
            find_job(JOBS, JOB), parameters, rerun=rerun, dry_run_output=dry_run_output
        )


def counts(execution: JobExecution) -> dict[str, int]:
    [step] = execution.steps
    assert step.name == "couponUsageStatsFcmSendStep"
    return {
        "read": step.read_count,
        "written": step.write_count,
        "filtered": step.filter_count,
        "skipped": step.skip_count,
    }


@asynccontextmanager
async def old_service_world(pool: Pool) -> AsyncIterator[FakePeers]:
    await load_old_service_rows(pool)
    async with run_fake_peers(OLD_SERVICE_PEERS) as fake:
        yield fake


# --- the old service's own case ----------------------------------------------------------

NORYANGJIN_10 = [
    expected_body("2025-10-25", 101, "token-101-a", "노량진동", 10, 3),
    expected_body("2025-10-25", 101, "token-101-b", "노량진동", 10, 3),
]


def test_expected_bodies_pin_the_contract_example() -> None:
    assert (
        NORYANGJIN_10[0]
        == (
            '{"traceId":"f85971b0-2d71-3dc0-b533-047f9a578d93","memberId":101,'
            '"token":"token-101-a","topDong":"노량진동","topHour":10,"activeEventCount":3}'
        ).encode()
    )


@pytest.mark.parametrize(
    ("run_date", "hour", "expected"),
    [
        ("2025-10-25", "10", NORYANGJIN_10),
        (
            "2025-10-26",
            "16",
            [
                expected_body("2025-10-26", 101, "token-101-a", "풍무동", 16, 3),
                expected_body("2025-10-26", 101, "token-101-b", "풍무동", 16, 3),
            ],
        ),
        # The latest row of the window (2025-10-26) names 16 h: nothing at 10 h.
        ("2025-10-26", "10", []),
        # The 2025-10-26 row is after the window of 2025-10-25: 10 h is the latest there.
        ("2025-10-25", "16", []),
    ],
)
async def test_old_service_rows(
    pool: Pool, settings: Settings, queue: str, run_date: str, hour: str, expected: list[bytes]
) -> None:
    async with old_service_world(pool) as fake:
        execution = await run_job(
            job_settings(settings, queue, fake), {"runDate": run_date, "targetHour": hour}
        )
    assert execution.status == "COMPLETED", execution.exit_message
    assert execution.parameters == {"runDate": run_date, "targetHour": hour, "dryRun": "false"}
    members = 1 if expected else 0
    assert counts(execution) == {"read": members, "written": members, "filtered": 0, "skipped": 0}
    if expected:
        got = await rabbit.consume(queue, len(expected), idle=0.3)
        assert_messages(got, expected)
    assert await queue_depth(queue) == 0


# --- each rule ---------------------------------------------------------------------------


async def test_filters_and_latest_row_rule(pool: Pool, settings: Settings, queue: str) -> None:
    await load_old_service_rows(pool)  # member 101 and the 노량진동 (store 1) events
    await insert_stats(
        pool,
        [
            (201, "노량진동", 10, "2025-10-25"),  # no push token
            (202, "상도동", 10, "2025-10-24"),  # a dong without a store
            (203, "흑석동", 10, "2025-10-23"),  # its events: sold out, not started, ended
            (204, "사당동", 10, "2025-10-25"),  # starts exactly at 10:00, + a store's event
            (205, "봉천동", 10, "2025-10-25"),  # ends exactly at 10:00, and one left
            (206, "노량진동", 10, "2025-10-24"),  # later row of 10-25 names 11 h: not read
            (206, "노량진동", 11, "2025-10-25"),
            (207, "노량진동", 10, "2025-10-22"),  # before the window: not read
            (208, "노량진동", 10, "2025-10-25"),  # same date, greater id names 11 h: not read
            (208, "노량진동", 11, "2025-10-25"),
            (209, "노량진동", 11, "2025-10-25"),  # same date, greater id names 10 h: read
            (209, "노량진동", 10, "2025-10-25"),
            (210, "노량진동", 11, "2025-10-26"),  # after the window: 10-24's 10 h is latest
            (210, "노량진동", 10, "2025-10-24"),
        ],
    )
    await insert_events(
        pool,
        [
            (3, "2025-10-25 09:00:00", "2025-10-25 12:00:00", 100, 100),  # sold out
            (3, "2025-10-25 10:00:01", "2025-10-25 12:00:00", 100, 0),  # not started yet
            (3, "2025-10-25 08:00:00", "2025-10-25 09:59:59", 100, 0),  # over
            (4, "2025-10-25 10:00:00", "2025-10-25 12:00:00", 100, 0),  # starts at 10:00
            (6, "2025-10-24 00:00:00", "2025-10-26 00:00:00", 10, 9),  # 사당동's other store
            (5, "2025-10-25 08:00:00", "2025-10-25 10:00:00", 100, 99),  # ends at 10:00
        ],
    )
    peers = {
        "stores": {"1": "노량진동", "3": "흑석동", "4": "사당동", "5": "봉천동", "6": "사당동"},
        "tokens": {
            "101": ["token-101-a", "token-101-b"],
            **{str(m): [f"token-{m}"] for m in (202, 203, 204, 205, 206, 207, 208, 209, 210)},
        },
    }
    async with run_fake_peers(peers) as fake:
        execution = await run_job(
            job_settings(settings, queue, fake, CHUNK_SIZE=2, ENRICH_WORKERS=4),
            {"runDate": "2025-10-25", "targetHour": "10"},
        )
        token_calls = fake.calls[TOKEN_SEARCH]
        store_calls = fake.calls[STORE_SEARCH]
    assert execution.status == "COMPLETED", execution.exit_message
    # read: 101, 201..205, 209, 210; filtered: 201 (tokens), 202 (store), 203 (events)
    assert counts(execution) == {"read": 8, "written": 5, "filtered": 3, "skipped": 0}
    assert execution.steps[0].commit_count == 4
    # one token call per chunk of two members, in member order
    assert sorted(token_calls) == [[101, 201], [202, 203], [204, 205], [209, 210]]
    # each dong asked once in the run, though four chunks ran at once
    asked = [dong for call in store_calls for dong in call]
    assert sorted(asked) == sorted(["노량진동", "상도동", "흑석동", "사당동", "봉천동"])

    expected = [
        *NORYANGJIN_10,
        expected_body("2025-10-25", 204, "token-204", "사당동", 10, 2),
        expected_body("2025-10-25", 205, "token-205", "봉천동", 10, 1),
        expected_body("2025-10-25", 209, "token-209", "노량진동", 10, 3),
        expected_body("2025-10-24", 210, "token-210", "노량진동", 10, 3),
    ]
    got = await rabbit.consume(queue, len(expected), idle=0.3)
    assert_messages(got, expected)


# --- dry run -----------------------------------------------------------------------------


def expected_lines(bodies: Sequence[bytes]) -> list[str]:
    return [body.decode() for body in bodies]


async def test_dry_run_from_the_api_writes_the_file_and_publishes_nothing(
    pool: Pool, settings: Settings, queue: str, tmp_path: Path
) -> None:
    async with old_service_world(pool) as fake:
        execution = await run_job(
            job_settings(settings, queue, fake, DRY_RUN_DIR=tmp_path),
            {"runDate": "2025-10-25", "targetHour": "10", "dryRun": "true"},
            broker=False,  # the launcher's dry run needs no broker
        )
    assert execution.status == "COMPLETED", execution.exit_message
    assert execution.parameters["dryRun"] == "true"
    assert counts(execution) == {"read": 1, "written": 1, "filtered": 0, "skipped": 0}
    written = (tmp_path / f"{JOB}-{execution.id}.jsonl").read_text(encoding="utf-8")
    assert written.splitlines() == expected_lines(NORYANGJIN_10)
    assert written.endswith("\n")
    assert await queue_depth(queue) == 0


async def test_dry_runs_are_instances_of_their_own_never_blocking_or_resuming_a_real_run(
    pool: Pool, settings: Settings, queue: str
) -> None:
    """Before: a completed dry run made the scheduler's launch of that hour refuse
    ("already completed"), and a stopped one made it resume from the dry run's checkpoint."""
    parameters = {"runDate": "2025-10-25", "targetHour": "10"}
    async with old_service_world(pool) as fake:
        job = job_settings(settings, queue, fake)
        dry = [
            await run_job(
                job, {**parameters, "dryRun": "true"}, dry_run_output=io.StringIO(), rerun=False
            )
            for _ in range(2)  # dry runs repeat at will
        ]
        real = await run_job(job, parameters, rerun=False)  # as the scheduler launches
    assert [d.status for d in dry] == ["COMPLETED", "COMPLETED"]
    assert all(d.dry_run and d.parameters["run.id"] for d in dry)
    assert len({d.instance_id for d in dry} | {real.instance_id}) == 3
    assert (real.status, real.dry_run) == ("COMPLETED", False)
    assert real.parameters == {**parameters, "dryRun": "false"}
    assert counts(real) == {"read": 1, "written": 1, "filtered": 0, "skipped": 0}
    assert await queue_depth(queue) == 2


async def test_dry_run_output_given_publishes_nothing_even_with_a_broker(
    pool: Pool, settings: Settings, queue: str
) -> None:
    output = io.StringIO()
    async with old_service_world(pool) as fake:
        execution = await run_job(
            job_settings(settings, queue, fake),
            {"runDate": "2025-10-25", "targetHour": "10", "dryRun": "true"},
            dry_run_output=output,
        )
    assert execution.status == "COMPLETED", execution.exit_message
    assert output.getvalue().splitlines() == expected_lines(NORYANGJIN_10)
    assert await queue_depth(queue) == 0


# --- broker failures ---------------------------------------------------------------------


async def unbind(vhost: str) -> None:
    async with await aio_pika.connect(rabbit.amqp_url(vhost)) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(QUEUE, passive=True)
        await declared.unbind("coupon.exchange", "coupon.usage.stats.fcm.send")


async def rebind(vhost: str) -> None:
    async with await aio_pika.connect(rabbit.amqp_url(vhost)) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(QUEUE, passive=True)
        await declared.bind("coupon.exchange", "coupon.usage.stats.fcm.send")


async def test_unroutable_messages_fail_the_run_then_a_restart_once_bound_sends_all(
    pool: Pool, settings: Settings, queue: str
) -> None:
    """A message the broker returns (no queue bound) is refused for a reason no member has
    (issue 26): published again within RETRY_BUDGET_SECONDS, from the messages already
    made (the notification service is asked once), then the run FAILS, its exit message
    naming the exchange and the routing key, nothing skipped (before: the member skipped,
    COMPLETED WITH SKIPS). The restart, once the queue is bound, sends everything."""
    await unbind(queue)
    parameters = {"runDate": "2025-10-25", "targetHour": "10"}
    async with old_service_world(pool) as fake:
        job = job_settings(settings, queue, fake, RETRY_BUDGET_SECONDS=1, RETRY_BASE_SECONDS=0.05)
        execution = await run_job(job, parameters)
        assert (execution.status, execution.exit_code) == ("FAILED", "FAILED")
        assert re.fullmatch(
            r"UnroutableError: [12] of 2 messages returned as unroutable: no queue is bound to"
            r" routing key 'coupon\.usage\.stats\.fcm\.send' on exchange 'coupon\.exchange'",
            execution.exit_message,
        ), execution.exit_message
        assert counts(execution) == {"read": 0, "written": 0, "filtered": 0, "skipped": 0}
        assert fake.calls[TOKEN_SEARCH] == [[101]]  # retried with the tokens looked up once
        assert await queue_depth(queue) == 0

        await rebind(queue)
        restart = await run_job(job_settings(settings, queue, fake), parameters, rerun=False)
    assert (restart.status, restart.exit_code) == ("COMPLETED", "COMPLETED")
    assert restart.instance_id == execution.instance_id
    assert counts(restart) == {"read": 1, "written": 1, "filtered": 0, "skipped": 0}
    assert await queue_depth(queue) == 2


async def test_broker_connection_closed_during_the_run(
    pool: Pool, settings: Settings, queue: str
) -> None:
    members = range(1, 3001)
    await load_old_service_rows(pool)  # the 노량진동 events: 3 at 10 h
    await pool_execute(pool, "DELETE FROM coupon_usage_stats")
    await insert_stats(pool, [(m, "노량진동", 10, "2025-10-25") for m in members])
    peers = {"stores": {"1": "노량진동"}, "tokens": {str(m): [f"token-{m}"] for m in members}}
    expected = {java_name_uuid(f"2025-10-25:{m}:token-{m}:노량진동:10") for m in members}

    async with run_fake_peers(peers) as fake:
        # 30 chunks of 100, 4 at a time, 100 ms per token call, at most 5 messages in
        # flight: the run lasts ~2-3 s, most of it publishing.
        fake.control.latency_ms = 100
        job_config = job_settings(settings, queue, fake, CHUNK_SIZE=100, PUBLISH_WINDOW=5)
        async with open_resources(job_config, broker=True) as resources:
            [connection] = await asyncio.to_thread(connection_pids, queue)
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(
                find_job(JOBS, JOB), {"runDate": "2025-10-25", "targetHour": "10"}, rerun=True
            )
            for _ in range(1000):  # until three chunks are committed
                if run.progress.commits >= 3:
                    break
                await asyncio.sleep(0.01)
            await asyncio.to_thread(
                rabbit.rabbitmqctl, "close_connection", connection, "closed by test"
            )
            assert not run.task.done(), "the run ended before the connection was closed"
            await run.task
            execution = await launcher.repository.get_execution(run.execution.id)
    assert execution is not None
    assert execution.status == "COMPLETED", execution.exit_message
    assert counts(execution) == {"read": 3000, "written": 3000, "filtered": 0, "skipped": 0}
    got = await rabbit.consume(queue, len(expected), idle=0.5)
    trace_ids = [json.loads(m.body)["traceId"] for m in got]
    assert set(trace_ids) == expected  # every one at least once; duplicates are allowed
    assert all(m.message_id == json.loads(m.body)["traceId"] for m in got)


def connection_pids(vhost: str) -> list[str]:
    rows = rabbit.rabbitmqctl("list_connections", "pid", "vhost").splitlines()
    return [row.split("\t")[0] for row in rows if row.split("\t")[-1] == vhost]


async def pool_execute(pool: Pool, sql: str) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql)


# --- peer failures -----------------------------------------------------------------------


async def test_notification_service_failing_once_then_recovering(
    pool: Pool, settings: Settings, queue: str
) -> None:
    await load_old_service_rows(pool)
    async with (
        run_fake_peers(OLD_SERVICE_PEERS) as store,
        run_fake_peers(OLD_SERVICE_PEERS) as notification,
    ):
        notification.control.fail_status = 503
        notification.control.fail_times = 1
        execution = await run_job(
            job_settings(settings, queue, store, notification),
            {"runDate": "2025-10-25", "targetHour": "10"},
        )
        token_calls = notification.calls[TOKEN_SEARCH]
    assert execution.status == "COMPLETED", execution.exit_message
    assert counts(execution) == {"read": 1, "written": 1, "filtered": 0, "skipped": 0}
    assert token_calls == [[101], [101]]  # the 503, then the retry
    got = await rabbit.consume(queue, len(NORYANGJIN_10), idle=0.3)
    assert_messages(got, NORYANGJIN_10)


# --- restart -----------------------------------------------------------------------------


async def test_a_run_interrupted_by_a_shutdown_resumes_after_its_checkpoint(
    pool: Pool, settings: Settings, queue: str
) -> None:
    members = range(301, 311)
    await load_old_service_rows(pool)
    await pool_execute(pool, "DELETE FROM coupon_usage_stats")
    await insert_stats(pool, [(m, "노량진동", 10, "2025-10-25") for m in members])
    peers = {"stores": {"1": "노량진동"}, "tokens": {str(m): [f"token-{m}"] for m in members}}
    parameters = {"runDate": "2025-10-25", "targetHour": "10"}
    async with run_fake_peers(peers) as fake:
        fake.control.latency_ms = 100
        job_config = job_settings(settings, queue, fake, CHUNK_SIZE=1, ENRICH_WORKERS=1)
        async with open_resources(job_config, broker=True) as resources:
            launcher = Launcher(resources, JOBS)
            run = await launcher.launch(find_job(JOBS, JOB), parameters, rerun=False)
            for _ in range(1000):  # until two chunks are committed
                if run.progress.commits >= 2:
                    break
                await asyncio.sleep(0.01)
            await launcher.shutdown(grace_seconds=10)
            first = await launcher.repository.get_execution(run.execution.id)
            second = await Launcher(resources, JOBS).run(
                find_job(JOBS, JOB), parameters, rerun=False
            )
        token_calls = fake.calls[TOKEN_SEARCH]
    assert first is not None
    assert (first.status, first.exit_code) == ("FAILED", "INTERRUPTED")  # not an operator's stop
    done = first.steps[0].read_count
    assert 2 <= done < len(members)
    assert first.steps[0].checkpoint == members[done - 1]
    assert second.instance_id == first.instance_id
    assert second.status == "COMPLETED", second.exit_message
    assert counts(second) == {"read": 10 - done, "written": 10 - done, "filtered": 0, "skipped": 0}
    # the second run asked for the members after the checkpoint only
    assert [call[0] for call in token_calls[-(10 - done) :]] == list(members[done:])
    got = await rabbit.consume(queue, len(members), idle=0.3)
    assert_messages(
        got, [expected_body("2025-10-25", m, f"token-{m}", "노량진동", 10, 3) for m in members]
    )
