from __future__ import annotations

import asyncio
from datetime import date

import aio_pika
import pytest
from aiormq import spec

from app.contracts import (
    CONSUMER_QUEUE,
    EXCHANGE,
    ROUTING_KEY,
    TYPE_ID,
    PushRequest,
    encode_body,
)
from app.edges.broker import (
    Broker,
    BrokerUnavailable,
    MessagesNacked,
    OutgoingMessage,
    UnroutableError,
)
from app.errors import is_availability_fault
from app.jobs.fcm_send import to_message
from app.metrics import REGISTRY
from tests.integration import rabbit
from tests.proxy import FaultProxy, through
from tests.settings import make_settings
from tests.waits import waiting


def requests(n: int, *, start: int = 0) -> list[PushRequest]:
    day = date(2025, 10, 25)
    return [
        PushRequest.for_token(day, member, f"token-{member}-a", "노량진동", 10, 3)
        for member in range(start, start + n)
    ]


def messages(reqs: list[PushRequest]) -> list[OutgoingMessage]:
    """The fan-out job's messages of these push requests."""
    return [to_message(req) for req in reqs]


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("batch_messages_total", {"outcome": outcome}) or 0.0


async def test_message_properties_on_the_wire(queue: str) -> None:
    req = PushRequest.for_token(date(2025, 10, 25), 101, "token-101-a", "노량진동", 10, 3)
    async with Broker(make_settings(RABBITMQ_VHOST=queue).broker) as broker:
        await broker.publish(messages([req]))

    [msg] = await rabbit.consume(queue, 1, idle=0.2)
    assert msg.body == encode_body(req)
    assert "노량진동".encode() in msg.body
    assert msg.content_type == "application/json"
    assert msg.content_encoding == "UTF-8"
    assert msg.delivery_mode == 2
    assert msg.headers == {"__TypeId__": TYPE_ID}
    assert msg.message_id == "f85971b0-2d71-3dc0-b533-047f9a578d93"
    assert msg.routing_key == ROUTING_KEY
    assert msg.priority == 0
    unset = ("app_id", "correlation_id", "expiration", "reply_to", "timestamp", "type", "user_id")
    assert {name: getattr(msg, name) for name in unset} == dict.fromkeys(unset)


# Another job's message (a weekly digest, one per member): nothing of the fan-out's contract.
DIGEST_KEY = "member.weekly.digest"


def digest(member: int) -> OutgoingMessage:
    properties = spec.Basic.Properties(
        content_type="text/plain", message_id=f"digest-2025-W44-{member}", headers={"week": 44}
    )
    return OutgoingMessage(DIGEST_KEY, f"week 44 of member {member}".encode(), properties)


async def test_any_jobs_message_goes_out_as_the_job_encoded_it(queue: str) -> None:
    async with await aio_pika.connect(rabbit.amqp_url(queue)) as connection:
        channel = await connection.channel()
        consumer = await channel.get_queue(CONSUMER_QUEUE)
        await consumer.bind(EXCHANGE, DIGEST_KEY)
    async with Broker(make_settings(RABBITMQ_VHOST=queue).broker) as broker:
        assert await broker.publish([digest(7)]) == []

    [msg] = await rabbit.consume(queue, 1, idle=0.2)
    assert (msg.routing_key, msg.body) == (DIGEST_KEY, b"week 44 of member 7")
    assert (msg.content_type, msg.message_id) == ("text/plain", "digest-2025-W44-7")
    assert msg.headers == {"week": 44}
    assert msg.content_encoding is None


async def test_an_unroutable_message_names_its_own_routing_key() -> None:
    with rabbit.temporary_vhost("unbound") as vhost:
        async with Broker(make_settings(RABBITMQ_VHOST=vhost).broker) as broker:
            with pytest.raises(UnroutableError, match=f"routing key '{DIGEST_KEY}' on exchange"):
                await broker.publish([digest(7), digest(8)])


async def test_concurrent_callers_all_confirmed_and_delivered(queue: str) -> None:
    batches = [requests(500, start=i * 500) for i in range(6)]
    confirmed = counted("confirmed")
    async with Broker(make_settings(RABBITMQ_VHOST=queue, PUBLISH_WINDOW=100).broker) as broker:
        await asyncio.gather(*(broker.publish(messages(batch)) for batch in batches))
    assert counted("confirmed") - confirmed == 3000

    got = await rabbit.consume(queue, 3000, idle=0.3)
    assert len(got) == 3000
    assert {m.message_id for m in got} == {r.trace_id for batch in batches for r in batch}


async def test_unroutable_message_raises() -> None:
    with rabbit.temporary_vhost("unbound") as vhost:
        async with Broker(make_settings(RABBITMQ_VHOST=vhost).broker) as broker:
            with pytest.raises(UnroutableError, match=ROUTING_KEY):
                await broker.publish(messages(requests(50)))


async def test_connection_closed_mid_publish_loses_nothing(queue: str) -> None:
    reqs = requests(15_000)
    failed = counted("failed")
    async with Broker(make_settings(RABBITMQ_VHOST=queue).broker, reconnect_interval=0.2) as broker:
        publishing = asyncio.create_task(broker.publish(messages(reqs)))
        await asyncio.sleep(0.3)  # under way; the assert below says if the close missed it
        assert await asyncio.to_thread(rabbit.close_connections, queue, "test: mid-publish") == 1
        unconfirmed = await publishing
        # the close cut the publish short: these lost their answer with the channel
        assert unconfirmed, "every message confirmed before the close: the test proved nothing"
        # what the step runner's retry does: again, after a pause while the connection is
        # still lost (the reconnect may come after this publish, on a loaded machine)
        async with waiting(30, "the unconfirmed messages published again"):
            while unconfirmed:
                try:
                    unconfirmed = await broker.publish(unconfirmed)
                except BrokerUnavailable:
                    await asyncio.sleep(0.05)
        await broker.check()
    assert counted("failed") > failed, "no publish was interrupted"

    got = await rabbit.consume(queue, len(reqs), within=60)
    assert {m.message_id for m in got} == {r.trace_id for r in reqs}


async def test_nacked_messages_are_handed_back_to_publish_again() -> None:
    """A full queue that rejects publishes makes the broker nack the overflow: the
    broker's flow control, an availability fault whose nacked messages are the ones to
    publish again once the queue drains (issue 26; before: a data fault, skipped)."""
    with rabbit.temporary_vhost("nack") as vhost:
        async with await aio_pika.connect(rabbit.amqp_url(vhost)) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                "full", arguments={"x-max-length": 10, "x-overflow": "reject-publish"}
            )
            await queue.bind(exchange, ROUTING_KEY)
        confirmed, nacked = counted("confirmed"), counted("nacked")
        sent = requests(25)
        async with Broker(make_settings(RABBITMQ_VHOST=vhost).broker) as broker:
            with pytest.raises(
                MessagesNacked, match="15 of 25 messages nacked by the broker"
            ) as raised:
                await broker.publish(messages(sent))
        assert is_availability_fault(raised.value)
        assert counted("confirmed") - confirmed == 10  # all the queue holds
        assert counted("nacked") - nacked == 15
        held = {m.properties.message_id for m in raised.value.unsent}
        assert len(held) == 15 and held < {r.trace_id for r in sent}


async def test_check(queue: str) -> None:
    async with Broker(make_settings(RABBITMQ_VHOST=queue).broker) as broker:
        await broker.check()


async def test_check_fails_without_the_exchange() -> None:
    with rabbit.temporary_vhost("check") as vhost:
        async with Broker(make_settings(RABBITMQ_VHOST=vhost).broker, check_timeout=2) as broker:
            async with await aio_pika.connect(rabbit.amqp_url(vhost)) as connection:
                channel = await connection.channel()
                await channel.exchange_delete(EXCHANGE)
            with pytest.raises(BrokerUnavailable):
                await broker.check()


async def test_unreachable_broker_at_start_is_reported_not_fatal() -> None:
    """The daemon starts while RabbitMQ is down: health says so, publishing fails as
    transient (the chunk is retried, then skipped), nothing raises on entry."""
    settings = make_settings(RABBITMQ_PORT=1)  # nothing listens on port 1
    async with Broker(settings.broker, reconnect_timeout=1.0, check_timeout=0.5) as broker:
        with pytest.raises(BrokerUnavailable, match="cannot connect to the broker"):
            await broker.check()
        with pytest.raises(BrokerUnavailable, match="cannot connect to the broker"):
            await broker.publish([])


async def test_a_stalled_broker_loses_publishes_named_and_closes_within_seconds(
    queue: str, broker_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The test's proxy holds every byte to and from RabbitMQ, connections open."""
    settings = through(
        make_settings(RABBITMQ_VHOST=queue, BROKER_STALL_SECONDS=1), broker=broker_proxy
    )
    first_requests, held_requests = requests(3), requests(5, start=3)
    first, held = messages(first_requests), messages(held_requests)
    failed = counted("failed")
    # before: a close during a stall waited 100 s and more
    async with (
        waiting(30, "publishes and the close, around a stall"),
        Broker(settings.broker) as broker,
    ):
        assert await broker.publish(first) == []
        broker_proxy.stall()
        assert await broker.publish(held) == held  # unconfirmed: lost, to publish again
        assert counted("failed") - failed == 5
        broker_proxy.resume()
        assert await broker.publish(held) == []
        broker_proxy.stall()
    assert [r.getMessage() for r in caplog.records if r.name == "app.edges.broker"] == [
        "broker stalled: no confirmation within 1 s (BROKER_STALL_SECONDS) from"
        f" 127.0.0.1:{broker_proxy.port} for 5 of 5 messages; counted as lost, to be published"
        " again"
    ]
    broker_proxy.resume()
    # The held publishes reached the broker once the bytes flowed: duplicates, no loss.
    got = await rabbit.consume(queue, 13, idle=0.3)
    resent = [*first_requests, *held_requests, *held_requests]
    assert sorted(m.body for m in got) == sorted(encode_body(r) for r in resent)
