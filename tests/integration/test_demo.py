"""scripts/demo.py as `scripts/demo` runs it, in a database and a vhost of the test's own:
it shows the messages its own runs published, counted, and nothing else (issue 28, item 4:
before, it bound a queue on the shared vhost `/` and printed 50,407 other publishers'
messages, and its summary said "written 1" for two messages)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import _admin
from tests.integration import rabbit
from tests.waits import waiting

ROOT = Path(__file__).resolve().parents[2]


async def test_the_demo_shows_the_messages_its_runs_published_and_counts_them(
    tmp_path: Path,
) -> None:
    database = f"cpb_demo_{os.getpid()}"
    with rabbit.temporary_vhost("demo") as vhost:
        env = {
            "PATH": os.environ["PATH"],
            "DEMO_DATABASE": database,
            "DEMO_VHOST": vhost,
        }
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "scripts" / "demo.py"), env=env, cwd=tmp_path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with waiting(120, "the demo's end"):
                out, err = await process.communicate()
        finally:
            await _admin(f"DROP DATABASE IF EXISTS {database}")
        assert process.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        # Published where its consumer queue is: the vhost of its own, now drained.
        queues = rabbit.rabbitmqctl(
            "list_queues", "-p", vhost, "--no-table-headers", "name", "messages"
        )
    assert queues.split() == ["coupon.usage.stats.fcm.send.queue.v1", "0"]
    runs = [line.strip() for line in lines if line.startswith("  couponUsageStatsFcmSendJob ")]
    assert [run.split(": ", 1)[1] for run in runs] == [
        "COMPLETED; read 1, written 1, filtered 0, skipped 0; messages published 2, confirmed 2"
    ] * 2
    assert (
        f"  vhost {vhost}: coupon.usage.stats.fcm.send.queue.v1 declared as the notification"
        " service does"
    ) in lines
    received = lines[-5:]
    assert received == [
        "the 4 messages the runs published, in coupon.usage.stats.fcm.send.queue.v1:",
        # CONTRACTS section 3's own example first
        "  f85971b0-2d71-3dc0-b533-047f9a578d93  member 101  token token-101-a  노량진동 10h"
        "  events 3",
        "  b72ea07e-0e67-3631-b52f-5b468577ccb4  member 101  token token-101-b  노량진동 10h"
        "  events 3",
        "  9622ccb9-9d66-3dc3-87f7-a66947753e60  member 101  token token-101-a  풍무동 16h"
        "  events 3",
        "  d1979ef8-3564-3f0c-82d1-e5f41915a433  member 101  token token-101-b  풍무동 16h"
        "  events 3",
    ]
