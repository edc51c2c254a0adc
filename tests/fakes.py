"""Fakes for the engine's unit tests, implementing the ports (`app.ports`): the peers, the
publisher, the replicas' registry, and a toy job whose step counts integers, all on the
in-memory job repository. No database, no broker: each test takes milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.config import Settings
from app.edges.broker import OutgoingMessage
from app.errors import DataError
from app.pipeline.chunk import Chunk, KeyRange, Processed, StepDefinition
from app.replicas import Replica
from app.repository.memory import ManualClock, MemoryJobRepository
from app.runtime.job import JobSpec, Parameter, Policy
from app.runtime.launcher import Launcher
from app.runtime.parameters import LocalDate
from app.runtime.resources import Resources
from tests.settings import make_settings


@dataclass
class FakePeers:
    """The peers' lookups from dictionaries (`app.ports.Peers`)."""

    dongs: dict[int, str] = field(default_factory=dict)
    stores: dict[str, list[int]] = field(default_factory=dict)
    tokens: dict[int, list[str]] = field(default_factory=dict)

    def preload(self) -> None:
        """Nothing to import."""

    async def store_dongs(self, store_ids: Collection[int]) -> dict[int, str]:
        return {i: self.dongs[i] for i in store_ids if i in self.dongs}

    async def stores_by_dong(self, dongs: Collection[str]) -> dict[str, list[int]]:
        return {d: self.stores[d] for d in dongs if d in self.stores}

    async def fcm_tokens(self, member_ids: Collection[int]) -> dict[int, list[str]]:
        return {i: self.tokens[i] for i in member_ids if i in self.tokens}


@dataclass
class FakePublisher:
    """Confirms the messages it publishes (`app.ports.Publisher`), keeping them, but the
    confirmations of the last `lose` of its first publish."""

    lose: int = 0
    published: list[OutgoingMessage] = field(default_factory=list)
    dependency: str = "broker (fake)"

    async def publish(self, messages: Sequence[OutgoingMessage]) -> list[OutgoingMessage]:
        self.published += messages
        lost, self.lose = list(messages[len(messages) - self.lose :]) if self.lose else [], 0
        return lost


@dataclass
class FakeRegistry:
    """A registry of replicas where this process is alone (`app.replicas.ReplicaRegistry`)."""

    others: list[Replica] = field(default_factory=list)

    async def join(self, name: str, zone: str) -> int:
        return 1

    async def renew(self, replica_id: int, *, runs_schedules: bool) -> list[Replica] | None:
        return self.others

    async def leave(self, replica_id: int) -> None:
        return None


class ItemRejected(DataError):
    """A toy item the toy job's rules refuse: a data fault."""


@dataclass
class ListWriter:
    """Keeps what it is given to write, in write order (`app.pipeline.writers.Writer`)."""

    written: list[int] = field(default_factory=list)

    async def deliver(self, output: list[int]) -> None:
        return None

    async def write(self, conn: Any, output: list[int], keys: KeyRange) -> None:
        self.written += output

    def report(self) -> dict[str, int]:
        return {}


@dataclass
class ToyJob:
    """A step over the integers 1..`count` in chunks of `size`, each written as itself:
    the `bad` ones fail on their own (a data fault), the `filtered` ones are dropped, the
    first `flaky` tries of a chunk fail for availability, and a chunk holding a `held`
    item waits for `release` (`holding` set meanwhile)."""

    count: int = 20
    size: int = 5
    bad: set[int] = field(default_factory=set)
    filtered: set[int] = field(default_factory=set)
    flaky: int = 0
    held: set[int] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)  # a held chunk waits
    writer: ListWriter = field(default_factory=ListWriter)
    tries: int = 0

    def definition(self) -> StepDefinition[int, list[int]]:
        return StepDefinition(
            name="toyStep",
            read=self.read,
            process=self.process,
            writer=self.writer,
            item_key=lambda item: item,
            item_label="items",
        )

    async def read(self, checkpoint: Any) -> AsyncIterator[list[int]]:
        return _batch([i for i in range(1, self.count + 1) if checkpoint is None or i > checkpoint])

    async def process(self, chunk: Chunk[int]) -> Processed[list[int]]:
        self.tries += 1
        if self.tries <= self.flaky:
            raise ConnectionResetError(f"try {self.tries}: the peer went away")
        if self.held.intersection(chunk.items):
            self.holding.set()
            await self.release.wait()
        failing = [i for i in chunk.items if i in self.bad]
        if failing:
            raise ItemRejected(f"items {failing} refused")
        kept = [i for i in chunk.items if i not in self.filtered]
        return Processed(output=kept, filtered=len(chunk.items) - len(kept))

    def spec(self, name: str = "toyJob") -> JobSpec:
        return JobSpec(
            name=name,
            path="toy",
            title="Toy",
            parameters=(Parameter("runDate", LocalDate(), "the day", default="2025-10-31"),),
            build=lambda context: self.definition(),
            policy=Policy(chunk_size=self.size),
        )


async def _batch(items: list[int]) -> AsyncIterator[list[int]]:
    yield items


def resources(settings: Settings | None = None) -> Resources:
    """No pool: the toy job reads none, and the repository is in memory."""
    return Resources(
        settings=settings or make_settings(), pool=None, peers=FakePeers(), broker=None
    )


def memory_launcher(
    jobs: Sequence[JobSpec], clock: ManualClock | None = None, **settings: object
) -> Launcher:
    """A launcher of `jobs` on the in-memory job repository (`settings`: overrides)."""
    configured = make_settings(**settings)
    repository = MemoryJobRepository(
        abandon_after_seconds=configured.JOB_ABANDON_AFTER_SECONDS, clock=clock
    )
    return Launcher(resources(configured), jobs, repository=repository)
