"""The loop-lag probe of the fault tests: it must see what the loop itself does (work on
the loop, a blocking call), whatever the machine's load, since it subtracts only the time
the loop's thread waited for a CPU."""

from __future__ import annotations

import time

from tests.reliability.support import LoopLag, until

STALL = 0.3


async def until_sampled(lag: LoopLag, samples: int) -> None:
    async def sampled() -> bool:
        return lag.samples >= samples

    await until(sampled, within=10, what=f"{samples} samples")


def busy_for(cpu_seconds: float) -> None:
    """Work on the calling thread until it has used `cpu_seconds` of CPU."""
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


async def test_work_on_the_loop_counts_in_full() -> None:
    async with LoopLag() as lag:
        await until_sampled(lag, 3)
        busy_for(STALL)
        await until_sampled(lag, lag.samples + 2)
    # Late by the CPU time at least (the probe's own tick overlapped the work).
    assert lag.worst >= STALL - lag.tick, lag
    assert lag.worst_wall >= lag.worst


async def test_a_blocking_call_on_the_loop_counts_in_full() -> None:
    async with LoopLag() as lag:
        await until_sampled(lag, 3)
        time.sleep(STALL)  # noqa: ASYNC251 -- the stall under test
        await until_sampled(lag, lag.samples + 2)
    assert lag.worst >= STALL - lag.tick, lag
