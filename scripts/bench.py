"""The benchmarks of issue 6 in one run: each job through its CLI against its floor.

Run through `scripts/bench` (which prepares .venv and the local services first):

    scripts/bench [--repeat 3] [--growth] [--only stats|fanout]

1. Generates the data set if missing (`scripts/gen_data.py`, database couponpop_bench).
2. Starts the fake peers as a process on free ports, serving the generated stores and
   push tokens and checking the system token's signature.
3. Makes the RabbitMQ vhost `couponpop-bench` with the consumer queue declared and
   bound exactly as the notification service does (CONTRACTS section 3); purged
   before each run and at the end.
4. Measures, each `--repeat` times, floors and jobs alternated so that a busy moment
   of the machine does not favour either, then prints the medians:
   (a) stats floor: `mysql --quick` streaming the window's USED rows, ordered by member;
   (b) the stats job (`run coupon-usage-stats --rerun --quiet`), the run date's rows
       deleted first, so that every run is the daily first run;
   (c) fan-out floor: a bare aiormq confirm-mode publisher (`bench_publish.py --floor`),
       the same message count, body size and properties, the same window;
   (d) the fan-out job; (e) the same with the fake peers answering after 20 ms;
   (f) with --growth: the stats floor and job at 5x the rows, in couponpop_bench_x5.
   Peak RSS is the child's own ru_maxrss (os.wait4). Each run is checked: exit 0,
   one row per eligible member, as many messages in the queue as tokens expected.

Every child's output goes to var/bench/logs/; the results also to var/bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika

from app.config import Settings
from app.contracts import CONSUMER_QUEUE, CONSUMER_QUEUE_ARGUMENTS, EXCHANGE, ROUTING_KEY
from app.devtools.fake_peers import CONTROL_PATH
from app.edges.db import fetch_all, open_pool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_data import bench_settings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
LOGS = OUT / "logs"
PYTHON = sys.executable
VHOST = "couponpop-bench"
GROWTH_FACTOR = 5
JWT_KEY = b"couponpop-bench-key-of-32-bytes!"
BROKER_OUTAGE = ("Connect call failed", "Reconnecting after", "Connection reset by peer")

# The targets of issue 6.
STATS_MAX_RATIO = 2.5
STATS_MAX_RSS_MB = 150
FANOUT_MIN_RATIO = 0.7
LATENCY_MAX_DROP = 0.15
GROWTH_MAX_TIME = 5.5
GROWTH_MAX_RSS = 1.2


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- children, measured ---------------------------------------------------------------


@dataclass
class Run:
    wall: float  # seconds, start to exit of the child
    rss_mb: float  # the child's peak RSS
    cpu: float  # the child's CPU seconds, user + system
    job: float | None = None  # seconds by the job's own record (BATCH_JOB_EXECUTION)
    rate: float | None = None  # rows or messages a second
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. the broker went away meanwhile


def measure(label: str, argv: Sequence[str], env: dict[str, str], stdout: Path | None) -> Run:
    """Run `argv`, wait for it with os.wait4: wall time and its own peak RSS."""
    LOGS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"\W+", "-", label).strip("-")
    with (
        open(stdout or os.devnull, "wb") as out,
        open(LOGS / f"{name}.stderr", "wb") as err,
    ):
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    run = Run(wall=wall, rss_mb=usage.ru_maxrss / 1024, cpu=usage.ru_utime + usage.ru_stime)
    log = (LOGS / f"{name}.stderr").read_text(errors="replace")
    if child.returncode != 0:
        tail = log.strip().splitlines()[-3:]
        run.problems.append(f"exit {child.returncode}: {' | '.join(tail)}")
    if any(sign in log for sign in BROKER_OUTAGE):
        # Other test runs on this machine stop RabbitMQ (`rabbitmqctl stop_app`) at times.
        run.notes.append("broker outage during the run")
    return run


def execution_of(label: str) -> int | None:
    """The execution id the CLI reported on stderr."""
    name = re.sub(r"\W+", "-", label).strip("-")
    found = re.findall(r"execution (\d+): (\w+)", (LOGS / f"{name}.stderr").read_text())
    return int(found[-1][0]) if found else None


# ---- the database and the broker -------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = bench_settings()
        self.peers_process: subprocess.Popen[bytes] | None = None
        self.store_url = self.notification_url = ""

    def settings_for(self, database: str) -> Settings:
        return bench_settings(database)

    def wait_for_purge(self, database: str, within: float = 60) -> None:
        """Until InnoDB has purged the rows deleted before a run: its purge thread would
        otherwise compete with the measured job for the machine's two cores."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            ((pending,),) = self.sql(
                database,
                "SELECT COUNT FROM information_schema.INNODB_METRICS"
                " WHERE NAME = 'trx_rseg_history_len'",
            )
            if not pending:
                return
            time.sleep(0.2)
        say(f"bench: InnoDB still purging after {within:.0f} s; measuring anyway")

    def sql(self, database: str, query: str, args: Sequence[Any] = ()) -> list[tuple]:
        async def go() -> list[tuple]:
            async with open_pool(self.settings_for(database).database) as pool:
                return await fetch_all(pool, query, args)

        return asyncio.run(go())

    def generate(self, database: str, histories: int) -> dict[str, Any]:
        argv = [PYTHON, str(ROOT / "scripts" / "gen_data.py"), "--database", database]
        argv += ["--histories", str(histories)]
        say(f"data: {database} ({histories:,} histories), generated if missing")
        done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, check=True)
        return json.loads(done.stdout)

    # -- broker
    def rabbitmqctl(self, *args: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
        )
        return done.stdout

    def prepare_vhost(self) -> None:
        if VHOST not in self.rabbitmqctl("list_vhosts").split():
            self.rabbitmqctl("add_vhost", VHOST)
        user = self.settings.RABBITMQ_USERNAME
        self.rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")
        self.queue_op(declare=True)

    def queue_op(self, *, declare: bool = False, purge: bool = False) -> int:
        """Messages in the consumer queue (declared as the notification service does)."""
        url = self.amqp_url

        async def go() -> int:
            async with await aio_pika.connect(url) as connection:
                channel = await connection.channel()
                if declare:
                    exchange = await channel.declare_exchange(
                        EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                queue = await channel.declare_queue(
                    CONSUMER_QUEUE, durable=True, arguments=CONSUMER_QUEUE_ARGUMENTS
                )
                if declare:
                    await queue.bind(exchange, ROUTING_KEY)
                if purge:
                    await queue.purge()
                    queue = await channel.declare_queue(
                        CONSUMER_QUEUE, durable=True, arguments=CONSUMER_QUEUE_ARGUMENTS
                    )
                count = queue.declaration_result.message_count
                return int(count or 0)

        return asyncio.run(go())

    @property
    def amqp_url(self) -> str:
        return dataclasses.replace(self.settings, RABBITMQ_VHOST=VHOST).broker.url

    # -- fake peers
    def start_peers(self, data: Path) -> None:
        store, notification = free_port(), free_port()
        argv = [PYTHON, "-m", "app.devtools.fake_peers", "--data", str(data)]
        argv += ["--store-port", str(store), "--notification-port", str(notification)]
        argv += ["--key-base64", base64.b64encode(JWT_KEY).decode()]
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / "fake-peers.stderr", "wb") as err:
            self.peers_process = subprocess.Popen(argv, cwd=ROOT, stderr=err)
        self.store_url = f"http://127.0.0.1:{store}"
        self.notification_url = f"http://127.0.0.1:{notification}"
        deadline = time.monotonic() + 120
        while True:
            try:
                self.control()
                return
            except OSError as exc:
                if self.peers_process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake peers did not start: see its log") from exc
                time.sleep(0.2)

    def control(self, **changes: Any) -> dict[str, Any]:
        url = self.store_url + CONTROL_PATH
        request = urllib.request.Request(url)
        if changes:
            request = urllib.request.Request(url, data=json.dumps(changes).encode(), method="POST")
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())

    def stop_peers(self) -> None:
        if self.peers_process is not None and self.peers_process.poll() is None:
            self.peers_process.terminate()
            self.peers_process.wait(timeout=30)

    def job_env(self, database: str) -> dict[str, str]:
        target = self.settings.database.target
        return {
            **os.environ,
            "DB_URL": f"mysql://{target.host}:{target.port}/{database}",
            "JWT_SECRET_KEY": base64.b64encode(JWT_KEY).decode(),
            "STORE_SERVICE_URL": self.store_url,
            "NOTIFICATION_SERVICE_URL": self.notification_url,
            "RABBITMQ_VHOST": VHOST,
            "PUBLISH_WINDOW": str(self.args.window),
        }

    def job_seconds(self, database: str, execution: int | None) -> float | None:
        if execution is None:
            return None
        rows = self.sql(
            database,
            "SELECT TIMESTAMPDIFF(MICROSECOND, START_TIME, END_TIME) FROM BATCH_JOB_EXECUTION"
            " WHERE JOB_EXECUTION_ID = %s",
            (execution,),
        )
        return rows[0][0] / 1e6 if rows and rows[0][0] is not None else None

    # -- the measured things
    def stats_floor(self, database: str, expected: dict[str, Any], label: str) -> Run:
        start, end = expected["window"]
        query = (
            "SELECT member_id, store_id, created_at FROM coupon_histories"
            f" WHERE coupon_status = 'USED' AND created_at BETWEEN '{start}' AND '{end}'"
            " ORDER BY member_id"
        )
        target = self.settings.database.target
        argv = ["mysql", "--quick", "-h", target.host, "-P", str(target.port)]
        argv += ["-u", target.user, database, "-e", query]
        env = {**os.environ, "MYSQL_PWD": target.password}
        run = measure(label, argv, env, None)
        run.rate = expected["window_rows"] / run.wall
        return run

    def stats_job(self, database: str, expected: dict[str, Any], label: str) -> Run:
        day = expected["run_date"]
        self.sql(database, "DELETE FROM coupon_usage_stats WHERE aggregated_at = %s", (day,))
        self.wait_for_purge(database)
        argv = [PYTHON, "-m", "app", "run", "coupon-usage-stats", "--run-date", day]
        run = measure(label, [*argv, "--rerun", "--quiet"], self.job_env(database), None)
        run.rate = expected["window_rows"] / run.wall
        run.job = self.job_seconds(database, execution_of(label))
        ((rows, members),) = self.sql(
            database,
            "SELECT COUNT(*), COUNT(DISTINCT member_id) FROM coupon_usage_stats"
            " WHERE aggregated_at = %s",
            (day,),
        )
        if rows != expected["eligible_members"] or members != rows:
            run.problems.append(
                f"{rows:,} rows for {members:,} members, expected one for each of "
                f"{expected['eligible_members']:,} eligible members"
            )
        return run

    def fanout_floor(self, expected: dict[str, Any], label: str) -> Run:
        self.purge(label)
        out = LOGS / "fanout-floor.json"
        argv = [PYTHON, str(ROOT / "scripts" / "bench_publish.py"), "--floor", "--vhost", VHOST]
        argv += ["--messages", str(expected["messages"]), "--window", str(self.args.window)]
        argv += ["--body-bytes", str(expected["mean_body_bytes"])]
        run = measure(label, argv, dict(os.environ), out)
        if not run.problems:
            result = json.loads(out.read_text())
            run.job = result["seconds"]  # the publishing alone, start-up and encoding aside
            run.rate = result["rate"]
        self.check_queue(run, expected["messages"])
        return run

    def fanout_job(self, database: str, expected: dict[str, Any], label: str) -> Run:
        self.purge(label)
        argv = [PYTHON, "-m", "app", "run", "coupon-usage-stats-fcm-send"]
        argv += ["--run-date", expected["run_date"], "--target-hour", str(expected["target_hour"])]
        run = measure(label, [*argv, "--rerun", "--quiet"], self.job_env(database), None)
        run.rate = expected["messages"] / run.wall
        run.job = self.job_seconds(database, execution_of(label))
        self.check_queue(run, expected["messages"])
        return run

    def purge(self, label: str) -> None:
        try:
            self.queue_op(purge=True)
        except Exception as exc:
            say(f"{label}: could not purge the queue: {exc!r}")

    def check_queue(self, run: Run, expected: int) -> None:
        try:
            found = self.queue_op()
        except Exception as exc:  # a broker stopped by someone else: a failed check
            run.problems.append(f"cannot count the queue: {exc!r}")
            return
        if found < expected:
            run.problems.append(f"{found:,} messages in the queue, expected {expected:,}")
        elif found > expected:
            # Republished after a lost confirmation: harmless if the trace ids are the
            # expected number (the consumer drops a trace id it has seen).
            distinct = self.distinct_message_ids(found)
            if distinct == expected:
                run.notes.append(f"{found - expected:,} duplicates, {distinct:,} distinct ids")
            else:
                run.problems.append(
                    f"{found:,} messages with {distinct:,} distinct ids, expected {expected:,}"
                )

    def distinct_message_ids(self, count: int) -> int:
        """Consume the queue (`count` messages) and count the distinct message ids."""
        url = self.amqp_url

        async def go() -> int:
            seen: set[str | None] = set()
            got = 0
            done = asyncio.Event()

            async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal got
                seen.add(message.message_id)
                got += 1
                if got >= count:
                    done.set()

            async with await aio_pika.connect(url) as connection:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=5000)
                queue = await channel.get_queue(CONSUMER_QUEUE)
                tag = await queue.consume(take, no_ack=True)
                async with asyncio.timeout(600):
                    await done.wait()
                await queue.cancel(tag)
            return len(seen)

        return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the report ------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    runs: list[Run]
    unit: str  # rows/s or msg/s
    ratio: float | None = None
    target: str = ""
    met: bool | None = None

    def median(self, pick: Callable[[Run], float | None]) -> float | None:
        """Of the runs the broker did not disturb, if there are any."""
        runs = [r for r in self.runs if not r.notes] or self.runs
        values = [v for r in runs if (v := pick(r)) is not None]
        return statistics.median(values) if values else None

    @property
    def wall(self) -> float:
        return self.median(lambda r: r.wall) or 0.0

    @property
    def rss(self) -> float:
        return self.median(lambda r: r.rss_mb) or 0.0

    @property
    def rate(self) -> float:
        return self.median(lambda r: r.rate) or 0.0

    @property
    def problems(self) -> list[str]:
        return [p for r in self.runs for p in r.problems]


def print_table(rows: list[Row], header: list[str]) -> None:
    print()
    for line in header:
        print(line)
    print()
    print(
        f"{'':<44} {'wall s':>7} {'own s':>7} {'CPU s':>6} {'rate':>15} {'peak RSS':>9}"
        f" {'ratio':>6}  {'target':<34} {'checks'}"
    )
    for row in rows:
        own = row.median(lambda r: r.job)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        met = "" if row.met is None else (" met" if row.met else " MISSED")
        checks = "ok" if not row.problems else "FAILED: " + "; ".join(dict.fromkeys(row.problems))
        disturbed = sum(1 for r in row.runs if r.notes)
        if disturbed:
            checks += f" ({disturbed} run(s) with a broker outage: see below)"
        print(
            f"{row.case:<44} {row.wall:>7.2f} {'' if own is None else f'{own:.2f}':>7}"
            f" {row.median(lambda r: r.cpu) or 0:>6.1f}"
            f" {row.rate:>9,.0f} {row.unit:<5} {row.rss:>6.0f} MB {ratio:>6}"
            f"  {(row.target + met):<34} {checks}"
        )
    print()
    for row in rows:
        walls = ", ".join(f"{r.wall:.2f}" for r in row.runs)
        rss = ", ".join(f"{r.rss_mb:.0f}" for r in row.runs)
        notes = "; ".join(
            f"run {i + 1}: {', '.join(r.notes)}" for i, r in enumerate(row.runs) if r.notes
        )
        print(f"  {row.case}: wall {walls} s; RSS {rss} MB" + (f"; {notes}" if notes else ""))


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores {model}, {platform.system()} {platform.release()}"


def database_server(bench: Bench) -> str:
    ((version, pool),) = bench.sql(
        "information_schema", "SELECT VERSION(), @@innodb_buffer_pool_size"
    )
    return f"database server {version}, innodb_buffer_pool_size {int(pool) // 2**20} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="couponpop_bench")
    parser.add_argument("--histories", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    parser.add_argument("--growth", action="store_true", help="also the stats job at 5x rows")
    parser.add_argument("--only", choices=("stats", "fanout"), help="one job only")
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--window", type=int, default=1000, help="unconfirmed messages")
    args = parser.parse_args()
    if shutil.which("mysql") is None:
        parser.error("the mysql command-line client is needed for the stats floor")

    bench = Bench(args)
    record = bench.generate(args.database, args.histories)
    plan, expected = record["plan"], record["expected"]
    stats, fanout = expected["stats"], expected["fanout"]
    loads = [f"start {load()}"]
    rows: list[Row] = []
    bench.start_peers(Path(record["peers_file"]))
    try:
        bench.prepare_vhost()
        if args.only != "fanout":
            a, b = [], []
            for i in range(args.repeat):
                say(f"stats: run {i + 1} of {args.repeat}")
                a.append(bench.stats_floor(args.database, stats, f"stats-floor-{i}"))
                b.append(bench.stats_job(args.database, stats, f"stats-job-{i}"))
            loads.append(f"after stats {load()}")
            floor = Row(
                f"(a) stats floor: mysql --quick, {stats['window_rows']:,} rows", a, "row/s"
            )
            floor.ratio = 1.0
            job = Row("(b) stats job (CLI)", b, "row/s")
            job.ratio = job.wall / floor.wall
            job.target = f"<= {STATS_MAX_RATIO}x, <= {STATS_MAX_RSS_MB} MB"
            job.met = job.ratio <= STATS_MAX_RATIO and job.rss <= STATS_MAX_RSS_MB
            rows += [floor, job]
        if args.only != "stats":
            rows += fanout_rows(bench, args, fanout)
            loads.append(f"after fan-out {load()}")
        if args.growth and args.only != "fanout":
            rows += growth_rows(bench, args, rows)
            loads.append(f"after growth {load()}")
    finally:
        bench.stop_peers()
        bench.purge("the end")

    header = [
        f"couponpop-batch benchmarks, {datetime.now():%Y-%m-%d %H:%M}, {machine()}",
        f"data: {plan['histories']:,} histories, {plan['members']:,} members, "
        f"{plan['stores']:,} stores, {plan['dongs']} dongs; fan-out "
        f"{fanout['target_members']:,} members at {fanout['run_date']} "
        f"{fanout['target_hour']:02d}:00 -> {fanout['messages']:,} messages of "
        f"~{fanout['mean_body_bytes']} bytes; medians of {args.repeat}",
        "load average (1/5/15 min): " + "; ".join(loads),
        database_server(bench),
        "own s: the job's START..END in BATCH_JOB_EXECUTION (floor (c): publishing alone);"
        " CPU s: the child's user+system; ratios use wall s (rates: (c) own s, (d) (e) wall s)",
    ]
    print_table(rows, header)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "header": header,
                "rows": [
                    {
                        "case": r.case,
                        "wall": r.wall,
                        "own": r.median(lambda x: x.job),
                        "rate": r.rate,
                        "rss_mb": r.rss,
                        "ratio": r.ratio,
                        "target": r.target,
                        "met": r.met,
                        "runs": [vars(x) for x in r.runs],
                    }
                    for r in rows
                ],
            },
            ensure_ascii=False,
            indent=2,
        )
    )
    if any(r.problems for r in rows):
        sys.exit(1)


def fanout_rows(bench: Bench, args: argparse.Namespace, fanout: dict[str, Any]) -> list[Row]:
    found = bench.sql(
        args.database,
        "SELECT COUNT(*) FROM coupon_usage_stats WHERE aggregated_at BETWEEN"
        " DATE_SUB(%s, INTERVAL 2 DAY) AND %s",
        (fanout["run_date"], fanout["run_date"]),
    )[0][0]
    if found != fanout["window_rows"]:
        say(
            f"warning: {found:,} coupon_usage_stats rows in the fan-out window, generated "
            f"{fanout['window_rows']:,}: the expected message count may not hold"
        )
    c, d, e = [], [], []
    for i in range(args.repeat):
        say(f"fan-out: run {i + 1} of {args.repeat}")
        c.append(bench.fanout_floor(fanout, f"fanout-floor-{i}"))
        bench.control(latency_ms=0)
        d.append(bench.fanout_job(args.database, fanout, f"fanout-job-{i}"))
        bench.control(latency_ms=args.latency_ms)
        try:
            e.append(bench.fanout_job(args.database, fanout, f"fanout-job-latency-{i}"))
        finally:
            bench.control(latency_ms=0)
    floor = Row("(c) fan-out floor: bare aiormq publisher", c, "msg/s")
    floor.ratio = 1.0
    job = Row("(d) fan-out job (CLI)", d, "msg/s")
    job.ratio = job.rate / floor.rate
    job.target = f">= {FANOUT_MIN_RATIO}x floor rate"
    job.met = job.ratio >= FANOUT_MIN_RATIO
    slow = Row(f"(e) fan-out job, peers answering in {args.latency_ms:g} ms", e, "msg/s")
    slow.ratio = slow.rate / floor.rate
    drop = 1 - slow.rate / job.rate
    slow.target = f"drop {drop:.0%} < {LATENCY_MAX_DROP:.0%}"
    slow.met = drop < LATENCY_MAX_DROP
    return [floor, job, slow]


def growth_rows(bench: Bench, args: argparse.Namespace, rows: list[Row]) -> list[Row]:
    database = f"{args.database}_x{GROWTH_FACTOR}"
    record = bench.generate(database, args.histories * GROWTH_FACTOR)
    stats = record["expected"]["stats"]
    a, f = [], []
    for i in range(args.repeat):
        say(f"growth: run {i + 1} of {args.repeat}")
        a.append(bench.stats_floor(database, stats, f"growth-floor-{i}"))
        f.append(bench.stats_job(database, stats, f"growth-job-{i}"))
    floor = Row(f"(f) stats floor at {GROWTH_FACTOR}x: {stats['window_rows']:,} rows", a, "row/s")
    base = next((r for r in rows if r.case.startswith("(a)")), None)
    floor.ratio = floor.wall / base.wall if base else None
    job = Row(f"(f) stats job at {GROWTH_FACTOR}x (ratio to (b))", f, "row/s")
    stats_job = next((r for r in rows if r.case.startswith("(b)")), None)
    if stats_job is not None:
        job.ratio = job.wall / stats_job.wall
        rss = job.rss / stats_job.rss
        job.target = f"<= {GROWTH_MAX_TIME}x, RSS x{rss:.2f} <= {GROWTH_MAX_RSS}"
        if floor.ratio is not None:  # the server's share: the floor's own growth
            job.target += f" (floor x{floor.ratio:.2f})"
        job.met = job.ratio <= GROWTH_MAX_TIME and rss <= GROWTH_MAX_RSS
    return [floor, job]


if __name__ == "__main__":
    main()
