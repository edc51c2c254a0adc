"""The connections a job runs on, opened and closed together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from app.config import Settings
from app.edges.auth import SystemToken
from app.edges.broker import Broker
from app.edges.db import DbPool, open_pool
from app.edges.peers import PeerClient


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
        publisher = await stack.enter_async_context(Broker(settings.broker)) if broker else None
        yield Resources(settings=settings, pool=pool, peers=peers, broker=publisher)
