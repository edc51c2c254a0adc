"""RSS of a long-lived process that runs the stats job again and again, as `serve` does.

One process set up as the CLI sets itself up (`tune_gc`) opens the resources once
(pool, peer client) and runs `coupon-usage-stats`
for one run date `--runs` times through the launcher, each a rerun (a backfill of the
same window); after each run it prints one JSON line: the run's number, its status and
seconds, and the process's resident set (VmRSS) and peak (VmHWM) in MB. `scripts/bench
--only memory` runs it as a child against the generated data and the fake peers:

    DB_URL=... STORE_SERVICE_URL=... .venv/bin/python scripts/bench_memory.py \
        --run-date 2025-10-31 --runs 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from app.composition import JOBS
from app.config import load_settings
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.memory import tune_gc
from app.runtime.resources import open_resources


def memory_mb() -> dict[str, float]:
    """This process's VmRSS and VmHWM, in MB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return {"rss_mb": round(found["VmRSS"], 1), "peak_mb": round(found["VmHWM"], 1)}


async def main(run_date: str, runs: int) -> None:
    settings = load_settings()
    spec = find_job(JOBS, "coupon-usage-stats")
    async with open_resources(settings, broker=False) as resources:
        launcher = Launcher(resources, JOBS)
        for number in range(1, runs + 1):
            started = time.perf_counter()
            execution = await launcher.run(spec, {"runDate": run_date}, rerun=True)
            seconds = round(time.perf_counter() - started, 2)
            line = {"run": number, "status": str(execution.status), "seconds": seconds}
            print(json.dumps({**line, **memory_mb()}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-date", required=True)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    tune_gc()
    asyncio.run(main(args.run_date, args.runs))
