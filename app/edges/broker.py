"""The confirm-mode publisher of any job's messages to the platform's `coupon.exchange`.

A job encodes what it publishes as `OutgoingMessage`s (routing key, body bytes and AMQP
properties, the message id among them); this edge knows no job's contract.

A message counts as sent only once the broker has confirmed it (Basic.Ack), so a
lost connection can never lose one silently. `publish` tries each message once and
hands back the ones whose answer was lost with the channel, or did not come within
`BROKER_STALL_SECONDS` (a WARNING names the stalled broker): the step runner, the one
owner of retries, publishes them again. A message the broker returns (no queue bound to
its routing key) or nacks (a full queue that rejects, an internal error) is refused for
reasons no item has: an availability fault too, whose `unsent` messages are published
again, until the retry budget fails the step with the exchange and the routing key named.
A duplicate is harmless because the consumer drops a message id it has already seen
(the notification service drops a trace id, the fan-out's message id); a loss is not.

An outage of the broker is logged once as it begins and once as it ends
(`app.outages`): aio-pika's and aiormq's own lines about each reconnect attempt (an
ERROR every second while the broker is away) are dropped.
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
from app.errors import AvailabilityError
from app.metrics import MESSAGES
from app.outages import OUTAGES

log = logging.getLogger(__name__)

# What a publish raises when its channel or connection went away before the broker
# answered: the message may or may not have arrived, so it is published again.
_LOST = (*CONNECTION_EXCEPTIONS, TimeoutError)

# Closing the connection: how long to wait for the broker's Close-Ok at most (aiormq
# waits 2 s for it, then closes the socket), so that a stalled broker delays no shutdown.
_CLOSE_SECONDS = 5.0

# The client libraries' lines about a lost connection and each attempt to reconnect
# (aiormq's ERROR every second while the broker is away): the broker's outage is logged
# once instead (`Broker._lost`, `Broker._back`). By template, as each library writes it.
_RECONNECT_NOISE = frozenset(
    {
        # aiormq.connection
        "error when creating transport: %r",
        "Cancelling cause reader exited abnormally",
        'Unexpected connection close from remote "%s", '
        "Connection.Close(reply_code=%r, reply_text=%r)",
        "Server connection %r was stuck. No frames were received in %d seconds.",
        # aio_pika.robust_connection
        "Connection to %s closed. Reconnecting after %r seconds.",
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
        'Connection attempt to "%s" cancelled. Reconnecting after %r seconds.',
        "Reconnect attempt failed %s due to %s: %s. Retrying after %r seconds.",
    }
)
_NOISY_LOGGERS = ("aiormq.connection", "aio_pika.robust_connection", "aio_pika.tools")
# aio_pika.tools: each channel's close handler failing as its connection goes (the
# robust connection restores the channel anyway).
_CALLBACK_FAILED = "Callback %r error: %s: %s"
_CHANNEL_CLOSED = "RobustChannel._on_close"


# asyncio's own line for each write past the fifth to a transport already lost: aiormq
# writes its frames until it notices the loss, which is the broker's outage, logged once.
_DEAD_SOCKET = "socket.send() raised exception."


def _not_dead_socket(record: logging.LogRecord) -> bool:
    return record.msg != _DEAD_SOCKET


def _not_reconnect_noise(record: logging.LogRecord) -> bool:
    if record.msg in _RECONNECT_NOISE:
        return False
    if record.msg == _CALLBACK_FAILED and isinstance(record.args, tuple) and record.args:
        callback = getattr(record.args[0], "callback", None)
        return getattr(callback, "__qualname__", "") != _CHANNEL_CLOSED
    return True


for _name in _NOISY_LOGGERS:
    logging.getLogger(_name).addFilter(_not_reconnect_noise)
logging.getLogger("asyncio").addFilter(_not_dead_socket)


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


class PublishRefused(AvailabilityError):
    """The broker answered messages without taking them; `unsent` are the messages to
    publish again (those, and the ones whose answer was lost or never sent)."""

    def __init__(self, message: str, unsent: Sequence[OutgoingMessage], *, dependency: str) -> None:
        super().__init__(message, dependency=dependency)
        self.unsent = list(unsent)


class UnroutableError(PublishRefused):
    """The broker returned messages: no queue is bound to their routing key."""


class MessagesNacked(PublishRefused):
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
        self._dependency = f"broker {settings.address}"  # as its outages are named
        self._closing = False
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
            message = f"broker not reachable yet, will connect on first use: {exc}"
            OUTAGES.fault(self._dependency, message, log)
        return self

    async def _open(self) -> None:
        """Connect, if not yet: the exchange declared on a confirm-mode channel."""
        async with self._opening:
            if self._exchange is None:
                try:
                    async with asyncio.timeout(self._reconnect_timeout):
                        await self._connect()
                except _LOST as exc:
                    raise self._unavailable(f"cannot connect to the broker: {exc!r}") from exc

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
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._back)
        OUTAGES.ended(self._dependency)

    @property
    def dependency(self) -> str:
        """The broker as its outages are named."""
        return self._dependency

    def _unavailable(self, reason: str) -> BrokerUnavailable:
        return BrokerUnavailable(reason, dependency=self._dependency)

    def _lost(self, connection: object, exc: BaseException | None) -> None:
        """The robust connection lost its transport: an outage begins, until `_back`."""
        if not self._closing:
            reason = f"{exc!r}" if exc is not None else "closed"
            OUTAGES.fault(self._dependency, f"{self._dependency}: connection lost: {reason}", log)

    def _back(self, connection: object) -> None:
        OUTAGES.ended(self._dependency)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
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
        raises UnroutableError, a nacked one MessagesNacked: their `unsent` are the
        messages to publish again."""
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
        try:
            # aiormq's Channel, whose basic_publish (unlike its abstract one) takes `wait`.
            channel = cast(Channel, await self._channel.get_underlay_channel())
        except _LOST as exc:  # lost since `_until_open`
            raise self._unavailable(f"no broker channel: {exc!r}") from exc
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
        refused: list[OutgoingMessage] = []  # returned or nacked
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
            if outcome == "confirmed":
                continue
            if outcome == "failed":
                lost.append(message)
            else:  # returned or nacked
                refused.append(message)
                if outcome == "returned":
                    returned.add(message.routing_key)
        for outcome, count in tally.items():
            MESSAGES.labels(outcome).inc(count)
        if unanswered:
            stalled = (
                f"broker stalled: no confirmation within {self._confirm_timeout:g} s"
                f" (BROKER_STALL_SECONDS) from {self._address} for {unanswered} of {len(sent)}"
                " messages; counted as lost, to be published again"
            )
            OUTAGES.fault(self._dependency, stalled, log)
        if bug is not None:
            raise bug
        if returned:
            raise UnroutableError(
                f"{tally['returned']} of {len(messages)} messages returned as unroutable: no"
                f" queue is bound to routing key {', '.join(map(repr, sorted(returned)))} on"
                f" exchange {EXCHANGE!r}",
                lost + refused,
                dependency=self._dependency,
            )
        if refused:
            raise MessagesNacked(
                f"{len(refused)} of {len(messages)} messages nacked by the broker",
                lost + refused,
                dependency=self._dependency,
            )
        if not lost:
            OUTAGES.ended(self._dependency)
        return lost

    async def _until_open(self) -> None:
        """Wait, bounded, for the robust connection to bring the channel back.

        Not while the connection itself is lost (it reconnects in the background): that
        fails at once, so that the step's retry budget, a deadline, runs from there and
        bounds the outage's wait, rather than each try waiting BROKER_STALL_SECONDS.
        `ready()` alone can return while a loss is still being noticed; the channel
        state is what counts.
        """
        if not self._connection.connected.is_set():
            raise self._unavailable("the broker connection is lost, reconnecting")
        try:
            async with asyncio.timeout(self._reconnect_timeout):
                await self._channel.ready()
                while self._channel.is_closed:
                    await asyncio.sleep(0.05)
                    await self._channel.ready()
        except TimeoutError as exc:
            raise self._unavailable(
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
            raise self._unavailable("the broker connection or the publishing channel is closed")
        channel = self._check_channel
        try:
            async with asyncio.timeout(self._check_timeout):
                if channel.is_closed:  # a failed check's declare closed it
                    await channel.reopen()
                await channel.declare_exchange(EXCHANGE, passive=True, robust=False)
        except _LOST as exc:
            raise self._unavailable(f"broker check failed: {exc!r}") from exc
