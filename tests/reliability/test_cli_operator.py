"""The operator's commands: executions, stop, abandon, restart, backfill, as a process."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncmy.pool import Pool

from app.__main__ import EXIT_REFUSED, EXIT_USAGE
from app.composition import JOBS
from app.config import Settings
from app.devtools.fake_peers import run_fake_peers
from app.runtime.job import find_job
from tests.integration.test_usage_stats_job import job_settings, run_job, stats
from tests.reliability.support import cli, cli_environment, stats_world

pytestmark = pytest.mark.slow

STATS = find_job(JOBS, "coupon-usage-stats")


async def command(env: dict[str, str], folder: Path, *args: str) -> tuple[int, str]:
    log = folder / f"{args[0]}.log"
    async with cli(args, env, log) as process:
        code = await process.wait(60)
    return code, log.read_text(encoding="utf-8")


async def test_backfill_then_list_stop_abandon_and_restart_from_the_command_line(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    world = stats_world(60)
    await world.load(pool)
    async with run_fake_peers(world.peer_data()) as store:
        env = cli_environment(
            settings,
            STORE_SERVICE_URL=store.store_url,
            NOTIFICATION_SERVICE_URL=store.notification_url,
            MAX_RUNNING_EXECUTIONS=1,
        )
        code, out = await command(
            env, tmp_path, "backfill", "coupon-usage-stats", "--from", "2025-10-25", "--to",
            "2025-10-26",
        )  # fmt: skip
        assert code == 0, out
        summary = out[out.index("couponUsageStatsJob backfill") :].splitlines()
        assert summary[0] == "couponUsageStatsJob backfill 2025-10-25..2025-10-26: 2 dates"
        first, second = (int(line.split()[2]) for line in summary[1:])
        assert summary[1:] == [
            f"  2025-10-25  execution {first} COMPLETED",
            f"  2025-10-26  execution {second} COMPLETED",
        ]
        assert {row[3].isoformat() for row in await stats(pool)} == {"2025-10-25", "2025-10-26"}

        code, out = await command(env, tmp_path, "executions", "--status", "COMPLETED")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0].split()[:4] == ["id", "job", "exit", "code"]
        assert [line.split()[:3] for line in lines[1:]] == [
            [str(second), "couponUsageStatsJob", "COMPLETED"],
            [str(first), "couponUsageStatsJob", "COMPLETED"],
        ]
        assert lines[1].endswith("runDate=2025-10-26")

        assert await command(env, tmp_path, "stop", str(first)) == (
            EXIT_REFUSED,
            f"not done: execution {first} is COMPLETED, not running\n",
        )
        assert await command(env, tmp_path, "abandon", "9999999") == (
            EXIT_USAGE,
            "error: no job execution 9999999\n",
        )

        # a FAILED run (the store service down), then restarted from the command line
        store.control.update({"fail_status": 503, "fail_times": -1})
        failed = await run_job(job_settings(settings, store, RETRY_BUDGET_SECONDS=0.2), rerun=True)
        assert failed.status == "FAILED"
        store.control.update({"fail_status": None})
        code, out = await command(env, tmp_path, "restart", str(failed.id), "--quiet")
        assert code == 0, out
        assert f"couponUsageStatsJob execution {failed.id + 1}: COMPLETED" in out
        # its instance completed since: refused, as Spring's JobInstanceAlreadyComplete
        assert await command(env, tmp_path, "restart", str(failed.id)) == (
            EXIT_REFUSED,
            f"not restarted: couponUsageStatsJob already completed as execution {failed.id + 1}\n",
        )
