"""Publish throughput of `Broker.publish` against a bare pipelined aiormq publisher.

Both publish the same push requests in confirm mode, mandatory, to the contract
exchange and routing key, bound to the consumer queue as the notification service
declares it, in a throwaway vhost made with `rabbitmqctl` and deleted at the end:

    .venv/bin/python scripts/bench_publish.py [--messages 100000] [--repeat 3]

(a) aiormq: one channel, bodies encoded beforehand, at most `--window` unconfirmed.
(b) Broker: `--callers` concurrent callers of `publish`, `--batch` requests a call,
    the same window (PUBLISH_WINDOW); encoding is part of what it measures.

`--floor --vhost V` runs (a) alone, once, against the existing vhost V (its consumer
queue already declared and bound), with bodies of `--body-bytes`, and prints one JSON
line: what `scripts/bench` uses as the fan-out floor. `bare_publish` is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
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
from app.jobs.fcm_send import to_message


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


async def bare_publish(url: str, messages: Sequence[tuple[bytes, str]], window: int) -> float:
    """Publish (body, message_id) pairs as push requests: confirm mode, mandatory, at
    most `window` unconfirmed, one task a message; the seconds from connecting to the
    last confirmation. The properties are CONTRACTS section 3's.

    Only the tasks in flight are kept: holding every finished one costs memory and, as
    the cyclic garbage collector walks them again and again, time that grows with the
    message count (354,000 messages: 755 MB and half the rate).
    """
    headers = {"__TypeId__": TYPE_ID}
    started = time.perf_counter()
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        slots = asyncio.Semaphore(window)
        in_flight: set[asyncio.Task[object]] = set()
        failures: list[str] = []

        def settle(task: asyncio.Task[object]) -> None:
            slots.release()
            in_flight.discard(task)
            if task.cancelled():
                failures.append("cancelled")
            elif task.exception() is not None:
                failures.append(repr(task.exception()))
            elif not isinstance(task.result(), Basic.Ack):
                failures.append(repr(task.result()))

        for body, message_id in messages:
            await slots.acquire()
            if failures:
                break
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
            task.add_done_callback(settle)
            in_flight.add(task)
        if in_flight:
            await asyncio.wait(in_flight)
        if failures:
            raise RuntimeError(f"{len(failures)} not confirmed, the first: {failures[0]}")
        return time.perf_counter() - started
    finally:
        await connection.close()


async def bare_aiormq(settings: Settings, requests: Sequence[PushRequest]) -> None:
    encoded = [(encode_body(r), r.trace_id) for r in requests]
    await bare_publish(settings.broker.url, encoded, settings.PUBLISH_WINDOW)


def sample_requests(count: int, body_bytes: int | None = None) -> list[PushRequest]:
    """`count` push requests; with `body_bytes`, tokens padded so that every body is
    exactly that long (a real FCM token is about 160 characters: the default)."""
    day = date(2025, 10, 25)
    first = 100_000  # member ids of one width: one padding fits every body

    def request(member: int, token: str) -> PushRequest:
        return PushRequest.for_token(day, member, token, "노량진동", 10, 3)

    width = 150
    if body_bytes is not None:
        width = body_bytes - len(encode_body(request(first, "token-")))
        if width < 0:
            raise ValueError(f"bodies cannot be as short as {body_bytes} bytes")
    pad = "x" * width
    return [request(m, f"token-{pad}") for m in range(first, first + count)]


async def broker_publish(
    settings: Settings, requests: Sequence[PushRequest], callers: int, batch: int
) -> None:
    async def caller(share: Sequence[PushRequest]) -> None:
        for i in range(0, len(share), batch):
            assert not await broker.publish([to_message(r) for r in share[i : i + batch]])

    async with Broker(settings.broker) as broker:
        await asyncio.gather(*(caller(requests[i::callers]) for i in range(callers)))


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    requests = sample_requests(args.messages)
    runs: dict[str, Callable[[], Awaitable[None]]] = {
        "(a) bare aiormq": lambda: bare_aiormq(settings, requests),
        "(b) Broker.publish": lambda: broker_publish(settings, requests, args.callers, args.batch),
    }
    best = dict.fromkeys(runs, 0.0)
    async with await aio_pika.connect(settings.broker.url) as connection:
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


async def floor(settings: Settings, args: argparse.Namespace) -> dict[str, float]:
    """(a) once, against an existing vhost: the fan-out floor of `scripts/bench`."""
    requests = sample_requests(args.messages, args.body_bytes)
    encoded = [(encode_body(r), r.trace_id) for r in requests]
    del requests  # only the encoded bodies are needed from here on
    seconds = await bare_publish(settings.broker.url, encoded, args.window)
    return {
        "messages": len(encoded),
        "body_bytes": len(encoded[0][0]),
        "window": args.window,
        "seconds": seconds,
        "rate": len(encoded) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--floor", action="store_true", help="(a) once into --vhost; JSON out")
    parser.add_argument("--vhost", help="with --floor: an existing vhost, queue bound")
    parser.add_argument("--body-bytes", type=int, help="with --floor: the body size")
    args = parser.parse_args()
    if args.floor and not args.vhost:
        parser.error("--floor needs --vhost")

    # This machine's broker settings; a benchmark needs no JWT key, so any will do.
    environ = {"JWT_SECRET_KEY": base64.b64encode(bytes(32)).decode(), **os.environ}
    settings = load_settings(environ)
    if args.floor:
        settings = dataclasses.replace(settings, RABBITMQ_VHOST=args.vhost)
        print(json.dumps(asyncio.run(floor(settings, args))))
        return
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(settings, RABBITMQ_VHOST=vhost, PUBLISH_WINDOW=args.window)
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, settings.RABBITMQ_USERNAME, ".*", ".*", ".*")
        asyncio.run(bench(settings, args))
    finally:
        rabbitmqctl("delete_vhost", vhost)


if __name__ == "__main__":
    main()
