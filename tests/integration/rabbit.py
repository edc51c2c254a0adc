"""The real RabbitMQ of this machine, isolated per test run by a throwaway vhost.

`rabbitmqctl` manages vhosts and connections; aio-pika plays the notification
service (declares its queue exactly as it does) and its consumer.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from app.contracts import CONSUMER_QUEUE
from app.devtools import consumer_queue
from tests.settings import make_settings
from tests.waits import waiting


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@contextmanager
def temporary_vhost(prefix: str = "test") -> Iterator[str]:
    """A fresh vhost that guest may use, deleted (with everything in it) on exit."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


def amqp_url(vhost: str) -> str:
    return make_settings(RABBITMQ_VHOST=vhost).broker.url


def close_connections(vhost: str, reason: str = "closed by test") -> int:
    """Close every client connection to `vhost`, as an operator would; how many were closed."""
    pids = [
        line.split("\t")[0]
        for line in rabbitmqctl("list_connections", "pid", "vhost").splitlines()
        if line.split("\t")[-1] == vhost
    ]
    for pid in pids:
        rabbitmqctl("close_connection", pid, reason)
    return len(pids)


async def declare_consumer_queue(vhost: str) -> None:
    """What the notification service declares: the exchange, its queue, the binding; purged."""
    await consumer_queue.declare_consumer_queue(amqp_url(vhost), purge=True)


async def consume(
    vhost: str, until: int, *, within: float = 30.0, idle: float = 0.0
) -> list[AbstractIncomingMessage]:
    """Messages of the consumer queue, acked: wait for `until` of them, then `idle` seconds more.

    The extra idle wait lets a test notice messages it did not expect.
    """
    got: list[AbstractIncomingMessage] = []
    enough = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        got.append(message)
        if len(got) >= until:
            enough.set()

    async with await aio_pika.connect(amqp_url(vhost)) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.get_queue(CONSUMER_QUEUE)
        tag = await queue.consume(on_message, no_ack=True)
        async with waiting(within, f"{until} messages in the consumer queue"):
            await enough.wait()
        await asyncio.sleep(idle)
        await queue.cancel(tag)
    return got
