"""The connections a job runs on, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.config import Settings
from app.edges.auth import SystemToken
from app.edges.db import DbPool, open_pool
from app.edges.peers import PeerClient

if TYPE_CHECKING:
    from app.edges.broker import Broker


@dataclass(frozen=True)
class Resources:
    settings: Settings
    pool: DbPool
    peers: PeerClient
    broker: Broker | None  # None where nothing will be published (stats job, dry runs)


@asynccontextmanager
async def open_resources(settings: Settings, *, broker: bool) -> AsyncIterator[Resources]:
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings.database))
        token = SystemToken(settings.jwt_key, settings.APPLICATION_NAME)
        peers = await stack.enter_async_context(PeerClient(settings.peers, token))
        publisher = None
        if broker:  # imported here: aio-pika is no part of a run that publishes nothing
            from app.edges.broker import Broker

            publisher = await stack.enter_async_context(Broker(settings.broker))
        yield Resources(settings=settings, pool=pool, peers=peers, broker=publisher)
