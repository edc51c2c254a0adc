"""A run leaves no reference cycle behind: the daemon's collector runs rarely
(`memory.tune_gc`), and what a run left in cycles, the chunks' rows with it, would wait
for a full collection dozens of runs later (RSS 58 -> 314 MB in 10 stats runs)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asyncmy.connection import Connection

from app.config import Settings
from app.pipeline.chunk import Chunk, Processed, StepDefinition
from app.pipeline.writers import DatabaseWriter
from app.runtime import memory
from app.runtime.job import JobContext, JobSpec
from app.runtime.launcher import Launcher
from app.runtime.resources import open_resources


class Rows(list[Any]):
    """A list that a weak reference can watch."""


async def test_what_a_run_left_in_reference_cycles_is_freed_when_it_ends(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after `tune_gc`, without changing the test process's thresholds.
    monkeypatch.setattr(memory, "_collecting_rarely", True)
    left: list[weakref.ref[Rows]] = []

    async def batch() -> AsyncIterator[list[int]]:
        yield [1, 2]

    async def read(checkpoint: Any) -> AsyncIterator[list[int]]:
        return batch()

    async def process(chunk: Chunk[int]) -> Processed[Rows]:
        rows = Rows(chunk.items)
        rows.append(rows)  # a cycle: only the cyclic collector frees it
        left.append(weakref.ref(rows))
        return Processed(output=rows)

    async def write(conn: Connection, output: Rows) -> None:
        return None

    def build(context: JobContext) -> StepDefinition[int, Rows]:
        return StepDefinition("memoryTestStep", read, process, DatabaseWriter(write), int)

    spec = JobSpec(
        "memoryTestJob",
        "memory-test",
        title="Memory test",
        parameters=(),
        build=build,
    )
    gc.disable()  # as if the next automatic collection were runs away
    try:
        async with open_resources(settings, broker=False) as resources:
            execution = await Launcher(resources, [spec]).run(spec, {}, rerun=False)
        assert execution.status == "COMPLETED", execution.exit_message
        assert len(left) == 1 and left[0]() is None
    finally:
        gc.enable()
