"""The notification service's queue (CONTRACTS section 3), declared as that service
declares it, for a broker where it does not run: local work (`python -m app migrate
--dev-queue`), the demo, the tests. In production the notification service declares it;
this service never does. Without a queue bound to the routing key, every push of a
fan-out comes back unroutable."""

from __future__ import annotations

import logging

import aio_pika
from aiormq.exceptions import AMQPError
from pamqp.common import FieldTable

from app.contracts import CONSUMER_QUEUE, CONSUMER_QUEUE_ARGUMENTS, EXCHANGE, ROUTING_KEY
from app.errors import Refusal

_ARGUMENTS: FieldTable = {**CONSUMER_QUEUE_ARGUMENTS}


class CannotDeclare(Refusal):
    """The broker could not be reached, or refused the declaration (one line)."""


async def declare_consumer_queue(url: str, *, purge: bool = False) -> int:
    """The exchange, the consumer queue and its binding to the routing key, at the broker
    of `url` (its vhost); emptied first with `purge`. The messages the queue holds.
    A failure is CannotDeclare alone: aiormq's own ERROR line about it is held back."""
    quiet = logging.getLogger("aiormq.connection")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        async with await aio_pika.connect(url) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(CONSUMER_QUEUE, durable=True, arguments=_ARGUMENTS)
            await queue.bind(exchange, ROUTING_KEY)
            if purge:
                await queue.purge()
                queue = await channel.declare_queue(
                    CONSUMER_QUEUE, durable=True, arguments=_ARGUMENTS
                )
            return int(queue.declaration_result.message_count or 0)
    except (AMQPError, OSError) as exc:
        raise CannotDeclare(f"{type(exc).__name__}: {exc}") from None
    finally:
        quiet.setLevel(level)
