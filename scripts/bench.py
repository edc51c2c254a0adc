"""The benchmarks of issues 6, 14 and 30 in one run: each job through its CLI against its floor.

Run through `scripts/bench` (which prepares .venv and the local services first):

    scripts/bench [--repeat 3] [--only stats|growth|sparse|month|fanout|memory ...]

1. Generates the data sets if missing (`scripts/gen_data.py`): couponpop_bench, the
   production shape (--histories over --history-days, ids in time order up to 5
   minutes, the window the newest rows; a year of daily coupon_usage_stats rows);
   for the growth cases, the same window under a fifth of the history
   (couponpop_bench_short) and five times the window in the same rows
   (couponpop_bench_wide); the sparse shape of issue 30 (couponpop_bench_sparse: the
   production shape's history, but most members of the window occasional); the month
   shape of issue 6, which is also issue 30's crowded month (couponpop_bench_month).
2. Starts the fake peers as a process on free ports, serving the generated stores and
   push tokens and checking the system token's signature.
3. Makes the RabbitMQ vhost `couponpop-bench` with the consumer queue declared and
   bound exactly as the notification service does (CONTRACTS section 3); purged
   before each run and at the end.
4. Compiles the app's bytecode, as the image's install has it.
5. Measures, each `--repeat` times, floors and jobs alternated so that a busy moment
   of the machine does not favour either, then prints the medians:
   (a) stats floor: `mysql --quick` over TCP, as the job connects, streaming the
       window's USED rows ordered by member, bounded to the window's ids;
   (b) the stats job (`run coupon-usage-stats --rerun --quiet`), the run date's rows
       deleted first, so that every run is the daily first run; (b full) the same with
       STATS_READ=full, the read of issue 6, whose rows the others must equal;
   (h) history growth: (a) and (b) on a fifth of the history, the same window;
   (w) window growth: (a) and (b) with five times the window's rows;
   (s) the sparse shape: (a) and (b), and one run with STATS_READ=full;
   (m) the month shape, the crowded month: (a) and (b), and one STATS_READ=full run;
   (c) fan-out floor: a bare aiormq confirm-mode publisher (`bench_publish.py --floor`),
       the same message count, body size and properties, the same window;
   (d) the fan-out job; (e) the same with the fake peers answering after 20 ms;
   (g) the fan-out job without the index of migration V003 (dropped, then rebuilt);
   (r) memory: one process (`bench_memory.py`) runs the stats job --memory-runs times
       (10; 60 for the issue's figure) on a --memory-histories window (900,000, the
       month shape, its own data set), as `serve` would: its RSS after 1, 10, 60 runs.
   Peak RSS is the child's own ru_maxrss (os.wait4). Rows examined: the server's
   Handler_read_rnd_next + Handler_read_next, GLOBAL status before and after the
   child (this machine's server is otherwise idle; what other clients do meanwhile
   counts too). Each run is checked: exit 0, one row per eligible member and the same
   rows as the full read, as many messages in the queue as tokens expected.

Every child's output goes to var/bench/logs/; the results also to var/bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import compileall
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika

from app.config import Settings
from app.contracts import CONSUMER_QUEUE, CONSUMER_QUEUE_ARGUMENTS, EXCHANGE, ROUTING_KEY
from app.devtools.fake_peers import CONTROL_PATH
from app.edges.db import StallDeadline, fetch_all, open_connection, open_pool, stream_rows
from app.jobs.fcm_send import _LATEST_STATS, stats_window
from app.jobs.history_window import window_span
from app.jobs.usage_stats import UsageStatsStep
from app.jobs.usage_stats_spec import SPEC
from app.runtime.resources import open_resources

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_data import bench_settings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
LOGS = OUT / "logs"
PYTHON = sys.executable
PARTS = ("stats", "growth", "sparse", "month", "fanout", "memory")
VHOST = "couponpop-bench"
GROWTH_FACTOR = 5
JWT_KEY = b"couponpop-bench-key-of-32-bytes!"
BROKER_OUTAGE = ("Connect call failed", "Reconnecting after", "Connection reset by peer")

# The targets of issues 6, 14, 21 and 30 (21: start-up included, the ratios tightened).
STATS_MAX_RATIO = 2.5  # production shape, to the bounded floor
SPARSE_MAX_RATIO = 3.0  # sparse shape (issue 30)
STATS_MAX_EXAMINED = 1.5  # rows examined to the window's rows
STATS_MAX_RSS_MB = 150
MEMORY_MAX_GROWTH_MB = 60  # RSS after the last run, over RSS after the first
MEMORY_REPORTED_RUNS = (1, 10, 60)
MONTH_MAX_RATIO = 2.2
HISTORY_GROWTH_MAX_TIME = 1.1
WINDOW_GROWTH_MAX_TIME = 5.0
GROWTH_MAX_RSS = 1.2
FANOUT_MIN_RATIO = 0.85  # issue 21
LATENCY_MAX_DROP = 0.15
HANDLER_READS = ("Handler_read_rnd_next", "Handler_read_next")
V003_INDEX = "idx_coupon_usage_stats_date_member"


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
    examined: int | None = None  # rows the server read meanwhile (see the module)
    digest: tuple[int, int] | None = None  # the stats job's rows: count, sum of CRC32s
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
        self.status_cost: int | None = None
        self.peers_data: Path | None = None

    def settings_for(self, database: str) -> Settings:
        return bench_settings(database)

    def history_length(self, database: str) -> int:
        """InnoDB's undo history not yet purged (server-wide)."""
        ((pending,),) = self.sql(
            database,
            "SELECT COUNT FROM information_schema.INNODB_METRICS"
            " WHERE NAME = 'trx_rseg_history_len'",
        )
        return int(pending)

    def wait_for_purge(self, database: str, baseline: int, within: float = 30) -> None:
        """Until InnoDB has purged the rows deleted before a run: its purge thread would
        otherwise compete with the measured job for the machine's two cores. Purged:
        the history back at `baseline`, its length before the DELETE (other clients of
        a shared server keep it above zero)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.history_length(database) <= baseline:
                return
            time.sleep(0.2)
        say(f"bench: InnoDB still purging after {within:.0f} s; measuring anyway")

    def sql(self, database: str, query: str, args: Sequence[Any] = ()) -> list[tuple]:
        async def go() -> list[tuple]:
            async with open_pool(self.settings_for(database).database) as pool:
                return await fetch_all(pool, query, args)

        return asyncio.run(go())

    def generate(self, database: str, options: Sequence[str]) -> dict[str, Any]:
        argv = [PYTHON, str(ROOT / "scripts" / "gen_data.py"), "--database", database]
        say(f"data: {database} ({' '.join(options)}), generated if missing")
        done = subprocess.run([*argv, *options], cwd=ROOT, stdout=subprocess.PIPE, check=True)
        return json.loads(done.stdout)

    def replay_read(self, database: str, expected: dict[str, Any], read: str) -> str:
        """The stats job's read queries, as its step builds them, run one after the other
        on one session: the rows the server examined for them alone (SESSION status)."""
        settings = dataclasses.replace(self.settings_for(database), STATS_READ=read)
        start, end = (datetime.fromisoformat(t) for t in expected["window"])

        async def handler_reads(conn: Any) -> int:
            async with conn.cursor() as cur:
                await cur.execute("SHOW SESSION STATUS LIKE 'Handler_read%%'")
                return sum(int(v) for k, v in await cur.fetchall() if k in HANDLER_READS)

        async def go() -> str:
            async with open_resources(settings, broker=False) as resources:
                step = UsageStatsStep(SPEC.context(resources, 0, {"runDate": expected["run_date"]}))
                queries = [step._query(bounds, None) for bounds in await step.shares()]
                slack = timedelta(minutes=settings.WINDOW_SLACK_MINUTES)
                span = await window_span(resources.pool, start, end, slack)
                deadline = StallDeadline.of(settings.database)
                async with open_connection(settings.database) as conn:
                    cost = -(await handler_reads(conn) - await handler_reads(conn))
                    before = await handler_reads(conn)
                    for sql, args in queries:
                        rows = stream_rows(conn, sql, args, settings.FETCH_ROWS, deadline)
                        async for _ in rows:
                            pass
                    examined = await handler_reads(conn) - before - cost
            found = "not used" if span is None else f"{span.lookups} rows looked up"
            return (
                f"its read alone on one session: examined {examined:,}"
                f" ({examined / expected['window_all_rows']:.2f}x), the id search: {found}"
            )

        return asyncio.run(go())

    def handler_reads(self) -> int:
        rows = self.sql(
            "information_schema",
            "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
            f" WHERE VARIABLE_NAME IN ({', '.join(['%s'] * len(HANDLER_READS))})",
            [name.upper() for name in HANDLER_READS],
        )
        return sum(int(value) for (value,) in rows)

    def examining(self, take: Callable[[], Run]) -> Run:
        """`take()`, with the rows the server examined meanwhile (less what reading the
        counters itself costs: the status table is read row by row too)."""
        if self.status_cost is None:
            first = self.handler_reads()
            self.status_cost = self.handler_reads() - first
        before = self.handler_reads()
        run = take()
        run.examined = self.handler_reads() - before - self.status_cost
        return run

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

    def serve(self, record: dict[str, Any]) -> None:
        """The fake peers with the stores and tokens of the generated data set."""
        data = Path(record["peers_file"])
        if data != self.peers_data:
            self.stop_peers()
            self.start_peers(data)
            self.peers_data = data

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
        """The window's USED rows in member order, bounded to the window's ids, over TCP."""
        start, end = expected["window"]
        first, last = expected["window_ids"]
        query = (
            "SELECT member_id, store_id, created_at FROM coupon_histories"
            f" WHERE coupon_status = 'USED' AND id BETWEEN {first} AND {last}"
            f" AND created_at BETWEEN '{start}' AND '{end}' ORDER BY member_id"
        )
        target = self.settings.database.target
        argv = ["mysql", "--quick", "--protocol=TCP", "-h", target.host, "-P", str(target.port)]
        argv += ["-u", target.user, database, "-e", query]
        env = {**os.environ, "MYSQL_PWD": target.password}
        run = self.examining(lambda: measure(label, argv, env, None))
        run.rate = expected["window_rows"] / run.wall
        return run

    def stats_job(
        self, database: str, expected: dict[str, Any], label: str, read: str = "window"
    ) -> Run:
        day = expected["run_date"]
        baseline = self.history_length(database)
        self.sql(database, "DELETE FROM coupon_usage_stats WHERE aggregated_at = %s", (day,))
        self.wait_for_purge(database, baseline)
        argv = [PYTHON, "-m", "app", "run", "coupon-usage-stats", "--run-date", day]
        env = {**self.job_env(database), "STATS_READ": read}
        run = self.examining(lambda: measure(label, [*argv, "--rerun", "--quiet"], env, None))
        run.rate = expected["window_rows"] / run.wall
        run.job = self.job_seconds(database, execution_of(label))
        ((rows, members, digest),) = self.sql(
            database,
            "SELECT COUNT(*), COUNT(DISTINCT member_id),"
            " SUM(CRC32(CONCAT_WS(',', member_id, top_dong, top_hour))) FROM coupon_usage_stats"
            " WHERE aggregated_at = %s",
            (day,),
        )
        run.digest = (int(rows), int(digest or 0))
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
        env = self.job_env(database)
        run = self.examining(lambda: measure(label, [*argv, "--rerun", "--quiet"], env, None))
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
    window: int | None = None  # the window's rows: stats, all statuses; fan-out, the 3 days'
    detail: str = ""  # printed below the table

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
    def examined(self) -> float:
        return self.median(lambda r: r.examined) or 0.0

    @property
    def problems(self) -> list[str]:
        return [p for r in self.runs for p in r.problems]


def print_table(rows: list[Row], header: list[str]) -> None:
    print()
    for line in header:
        print(line)
    print()
    print(
        f"{'':<52} {'wall s':>7} {'own s':>7} {'CPU s':>6} {'rate':>15} {'peak RSS':>9}"
        f" {'examined':>11} {'x':>6} {'ratio':>6}  {'target':<34} {'checks'}"
    )
    for row in rows:
        own = row.median(lambda r: r.job)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        met = "" if row.met is None else (" met" if row.met else " MISSED")
        checks = "ok" if not row.problems else "FAILED: " + "; ".join(dict.fromkeys(row.problems))
        disturbed = sum(1 for r in row.runs if r.notes)
        if disturbed:
            checks += f" ({disturbed} run(s) with a broker outage: see below)"
        examined = row.median(lambda r: r.examined)
        times = f"{examined / row.window:.2f}" if examined is not None and row.window else ""
        print(
            f"{row.case:<52} {row.wall:>7.2f} {'' if own is None else f'{own:.2f}':>7}"
            f" {row.median(lambda r: r.cpu) or 0:>6.1f}"
            f" {row.rate:>9,.0f} {row.unit:<5} {row.rss:>6.0f} MB"
            f" {'' if examined is None else f'{examined:,.0f}':>11} {times:>6} {ratio:>6}"
            f"  {(row.target + met):<34} {checks}"
        )
    print()
    for row in rows:
        walls = ", ".join(f"{r.wall:.2f}" for r in row.runs)
        rss = ", ".join(f"{r.rss_mb:.0f}" for r in row.runs)
        examined = ", ".join(f"{r.examined:,}" for r in row.runs if r.examined is not None)
        notes = "; ".join(
            f"run {i + 1}: {', '.join(r.notes)}" for i, r in enumerate(row.runs) if r.notes
        )
        print(
            f"  {row.case}: wall {walls} s; RSS {rss} MB; examined {examined}"
            + (f"; {row.detail}" if row.detail else "")
            + (f"; {notes}" if notes else "")
        )


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
    parser.add_argument("--histories", type=int, default=10_000_000)
    parser.add_argument("--history-days", type=int, default=400)
    parser.add_argument("--month-histories", type=int, default=2_000_000)
    parser.add_argument(
        "--fanout-members", type=int, default=60_000, help="the publishing benchmark's"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians reported")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run this part (repeatable); default: all of them",
    )
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--window", type=int, default=1000, help="unconfirmed messages")
    parser.add_argument(
        "--memory-runs", type=int, default=10, help="stats runs in one process (full: 60)"
    )
    parser.add_argument("--memory-histories", type=int, default=900_000, help="its window's")
    args = parser.parse_args()
    if shutil.which("mysql") is None:
        parser.error("the mysql command-line client is needed for the stats floor")
    if args.history_days % GROWTH_FACTOR or args.history_days // GROWTH_FACTOR <= 20:
        parser.error(f"--history-days must be a multiple of {GROWTH_FACTOR}, over 100")
    parts = args.only or list(PARTS)

    # The image runs from the bytecode pip compiled when it installed the package; a
    # checkout under PYTHONDONTWRITEBYTECODE (set on the development machines) would
    # compile the app's modules again in every run, 25-35 ms of each job's start-up.
    compileall.compile_dir(ROOT / "app", quiet=1)
    bench = Bench(args)
    started = time.monotonic()
    year = ["--histories", str(args.histories), "--history-days", str(args.history_days)]
    record = bench.generate(args.database, year)
    plan, expected = record["plan"], record["expected"]
    stats, fanout = expected["stats"], expected["fanout"]
    loads = [f"start {load()}"]
    rows: list[Row] = []
    bench.serve(record)
    try:
        bench.prepare_vhost()
        if "stats" in parts:
            rows += stats_rows(bench, args, stats)
            loads.append(f"after stats {load()}")
        if "growth" in parts:
            rows += growth_rows(bench, args, rows)
            loads.append(f"after growth {load()}")
        if "sparse" in parts:
            rows += sparse_rows(bench, args)
            loads.append(f"after sparse {load()}")
        if "month" in parts:
            rows += month_rows(bench, args)
            loads.append(f"after month {load()}")
        if "fanout" in parts:
            rows += fanout_rows(bench, args, record)
            loads.append(f"after fan-out {load()}")
        if "memory" in parts:
            rows.append(memory_row(bench, args))
            loads.append(f"after memory {load()}")
    finally:
        bench.stop_peers()
        bench.purge("the end")

    header = [
        f"couponpop-batch benchmarks, {datetime.now():%Y-%m-%d %H:%M}, {machine()}",
        f"data: {plan['histories']:,} histories over {plan['history_days']} days (ids in time"
        f" order +-5 min), {plan['members']:,} members, {plan['stores']:,} stores, "
        f"{plan['dongs']} dongs; the window: {stats['window_all_rows']:,} rows, "
        f"{stats['window_rows']:,} USED; fan-out (y) (g): {fanout['stats_rows']:,}"
        f" coupon_usage_stats rows, daily for {plan['stats_days']} days before the window,"
        f" {fanout['target_members']:,} members at {fanout['run_date']}"
        f" {fanout['target_hour']:02d}:00 -> {fanout['messages']:,} messages;"
        f" (c) (d) (e): the month data set's fan-out; medians of {args.repeat};"
        f" {time.monotonic() - started:.0f} s in all",
        "load average (1/5/15 min): " + "; ".join(loads),
        database_server(bench),
        "own s: the job's START..END in BATCH_JOB_EXECUTION (floor (c): publishing alone);"
        " CPU s: the child's user+system; ratios use wall s (rates: (c) own s, (d) (e) wall s);"
        " examined: Handler_read_rnd_next + Handler_read_next (GLOBAL), x: to the window's rows",
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
                        "examined": r.examined,
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


def same_rows(reference: Row, *others: Row) -> None:
    """Every stats run wrote the same rows as the first run of `reference`."""
    digests = [r.digest for r in reference.runs if r.digest is not None]
    for row in others:
        for run in row.runs:
            if digests and run.digest is not None and run.digest != digests[0]:
                run.problems.append(f"rows differ from {reference.case}: {run.digest}")


def stats_rows(bench: Bench, args: argparse.Namespace, stats: dict[str, Any]) -> list[Row]:
    a, b, full = [], [], []
    for i in range(args.repeat):
        say(f"stats: run {i + 1} of {args.repeat}")
        a.append(bench.stats_floor(args.database, stats, f"stats-floor-{i}"))
        b.append(bench.stats_job(args.database, stats, f"stats-job-{i}"))
        full.append(bench.stats_job(args.database, stats, f"stats-job-full-{i}", read="full"))
    window = stats["window_all_rows"]
    floor = Row(f"(a) stats floor: mysql --quick, {stats['window_rows']:,} rows", a, "row/s")
    floor.ratio, floor.window = 1.0, window
    job = Row("(b) stats job (CLI)", b, "row/s", window=window)
    job.ratio = job.wall / floor.wall
    examined = job.examined / window
    job.target = (
        f"<= {STATS_MAX_RATIO}x, examined {examined:.2f}x <= {STATS_MAX_EXAMINED}x,"
        f" <= {STATS_MAX_RSS_MB} MB"
    )
    job.met = (
        job.ratio <= STATS_MAX_RATIO
        and examined <= STATS_MAX_EXAMINED
        and job.rss <= STATS_MAX_RSS_MB
    )
    job.detail = bench.replay_read(args.database, stats, "window")
    scan = Row("(b full) stats job, STATS_READ=full", full, "row/s", window=window)
    scan.detail = bench.replay_read(args.database, stats, "full")
    scan.ratio = scan.wall / floor.wall
    scan.target = "the same rows as (b)"
    same_rows(scan, job)
    return [floor, job, scan]


def growth_rows(bench: Bench, args: argparse.Namespace, rows: list[Row]) -> list[Row]:
    """History growth: (b) against the same window under a fifth of the history. Window
    growth: five times the window's rows in as many rows as (b)'s, against (b)."""
    base = next((r for r in rows if r.case.startswith("(b) ")), None)
    base_floor = next((r for r in rows if r.case.startswith("(a) ")), None)
    if base is None:
        raise SystemExit("--only growth needs --only stats too: it compares with (b)")
    days, histories = args.history_days, args.histories
    out = []
    cases = (
        ("h", "short", histories // GROWTH_FACTOR, "a fifth of the history, the same window"),
        ("w", "wide", histories, f"{GROWTH_FACTOR}x the window's rows"),
    )
    for key, suffix, count, what in cases:
        database = f"{args.database}_{suffix}"
        options = ["--histories", str(count), "--history-days", str(days // GROWTH_FACTOR)]
        stats = bench.generate(database, [*options, "--fanout-members", "0"])["expected"]["stats"]
        a, b = [], []
        for i in range(args.repeat):
            say(f"growth ({suffix}): run {i + 1} of {args.repeat}")
            a.append(bench.stats_floor(database, stats, f"{suffix}-floor-{i}"))
            b.append(bench.stats_job(database, stats, f"{suffix}-job-{i}"))
        window = stats["window_all_rows"]
        floor = Row(f"({key}) floor, {what}: {stats['window_rows']:,} rows", a, "row/s")
        floor.window = window
        job = Row(f"({key}) stats job, {what}", b, "row/s", window=window)
        job.detail = bench.replay_read(database, stats, "window")
        rss = job.rss / base.rss
        if key == "h":  # (b) has five times this history
            job.ratio = base.wall / job.wall
            job.target = f"(b) / this <= {HISTORY_GROWTH_MAX_TIME}x, RSS x{1 / rss:.2f}"
            job.met = job.ratio <= HISTORY_GROWTH_MAX_TIME and 1 / rss <= GROWTH_MAX_RSS
        else:
            job.ratio = job.wall / base.wall
            job.target = f"this / (b) <= {WINDOW_GROWTH_MAX_TIME}x, RSS x{rss:.2f}"
            job.met = job.ratio <= WINDOW_GROWTH_MAX_TIME and rss <= GROWTH_MAX_RSS
        if base_floor is not None:  # the server's share: the floor's own growth
            floor.ratio = (base_floor.wall if key == "h" else floor.wall) / (
                floor.wall if key == "h" else base_floor.wall
            )
        out += [floor, job]
    return out


def month_record(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """The month shape of issue 6: every row in or near the window, ids in no order; its
    fan-out window for the publishing benchmark."""
    options = ["--shape", "month", "--histories", str(args.month_histories)]
    options += ["--fanout-members", str(args.fanout_members)]
    return bench.generate(f"{args.database}_month", options)


def shape_rows(
    bench: Bench, args: argparse.Namespace, record: dict[str, Any], key: str, shape: str
) -> tuple[Row, Row]:
    """(key) floor and job on the data set `record` describes, alternated, and one run
    with STATS_READ=full whose rows every job run must equal: the floor's row and the
    job's, its ratio to the floor set."""
    database = record["database"]
    bench.serve(record)
    stats = record["expected"]["stats"]
    ((members,),) = bench.sql(
        database,
        "SELECT COUNT(DISTINCT member_id) FROM coupon_histories"
        " WHERE coupon_status = 'USED' AND created_at BETWEEN %s AND %s",
        stats["window"],
    )
    what = f"{shape}: {stats['eligible_members']:,} of {members:,} members"
    a, b = [], []
    for i in range(args.repeat):
        say(f"{shape}: run {i + 1} of {args.repeat}")
        a.append(bench.stats_floor(database, stats, f"{key}-floor-{i}"))
        b.append(bench.stats_job(database, stats, f"{key}-job-{i}"))
    full = [bench.stats_job(database, stats, f"{key}-job-full", read="full")]
    window = stats["window_all_rows"]
    floor = Row(f"({key}) floor, {shape}: {stats['window_rows']:,} rows", a, "row/s")
    floor.ratio, floor.window = 1.0, window
    job = Row(f"({key}) stats job, {what}", b, "row/s", window=window)
    job.detail = bench.replay_read(database, stats, "window")
    job.ratio = job.wall / floor.wall
    same_rows(Row("STATS_READ=full", full, "row/s"), job)
    return floor, job


def sparse_rows(bench: Bench, args: argparse.Namespace) -> list[Row]:
    """(s): issue 30's sparse shape, production's history and most members of the
    window occasional: member by member costs show."""
    options = ["--shape", "sparse", "--histories", str(args.histories), "--fanout-members", "0"]
    database = f"{args.database}_sparse"
    record = {**bench.generate(database, options), "database": database}
    floor, job = shape_rows(bench, args, record, "s", "sparse")
    job.target = f"<= {SPARSE_MAX_RATIO}x, the same rows as STATS_READ=full"
    job.met = job.ratio <= SPARSE_MAX_RATIO
    return [floor, job]


def month_rows(bench: Bench, args: argparse.Namespace) -> list[Row]:
    """(m): the month shape, issue 30's crowded month at the default 2M rows."""
    record = {**month_record(bench, args), "database": f"{args.database}_month"}
    floor, job = shape_rows(bench, args, record, "m", "month")
    job.target = f"<= {MONTH_MAX_RATIO}x, the same rows as STATS_READ=full"
    job.met = job.ratio <= MONTH_MAX_RATIO
    return [floor, job]


def fanout_rows(bench: Bench, args: argparse.Namespace, year: dict[str, Any]) -> list[Row]:
    """(c) (d) (e): the publishing of issue 6, on the month data set's fan-out window (the
    most messages); (y) (g): the job on a year of daily rows, with and without V003."""
    record = month_record(bench, args)
    database, fanout = f"{args.database}_month", record["expected"]["fanout"]
    bench.serve(record)
    found = bench.sql(
        database,
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
        d.append(bench.fanout_job(database, fanout, f"fanout-job-{i}"))
        bench.control(latency_ms=args.latency_ms)
        try:
            e.append(bench.fanout_job(database, fanout, f"fanout-job-latency-{i}"))
        finally:
            bench.control(latency_ms=0)
    messages = f"{fanout['messages']:,} messages"
    floor = Row(f"(c) fan-out floor: bare aiormq, {messages}", c, "msg/s")
    floor.ratio = 1.0
    job = Row("(d) fan-out job (CLI)", d, "msg/s", window=fanout["window_rows"])
    job.ratio = job.rate / floor.rate
    job.target = f">= {FANOUT_MIN_RATIO}x floor rate"
    job.met = job.ratio >= FANOUT_MIN_RATIO
    slow = Row(f"(e) fan-out job, peers answering in {args.latency_ms:g} ms", e, "msg/s")
    slow.ratio = slow.rate / floor.rate
    drop = 1 - slow.rate / job.rate
    slow.target = f"drop {drop:.0%} < {LATENCY_MAX_DROP:.0%}"
    slow.met = drop < LATENCY_MAX_DROP
    return [floor, job, slow, *year_fanout_rows(bench, args, year)]


def fanout_read_alone(bench: Bench, database: str, fanout: dict[str, Any], label: str) -> str:
    """The fan-out job's read query alone, streamed by `mysql --quick`: wall s, examined."""
    start, end = stats_window(datetime.fromisoformat(fanout["run_date"]).date())
    literals = (f"'{start.isoformat()}'", f"'{end.isoformat()}'", str(fanout["target_hour"]))
    query = _LATEST_STATS.format(after="").replace("%s", "{}").format(*literals)
    target = bench.settings.database.target
    argv = ["mysql", "--quick", "--protocol=TCP", "-h", target.host, "-P", str(target.port)]
    argv += ["-u", target.user, database, "-e", query]
    env = {**os.environ, "MYSQL_PWD": target.password}
    run = bench.examining(lambda: measure(label, argv, env, None))
    return f"its read alone (mysql --quick): {run.wall:.2f} s, examined {run.examined:,}"


def explain_fanout_read(bench: Bench, database: str, fanout: dict[str, Any]) -> str:
    """How the server reads coupon_usage_stats for the fan-out job's window."""
    start, end = stats_window(datetime.fromisoformat(fanout["run_date"]).date())
    sql = _LATEST_STATS.format(after="")
    plan = bench.sql(database, "EXPLAIN " + sql, (start, end, fanout["target_hour"]))
    inner = [row for row in plan if row[2] == "coupon_usage_stats" and row[3] != "eq_ref"]
    return "; ".join(f"type {r[3]}, key {r[5]}, rows ~{int(r[8]):,}" for r in inner)


def year_fanout_rows(bench: Bench, args: argparse.Namespace, record: dict[str, Any]) -> list[Row]:
    """(y): the fan-out job on a year of daily coupon_usage_stats rows; (g): the same
    without migration V003's index (production's database may lack it), then rebuilt."""
    database, fanout = args.database, record["expected"]["fanout"]
    bench.serve(record)
    y, g = [], []
    with_index = explain_fanout_read(bench, database, fanout)
    alone = fanout_read_alone(bench, database, fanout, "fanout-year-read")
    for i in range(args.repeat):
        say(f"fan-out on a year of rows: run {i + 1} of {args.repeat}")
        y.append(bench.fanout_job(database, fanout, f"fanout-year-{i}"))
    bench.sql(database, f"ALTER TABLE coupon_usage_stats DROP INDEX {V003_INDEX}")
    try:
        without = explain_fanout_read(bench, database, fanout)
        alone_without = fanout_read_alone(bench, database, fanout, "fanout-year-read-noindex")
        for i in range(args.repeat):
            say(f"fan-out on a year of rows without the index: run {i + 1} of {args.repeat}")
            g.append(bench.fanout_job(database, fanout, f"fanout-year-noindex-{i}"))
    finally:
        started = time.perf_counter()
        bench.sql(
            database,
            f"ALTER TABLE coupon_usage_stats ADD INDEX {V003_INDEX} (aggregated_at, member_id)",
        )
        rebuilt = time.perf_counter() - started
    rows = f"{fanout['stats_rows'] / 1e6:.1f}M rows"
    job = Row(f"(y) fan-out job, a year: {rows}", y, "msg/s", window=fanout["window_rows"])
    job.target = f"EXPLAIN {with_index}"
    job.detail = alone
    bare = Row("(g) (y) without the V003 index", g, "msg/s", window=fanout["window_rows"])
    bare.ratio = bare.wall / job.wall
    bare.target = f"(g) / (y); EXPLAIN {without}; index rebuilt in {rebuilt:.0f} s"
    bare.detail = alone_without
    return [job, bare]


def memory_row(bench: Bench, args: argparse.Namespace) -> Row:
    """(r): the stats job run again and again in one process; RSS after each run."""
    database = f"{args.database}_memory"
    options = ["--shape", "month", "--histories", str(args.memory_histories)]
    record = bench.generate(database, [*options, "--fanout-members", "0"])
    bench.serve(record)
    stats = record["expected"]["stats"]
    say(f"memory: {args.memory_runs} stats runs in one process")
    out = LOGS / "memory.jsonl"
    argv = [PYTHON, str(ROOT / "scripts" / "bench_memory.py"), "--run-date", stats["run_date"]]
    run = measure("memory", [*argv, "--runs", str(args.memory_runs)], bench.job_env(database), out)
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    run.problems += [f"run {r['run']}: {r['status']}" for r in runs if r["status"] != "COMPLETED"]
    if len(runs) < args.memory_runs:
        run.problems.append(f"{len(runs)} of {args.memory_runs} runs reported")
    rss = {r["run"]: r["rss_mb"] for r in runs}
    row = Row(f"(r) stats job x{args.memory_runs} in one process", [run], "row/s")
    row.window = stats["window_all_rows"]
    run.rate = stats["window_rows"] * len(runs) / run.wall
    if rss:
        growth = rss[max(rss)] - rss[min(rss)]
        row.target = f"RSS +{growth:.0f} MB <= +{MEMORY_MAX_GROWTH_MB} MB"
        row.met = growth <= MEMORY_MAX_GROWTH_MB
        shown = sorted({n for n in MEMORY_REPORTED_RUNS if n in rss} | {max(rss)})
        row.detail = "RSS after run " + ", ".join(f"{n}: {rss[n]:.1f} MB" for n in shown)
        row.detail += f"; every run: {' '.join(f'{rss[n]:.0f}' for n in sorted(rss))}"
    return row


if __name__ == "__main__":
    main()
