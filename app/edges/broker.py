"""The confirm-mode publisher of any job's messages to the platform's `coupon.exchange`.

A job encodes what it publishes as `OutgoingMessage`s (routing key, body bytes and AMQP
properties, the message id among them); this edge knows no job's contract.

A message counts as sent only once the broker has confirmed it (Basic.Ack), so a
lost connection can never lose one silently. `publish` tries each message once and
hands back the ones whose answer was lost with the channel, or did not come within
`BROKER_STALL_SECONDS` (one WARNING names the stalled broker): the step runner, the one
owner of retries, publishes them again. A message the broker returns (no queue bound)
or nacks is a data fault of the chunk: it is not published again. A duplicate is
harmless because the consumer drops a message id it has already seen (the notification
service drops a trace id, the fan-out's message id); a loss is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any, NamedTuple, cast

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, AbstractRobustExchange
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from aiormq import Channel, spec

from app.config import BrokerSettings
from app.contracts import EXCHANGE
from app.errors import AvailabilityError, DataError
from app.metrics import MESSAGES

log = logging.getLogger(__name__)

# What a publish raises when its channel or connection went away before the broker
# answered: the message may or may not have arrived, so it is published again.
_LOST = (*CONNECTION_EXCEPTIONS, TimeoutError)

# Closing the connection: how long to wait for the broker's Close-Ok at most (aiormq
# waits 2 s for it, then closes the socket), so that a stalled broker delays no shutdown.
_CLOSE_SECONDS = 5.0


def _outcome(task: asyncio.Task[Any]) -> str:
    """What became of one publish: confirmed, returned, nacked, failed, or error (a bug)."""
    if task.cancelled():
        return "failed"
    exc = task.exception()
    if exc is None:
        return "confirmed"
    if isinstance(exc, PublishError):  # before DeliveryError and _LOST: it is both
        return "returned"
    if isinstance(exc, DeliveryError):
        return "nacked"
    return "failed" if isinstance(exc, _LOST) else "error"


class OutgoingMessage(NamedTuple):
    """One message for the exchange, as the job's contract encodes it: exactly the bytes
    and properties a consumer receives. `properties.message_id` names it in the logs (a
    consumer may deduplicate by it). A tuple: one is made per message sent."""

    routing_key: str
    body: bytes
    properties: spec.Basic.Properties


class BrokerUnavailable(AvailabilityError):
    """The broker is not reachable, or did not confirm every message."""


class UnroutableError(DataError):
    """The broker returned a message: no queue is bound to the routing key."""


class MessagesNacked(DataError):
    """The broker refused messages for itself (a full queue that rejects, an internal error)."""


class Broker:
    """`async with Broker(settings) as broker: lost = await broker.publish(messages)`.

    One robust connection and one confirm-mode channel, shared by every concurrent
    caller of `publish`, with at most `PUBLISH_WINDOW` unconfirmed messages in flight.

    MESSAGES counts each publish attempt as `published`, then as exactly one of
    `confirmed`, `nacked`, `returned` or `failed` (no answer: channel or connection
    lost, or no confirmation within `confirm_timeout`).

    `confirm_timeout` and `reconnect_timeout` are BROKER_STALL_SECONDS unless given.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        reconnect_interval: float = 1.0,
        reconnect_timeout: float | None = None,
        confirm_timeout: float | None = None,
        check_timeout: float = 5.0,
    ) -> None:
        self._url = settings.url
        self._address = settings.address
        self._window = asyncio.Semaphore(settings.publish_window)
        self._reconnect_interval = reconnect_interval
        stall = settings.stall_seconds
        self._reconnect_timeout = stall if reconnect_timeout is None else reconnect_timeout
        self._confirm_timeout = stall if confirm_timeout is None else confirm_timeout
        self._check_timeout = check_timeout
        self._opening = asyncio.Lock()
        self._connection: AbstractRobustConnection
        self._channel: AbstractRobustChannel
        self._check_channel: AbstractRobustChannel
        self._exchange: AbstractRobustExchange | None = None

    async def __aenter__(self) -> Broker:
        """Connect now if the broker answers; otherwise on first use, so that a daemon
        starts (and reports the broker DOWN) while RabbitMQ is still coming up."""
        try:
            await self._open()
        except BrokerUnavailable as exc:
            log.warning("broker not reachable yet, will connect on first use: %s", exc)
        return self

    async def _open(self) -> None:
        """Connect, if not yet: the exchange declared on a confirm-mode channel."""
        async with self._opening:
            if self._exchange is None:
                try:
                    async with asyncio.timeout(self._reconnect_timeout):
                        await self._connect()
                except _LOST as exc:
                    raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}") from exc

    async def _connect(self) -> None:
        connection = await aio_pika.connect_robust(
            self._url,
            reconnect_interval=self._reconnect_interval,
            timeout=self._reconnect_timeout,
        )
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            check_channel = await connection.channel(publisher_confirms=False)
            # Declared here only if missing: the consumer's queue is the notification
            # service's to declare and bind, never ours.
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
        except BaseException:
            await self._close(connection)
            raise
        self._connection, self._channel, self._check_channel = connection, channel, check_channel
        self._exchange = exchange

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._exchange is not None:
            await self._close(self._connection)

    async def _close(self, connection: AbstractRobustConnection) -> None:
        """Close the connection, its channels with it, without waiting on a stalled broker.

        Closing each channel first would wait for each Close-Ok (up to a minute each
        while the broker stalls); the connection's Connection.Close ends them all.
        """
        try:
            async with asyncio.timeout(_CLOSE_SECONDS):
                await connection.close()
        except TimeoutError:
            log.warning(
                "broker stalled: no answer within %g s to closing the connection to %s;"
                " left to close on its own",
                _CLOSE_SECONDS,
                self._address,
            )

    async def publish(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        """Publish each message once, pipelined through the window, once the channel is
        open; return the ones whose answer was lost with the channel. A returned message
        raises UnroutableError, a nacked one MessagesNacked."""
        await self._open()
        await self._until_open()
        return await self._publish_once(messages)

    async def _publish_once(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        """Publish each message once, pipelined through the window; return the lost.

        What aio-pika's Exchange.publish does, on its channel's aiormq channel, looked up
        once (a publish after a loss of it fails at once and counts as lost): per message,
        only its frames and its task, whose deadline is aiormq's own. `wait=False`: a
        publish holds the channel's lock only to queue its frames, not until the socket
        has taken them, so that the publishes of one turn of the loop go out together
        (the window bounds what is written ahead of the confirmations).
        """
        window = self._window
        # aiormq's Channel, whose basic_publish (unlike its abstract one) takes `wait`.
        channel = cast(Channel, await self._channel.get_underlay_channel())
        sent: dict[asyncio.Task[Any], OutgoingMessage] = {}
        stop = False

        def settle(task: asyncio.Task[Any]) -> None:
            nonlocal stop
            window.release()
            # After a return or a loss the next messages would fare the same: stop sending.
            if _outcome(task) not in ("confirmed", "nacked"):
                stop = True

        try:
            for message in messages:
                await window.acquire()
                if stop:
                    window.release()
                    break
                # Which, never the body: it may hold personal data (a member's FCM token).
                log.debug("publishing: message id %s", message.properties.message_id)
                task = asyncio.create_task(
                    channel.basic_publish(
                        message.body,
                        exchange=EXCHANGE,
                        routing_key=message.routing_key,
                        properties=message.properties,
                        mandatory=True,
                        timeout=self._confirm_timeout,
                        wait=False,
                    )
                )
                task.add_done_callback(settle)
                sent[task] = message
            if sent:
                await asyncio.wait(sent)
        except BaseException:
            for task in sent:
                task.cancel()
            if sent:
                await asyncio.wait(sent)
            raise

        tally: Counter[str] = Counter(published=len(sent))
        lost = list(messages[len(sent) :])
        returned: set[str] = set()  # their routing keys
        bug: BaseException | None = None
        unanswered = 0
        for task, message in sent.items():
            outcome = _outcome(task)
            if not task.cancelled() and isinstance(task.exception(), TimeoutError):
                unanswered += 1
            if outcome == "error":
                bug = bug or task.exception()
                outcome = "failed"
            tally[outcome] += 1
            if outcome == "failed":
                lost.append(message)
            elif outcome == "returned":
                returned.add(message.routing_key)
        for outcome, count in tally.items():
            MESSAGES.labels(outcome).inc(count)
        if unanswered:
            log.warning(
                "broker stalled: no confirmation within %g s (BROKER_STALL_SECONDS) from %s"
                " for %d of %d messages; counted as lost, to be published again",
                self._confirm_timeout,
                self._address,
                unanswered,
                len(sent),
            )
        if bug is not None:
            raise bug
        if returned:
            raise UnroutableError(
                f"{tally['returned']} messages returned as unroutable: no queue is bound to "
                f"routing key {', '.join(map(repr, sorted(returned)))} on exchange {EXCHANGE!r}"
            )
        if tally["nacked"]:
            raise MessagesNacked(
                f"{tally['nacked']} of {len(messages)} messages nacked by the broker"
            )
        return lost

    async def _until_open(self) -> None:
        """Wait, bounded, for the robust connection to bring the channel back.

        `ready()` alone can return while a loss is still being noticed; the channel
        state is what counts.
        """
        try:
            async with asyncio.timeout(self._reconnect_timeout):
                await self._channel.ready()
                while self._channel.is_closed:
                    await asyncio.sleep(0.05)
                    await self._channel.ready()
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"no broker channel within {self._reconnect_timeout:g}s"
            ) from exc

    async def check(self) -> None:
        """Raise BrokerUnavailable unless the publishing channel is open and the broker
        answers within `check_timeout`.

        The answer is to a passive declare of the exchange, on a channel of its own (kept
        open: health probes come often) so that a failed check never closes the
        publishing channel.
        """
        async with asyncio.timeout(self._check_timeout):
            await self._open()
        if not self._connection.connected.is_set() or self._channel.is_closed:
            raise BrokerUnavailable("the broker connection or the publishing channel is closed")
        channel = self._check_channel
        try:
            async with asyncio.timeout(self._check_timeout):
                if channel.is_closed:  # a failed check's declare closed it
                    await channel.reopen()
                await channel.declare_exchange(EXCHANGE, passive=True, robust=False)
        except _LOST as exc:
            raise BrokerUnavailable(f"broker check failed: {exc!r}") from exc
