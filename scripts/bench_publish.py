"""Publish throughput of `Broker.publish` against a bare pipelined aiormq publisher.

Both publish the same push requests in confirm mode, mandatory, to the contract
exchange and routing key, bound to the consumer queue as the notification service
declares it, in a throwaway vhost made with `rabbitmqctl` and deleted at the end:

    .venv/bin/python scripts/bench_publish.py [--messages 100000] [--repeat 3]

(a) aiormq: one channel, bodies encoded beforehand, at most `--window` unconfirmed.
(b) Broker: `--callers` concurrent callers of `publish`, `--batch` requests a call,
    the same window (PUBLISH_WINDOW); encoding is part of what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import date

import aio_pika
import aiormq
from pamqp.commands import Basic

from app.config import Settings, load_settings
from app.contracts import (
    CONSUMER_QUEUE,
    CONSUMER_QUEUE_ARGUMENTS,
    EXCHANGE,
    ROUTING_KEY,
    TYPE_ID,
    PushRequest,
    encode_body,
)
from app.edges.broker import Broker


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


async def bare_aiormq(settings: Settings, requests: Sequence[PushRequest]) -> None:
    encoded = [(encode_body(r), r.trace_id) for r in requests]
    headers = {"__TypeId__": TYPE_ID}
    connection = await aiormq.connect(settings.rabbitmq_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        window = asyncio.Semaphore(settings.PUBLISH_WINDOW)
        tasks = []
        for body, message_id in encoded:
            await window.acquire()
            properties = Basic.Properties(
                content_type="application/json",
                content_encoding="UTF-8",
                delivery_mode=2,
                headers=headers,
                message_id=message_id,
            )
            task = asyncio.create_task(
                channel.basic_publish(
                    body,
                    exchange=EXCHANGE,
                    routing_key=ROUTING_KEY,
                    properties=properties,
                    mandatory=True,
                )
            )
            task.add_done_callback(lambda _: window.release())
            tasks.append(task)
        for result in await asyncio.gather(*tasks):
            if not isinstance(result, Basic.Ack):
                raise RuntimeError(f"not confirmed: {result!r}")
    finally:
        await connection.close()


async def broker_publish(
    settings: Settings, requests: Sequence[PushRequest], callers: int, batch: int
) -> None:
    async def caller(share: Sequence[PushRequest]) -> None:
        for i in range(0, len(share), batch):
            await broker.publish(share[i : i + batch])

    async with Broker(settings) as broker:
        await asyncio.gather(*(caller(requests[i::callers]) for i in range(callers)))


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    day = date(2025, 10, 25)
    # A real FCM token is about 160 characters.
    requests = [
        PushRequest.for_token(day, m, f"token-{m}-{'x' * 140}", "노량진동", 10, 3)
        for m in range(args.messages)
    ]
    runs: dict[str, Callable[[], Awaitable[None]]] = {
        "(a) bare aiormq": lambda: bare_aiormq(settings, requests),
        "(b) Broker.publish": lambda: broker_publish(settings, requests, args.callers, args.batch),
    }
    best = dict.fromkeys(runs, 0.0)
    async with await aio_pika.connect(settings.rabbitmq_url) as connection:
        # The consumer queue, as the notification service declares it.
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            CONSUMER_QUEUE, durable=True, arguments=CONSUMER_QUEUE_ARGUMENTS
        )
        await queue.bind(exchange, ROUTING_KEY)
        # Alternated, so that a busy moment of the machine does not favour either.
        for _ in range(args.repeat):
            for label, run in runs.items():
                await queue.purge()
                started = time.perf_counter()
                await run()
                rate = len(requests) / (time.perf_counter() - started)
                print(f"  {label:<20} {rate:>9,.0f} msg/s", flush=True)
                best[label] = max(best[label], rate)

    body = len(encode_body(requests[0]))
    print(f"{len(requests):,} messages of {body} bytes, window {settings.PUBLISH_WINDOW}, ", end="")
    print(f"Broker: {args.callers} callers x {args.batch}; best of {args.repeat}:")
    for label, rate in best.items():
        print(f"{label:<22} {rate:>9,.0f} msg/s")
    bare, ours = best.values()
    print(f"{'ratio b/a':<22} {ours / bare:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    args = parser.parse_args()

    # This machine's broker settings; a benchmark needs no JWT key, so any will do.
    environ = {"JWT_SECRET_KEY": base64.b64encode(bytes(32)).decode(), **os.environ}
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(
        load_settings(environ), RABBITMQ_VHOST=vhost, PUBLISH_WINDOW=args.window
    )
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, settings.RABBITMQ_USERNAME, ".*", ".*", ".*")
        asyncio.run(bench(settings, args))
    finally:
        rabbitmqctl("delete_vhost", vhost)


if __name__ == "__main__":
    main()
