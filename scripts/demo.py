"""The demo: a fresh database, sample rows, the fake peers, both jobs once, and a summary.

Run through `scripts/demo`, which prepares .venv first. Uses the MariaDB/MySQL of
DEMO_DB_SERVER (default mysql://root@127.0.0.1:3306), its database DEMO_DATABASE (default
couponpop_demo, made afresh), and the RabbitMQ of RABBITMQ_* in a vhost of its own,
DEMO_VHOST (default couponpop-demo, made with rabbitmqctl if missing): never `/`, where
on a shared broker a queue bound to the routing key receives every other publisher's
pushes. There it declares the notification service's queue, as that service does, and
shows what the runs left in it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import aio_pika

from app.config import load_settings
from app.contracts import CONSUMER_QUEUE
from app.devtools.consumer_queue import declare_consumer_queue
from app.edges.db import fetch_all, open_pool
from app.schema.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "scripts" / "demo_data"
DATABASE = os.environ.get("DEMO_DATABASE", "couponpop_demo")
VHOST = os.environ.get("DEMO_VHOST", "couponpop-demo")
STATS_RUN = ["coupon-usage-stats", "--run-date", "2025-10-26"]
FANOUT_RUNS = [
    ["coupon-usage-stats-fcm-send", "--run-date", "2025-10-25", "--target-hour", "10"],
    ["coupon-usage-stats-fcm-send", "--run-date", "2025-10-26", "--target-hour", "16"],
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sql_statements(path: Path) -> list[str]:
    lines = [line.split("--", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def prepare_database(env: dict[str, str]) -> None:
    server = load_settings({**env, "DB_URL": f"{env['DEMO_DB_SERVER']}/mysql"}, env_file=None)
    async with open_pool(server.database) as pool, pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SET SESSION sql_notes = 0")  # no note when it is not there
        await cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        await cur.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    async with open_pool(load_settings(env, env_file=None).database) as pool:
        await migrate(pool, dev_schema=True)
        async with pool.acquire() as conn, conn.cursor() as cur:
            for name in ("coupon_histories.sql", "usage_stats_and_events.sql"):
                for statement in sql_statements(DATA / name):
                    await cur.execute(statement)


def prepare_vhost(user: str) -> None:
    """The demo's own vhost, which `user` may use (rabbitmqctl, as the tests do)."""

    def rabbitmqctl(*args: str) -> str:
        done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"demo: rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    if VHOST not in rabbitmqctl("list_vhosts").split():
        rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")


async def start_fake_peers(env: dict[str, str]) -> asyncio.subprocess.Process:
    store, notification = free_port(), free_port()
    env["STORE_SERVICE_URL"] = f"http://127.0.0.1:{store}"
    env["NOTIFICATION_SERVICE_URL"] = f"http://127.0.0.1:{notification}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.devtools.fake_peers",
        "--data",
        str(ROOT / "app" / "devtools" / "sample_peers.json"),
        "--store-port",
        str(store),
        "--notification-port",
        str(notification),
        env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", notification)
            writer.close()
            return process
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the fake peers did not start")


async def run_job(env: dict[str, str], args: list[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "run",
        *args,
        "--rerun",
        "--quiet",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    summary = [line for line in err.decode().splitlines() if " execution " in line]
    if process.returncode != 0:
        sys.stderr.write(err.decode())
        raise SystemExit(f"demo: `python -m app run {' '.join(args)}` failed")
    return summary[-1] if summary else ""


async def main() -> None:
    env = dict(os.environ)
    env.setdefault("DEMO_DB_SERVER", "mysql://root@127.0.0.1:3306")
    env["DB_URL"] = f"{env['DEMO_DB_SERVER']}/{DATABASE}"
    env.setdefault("JWT_SECRET_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    env["SCHEDULER_ENABLED"] = "false"
    env["LOG_LEVEL"] = "WARNING"
    env["RABBITMQ_VHOST"] = VHOST
    settings = load_settings(env, env_file=None)

    await prepare_database(env)
    prepare_vhost(settings.RABBITMQ_USERNAME)
    await declare_consumer_queue(settings.broker.url, purge=True)
    async with AsyncExitStack() as stack:
        peers = await start_fake_peers(env)
        stack.push_async_callback(peers.wait)
        stack.callback(peers.terminate)
        broker = await stack.enter_async_context(await aio_pika.connect(settings.broker.url))
        channel = await broker.channel()

        print("couponpop-batch demo")
        print(f"  database {DATABASE}: migrated, sample rows of the old service loaded")
        print(f"  vhost {VHOST}: {CONSUMER_QUEUE} declared as the notification service does")
        print(f"  fake peers: {env['STORE_SERVICE_URL']} {env['NOTIFICATION_SERVICE_URL']}\n")
        # The fan-out first: it reads the old service's sample rows of coupon_usage_stats,
        # which the stats run of 2025-10-26 then replaces with what it computes.
        for args in FANOUT_RUNS:
            print(f"$ python -m app run {' '.join(args)}\n  {await run_job(env, args)}\n")
        print(f"$ python -m app run {' '.join(STATS_RUN)}\n  {await run_job(env, STATS_RUN)}")
        async with open_pool(settings.database) as pool:
            rows = await fetch_all(
                pool,
                "SELECT member_id, top_dong, top_hour, aggregated_at FROM coupon_usage_stats"
                " WHERE aggregated_at = '2025-10-26' ORDER BY member_id",
            )
        print("  coupon_usage_stats for 2025-10-26 (the date's rows replaced: exactly these):")
        for member_id, dong, hour, _ in rows:
            print(f"    member {member_id:>3}  top_dong {dong}  top_hour {hour:>2}")
        queue = await channel.get_queue(CONSUMER_QUEUE)
        received = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            received.append(json.loads(message.body))
        print(f"\nthe {len(received)} messages the runs published, in {CONSUMER_QUEUE}:")
        for body in received:
            print(
                f"  {body['traceId']}  member {body['memberId']}  token {body['token']}"
                f"  {body['topDong']} {body['topHour']}h  events {body['activeEventCount']}"
            )
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main())
