"""`python -m app` as an operator meets it (issue 28, item 6): no secret demanded where none
is used, an option the job does not take refused, `--help` with defaults and exit codes, a
real fan-out left to its moving defaults confirmed, the progress line ended before the next
log line on a terminal, and Ctrl-C past the grace one summary line."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aio_pika
import pytest
from asyncmy.pool import Pool

from app.__main__ import EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE
from app.composition import JOBS
from app.config import Settings
from app.contracts import CONSUMER_QUEUE, EXCHANGE, ROUTING_KEY
from app.devtools.fake_peers import FakePeerControl, FakePeers, run_fake_peers
from app.edges.db import fetch_all
from app.model import Status
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.job import find_job
from tests.integration import rabbit
from tests.integration.test_cli_database_errors import cli as run_cli
from tests.integration.test_fcm_send_job import insert_events, insert_stats
from tests.reliability.support import cli as cli_process
from tests.reliability.support import cli_environment, stats_world, until
from tests.waits import waiting

SEOUL = ZoneInfo("Asia/Seoul")
FANOUT = "coupon-usage-stats-fcm-send"


async def cli(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(list(args), env, cwd)


@dataclass
class Terminal:
    """`python -m app` with stdin and stderr on a pseudo-terminal, as an operator's shell
    runs it: what it wrote there so far, bytes as they came (\\r and escapes included)."""

    process: asyncio.subprocess.Process
    master: int
    written: bytearray = field(default_factory=bytearray)

    @property
    def text(self) -> str:
        return self.written.decode(errors="replace")

    async def until(self, what: str, within: float = 30) -> None:
        """Read until `what` has been written (or the terminal closes)."""
        async with waiting(within, f"{what!r} on the terminal"):
            while what not in self.text:
                chunk = await asyncio.to_thread(self._read)
                if not chunk:
                    raise AssertionError(f"the terminal closed before {what!r}: {self.text!r}")
                self.written += chunk

    def _read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except OSError:  # EIO: the child closed its side
            return b""

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    async def wait(self, within: float = 60) -> int:
        """Its exit code, once everything it wrote has been read."""
        async with waiting(within, "the run's exit, its output read"):
            while chunk := await asyncio.to_thread(self._read):
                self.written += chunk
            return await self.process.wait()


@asynccontextmanager
async def on_a_terminal(env: dict[str, str], cwd: Path, *args: str) -> AsyncIterator[Terminal]:
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args, env=env, cwd=cwd,
        stdin=slave, stdout=asyncio.subprocess.DEVNULL, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    try:
        yield Terminal(process, master)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        os.close(master)


async def executions(pool: Pool) -> list[tuple]:
    return [
        tuple(row)
        for row in await fetch_all(
            pool,
            "SELECT JOB_EXECUTION_ID, STATUS, EXIT_CODE, EXIT_MESSAGE FROM BATCH_JOB_EXECUTION"
            " ORDER BY JOB_EXECUTION_ID",
        )
    ]


# ---- settings: none demanded that the command does not use ------------------------------


async def test_the_commands_on_executions_need_no_token_secret(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """Before: executions, stop and abandon refused to start without JWT_SECRET_KEY, which
    they never use (they read and write the job repository alone)."""
    env = cli_environment(settings)
    del env["JWT_SECRET_KEY"]
    code, out, err = await cli(env, tmp_path, "executions")
    assert (code, err) == (0, "")
    assert out.split()[:2] == ["id", "job"]
    for command in ("stop", "abandon"):
        assert await cli(env, tmp_path, command, "987654") == (
            EXIT_USAGE,
            "",
            "error: no job execution 987654\n",
        )
    # A run signs its calls to the peers: it still needs the key, and says so.
    code, _, err = await cli(env, tmp_path, "run", "coupon-usage-stats", "--run-date", "2025-10-26")
    assert code == EXIT_USAGE
    assert "JWT_SECRET_KEY is required" in err


# ---- migrate --dev-queue: the consumer's queue where no notification service runs -------------


async def test_migrate_declares_the_consumer_queue_where_asked(
    settings: Settings, tmp_path: Path
) -> None:
    """Before: nothing declared it, and nothing said where it comes from; without it, every
    push of a fan-out came back unroutable (issue 28, item 4)."""
    with rabbit.temporary_vhost("dev-queue") as vhost:
        env = cli_environment(settings, RABBITMQ_VHOST=vhost)
        code, out, err = await cli(env, tmp_path, "migrate", "--dev-schema", "--dev-queue")
        assert (code, err) == (0, ""), err
        assert out.splitlines()[-1] == (
            f"consumer queue {CONSUMER_QUEUE} at 127.0.0.1:5672 vhost {vhost!r}: bound to"
            f" {ROUTING_KEY} (0 held)"
        )
        # A message to the exchange with the routing key lands in it (nothing returned).
        async with await aio_pika.connect(rabbit.amqp_url(vhost)) as connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE)
            await exchange.publish(aio_pika.Message(b"{}"), ROUTING_KEY, mandatory=True)
        assert [m.body for m in await rabbit.consume(vhost, until=1)] == [b"{}"]
        assert (await cli(env, tmp_path, "migrate", "--dev-queue"))[:2] == (0, out)

    env = cli_environment(settings, RABBITMQ_PORT=1)
    code, out, err = await cli(env, tmp_path, "migrate", "--dev-queue")
    assert code == EXIT_USAGE
    assert err.startswith("error: the consumer queue at 127.0.0.1:1 vhost '/': ")
    assert err.count("\n") == 1


# ---- the job's options ----------------------------------------------------------------------


async def test_an_option_the_job_does_not_take_is_refused_naming_it(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """Before: `run coupon-usage-stats --target-hour 3` dropped the option without a word
    and ran the job."""
    env = cli_environment(settings)
    args = ("run", "coupon-usage-stats", "--run-date", "2025-10-26", "--target-hour", "3")
    assert await cli(env, tmp_path, *args) == (
        EXIT_USAGE,
        "",
        "error: coupon-usage-stats takes no --target-hour (its options: --run-date, --dry-run)\n",
    )
    assert await executions(pool) == []


async def test_an_option_given_twice_is_refused_naming_it(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """Before: the last of `--run-date A --run-date B` was taken without a word (the API
    refuses a parameter given twice)."""
    env = cli_environment(settings)
    args = ("run", "coupon-usage-stats", "--run-date", "2025-10-26", "--run-date", "2025-10-27")
    code, out, err = await cli(env, tmp_path, *args)
    assert (code, out) == (EXIT_USAGE, "")
    assert err.splitlines()[-1] == (
        "python -m app run: error: argument --run-date: given twice; give it once"
    )
    code, _, err = await cli(
        env, tmp_path, "backfill", "coupon-usage-stats", "--from", "2025-10-01", "--from",
        "2025-10-02", "--to", "2025-10-03",
    )  # fmt: skip
    assert code == EXIT_USAGE
    assert err.splitlines()[-1] == (
        "python -m app backfill: error: argument --from: given twice; give it once"
    )
    assert await executions(pool) == []


async def test_a_completed_instance_is_not_launched_and_the_hint_names_rerun(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """The hint by the refusal's class (before: by the word "completed" in its message)."""
    repository = MariaDbJobRepository(pool, abandon_after_seconds=120)
    spec = find_job(JOBS, "coupon-usage-stats")
    parameters = spec.parse({"runDate": "2025-10-26"}, datetime(2025, 10, 27, 9, 0))
    done = await repository.start_execution(spec.name, parameters, rerun_completed=False)
    await repository.finish_execution(done.id, Status.COMPLETED, "")
    args = ("run", "coupon-usage-stats", "--run-date", "2025-10-26", "--quiet")
    assert await cli(cli_environment(settings), tmp_path, *args) == (
        EXIT_REFUSED,
        "",
        f"not launched: couponUsageStatsJob already completed as execution {done.id}"
        " (use --rerun to run it again)\n",
    )
    assert len(await executions(pool)) == 1


async def test_help_shows_defaults_and_exit_codes(settings: Settings, tmp_path: Path) -> None:
    env = {**cli_environment(settings), "COLUMNS": "200"}
    code, out, _ = await cli(env, tmp_path, "run", "--help")
    assert code == 0
    assert (
        "YYYY-MM-DD (coupon-usage-stats: required; coupon-usage-stats-fcm-send: default today)"
        in out
    )
    assert "0..23 (coupon-usage-stats-fcm-send: default the current hour)" in out
    assert "run a completed instance again (default: exit 3)" in out
    codes = out[out.index("exit codes:") :].splitlines()
    assert [line[2] for line in codes if re.match(r"  \d  ", line)] == ["0", "1", "2", "3", "4"]
    # Ctrl-C: what `test_ctrl_c_while_a_chunk_outlasts_the_grace_is_one_summary_line` sees
    # (before: "stop a run", as if it ended STOPPED)
    assert (
        "  1  FAILED or STOPPED, restartable from its checkpoint; Ctrl-C or SIGTERM interrupt a"
        " run after its chunks in flight (FAILED, exit code INTERRUPTED; past"
        " SHUTDOWN_GRACE_SECONDS it is cancelled)"
    ) in " ".join(line.strip() if line.startswith("     ") else line for line in codes)
    assert "  4  COMPLETED WITH SKIPS" in out
    code, out, _ = await cli(env, tmp_path, "stop", "--help")
    assert code == 0
    assert "  3  not done: the execution's status does not allow it" in out
    code, out, _ = await cli(env, tmp_path, "executions", "--help")
    assert "at most this many (default 20)" in out
    assert "exit codes:" in out


# ---- a real fan-out left to its moving defaults ----------------------------------------------


async def test_a_real_fan_out_without_its_dates_is_refused_off_a_terminal(
    pool: Pool, settings: Settings, tmp_path: Path
) -> None:
    """Before: it pushed for today and the current hour, whatever the hour had become, with
    no question."""
    env = cli_environment(settings, RABBITMQ_PORT=1)  # it must not get as far as the broker
    for given in ((), ("--target-hour", "10"), ("--run-date", "2025-10-25")):
        code, out, err = await cli(env, tmp_path, "run", FANOUT, *given)
        assert (code, out) == (EXIT_USAGE, ""), err
        assert err.startswith(f"error: a real run of {FANOUT} publishes, and --")
        assert err.endswith(" or --yes to run it so\n")
        assert err.count("\n") == 1
    assert await executions(pool) == []


async def test_a_real_fan_out_without_its_dates_asks_on_a_terminal(
    pool: Pool, settings: Settings, tmp_path: Path, queue: str
) -> None:
    async with run_fake_peers({"stores": {}, "tokens": {}}) as fake:
        env = cli_environment(
            settings,
            RABBITMQ_VHOST=queue,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
        )
        async with on_a_terminal(env, tmp_path, "run", FANOUT, "--quiet") as terminal:
            await terminal.until("[y/N] ")
            terminal.type("n")
            assert await terminal.wait() == EXIT_REFUSED
        assert "not launched: coupon-usage-stats-fcm-send not confirmed" in terminal.text
        args = ("run", FANOUT, "--run-date", "2025-13-01")  # a bad date: no question
        async with on_a_terminal(env, tmp_path, *args) as terminal:
            assert await terminal.wait() == EXIT_USAGE
        assert terminal.text.startswith("error: runDate: must be a date as YYYY-MM-DD")
        assert await executions(pool) == []

        async with on_a_terminal(env, tmp_path, "run", FANOUT, "--quiet") as terminal:
            await terminal.until("[y/N] ")
            question = re.search(
                r"Send real pushes for (\S+) (\d+):00 \(Asia/Seoul\)\? Not a dry run: it reads"
                r" about 0 members whose latest stats name that hour",
                terminal.text,
            )
            assert question is not None, terminal.text
            terminal.type("y")
            assert await terminal.wait() == 0, terminal.text
    run_date, hour = question[1], question[2]
    now = datetime.now(SEOUL)
    assert run_date in {now.date().isoformat(), (now.replace(hour=0)).date().isoformat()}
    # It ran what the question named, given explicitly: not what the clock said later.
    (parameters,) = await fetch_all(
        pool,
        "SELECT GROUP_CONCAT(CONCAT(PARAMETER_NAME, '=', PARAMETER_VALUE) ORDER BY"
        " PARAMETER_NAME) FROM BATCH_JOB_EXECUTION_PARAMS",
    )
    assert parameters == (f"dryRun=false,runDate={run_date},targetHour={hour}",)


async def test_a_fan_out_s_summary_counts_the_messages_it_published(
    pool: Pool, settings: Settings, tmp_path: Path, queue: str
) -> None:
    """Before: "written 1" for a member with two push tokens, two messages published."""
    await insert_stats(pool, [(101, "노량진동", 10, "2025-10-25")])
    await insert_events(pool, [(1, "2025-10-25 09:00:00", "2025-10-25 11:00:00", 100, 0)])
    peers = {"stores": {"1": "노량진동"}, "tokens": {"101": ["token-101-a", "token-101-b"]}}
    async with run_fake_peers(peers) as fake:
        env = cli_environment(
            settings,
            RABBITMQ_VHOST=queue,
            STORE_SERVICE_URL=fake.store_url,
            NOTIFICATION_SERVICE_URL=fake.notification_url,
        )
        args = ("--run-date", "2025-10-25", "--target-hour", "10", "--quiet")
        code, _, err = await cli(env, tmp_path, "run", FANOUT, *args)
    assert code == 0, err
    assert re.search(
        r"^couponUsageStatsFcmSendJob execution \d+: COMPLETED; read 1, written 1, filtered 0,"
        r" skipped 0; messages published 2, confirmed 2$",
        err,
        re.MULTILINE,
    ), err
    assert len(await rabbit.consume(queue, until=2)) == 2


# ---- what the terminal shows while a run goes on ---------------------------------------------


@pytest.fixture
async def slow_store(pool: Pool) -> AsyncIterator[FakePeers]:
    """40 members of the stats world, each chunk waiting on the store service."""
    world = stats_world(40)
    await world.load(pool)
    async with run_fake_peers(world.peer_data(), control=FakePeerControl()) as fake:
        yield fake


def stats_run(settings: Settings, store: FakePeers, **env: object) -> dict[str, str]:
    """The environment of a stats run of 5 members a chunk against `store`."""
    return cli_environment(
        settings,
        STORE_SERVICE_URL=store.store_url,
        NOTIFICATION_SERVICE_URL=store.notification_url,
        CHUNK_SIZE=5,
        **env,
    )


async def test_the_progress_line_is_ended_before_the_next_log_line(
    settings: Settings, tmp_path: Path, slow_store: FakePeers
) -> None:
    """Before: the next log line ("job finished") went on after the progress line, on the
    same line of the terminal."""
    slow_store.control.update({"latency_ms": 700})
    env = stats_run(settings, slow_store, ENRICH_WORKERS=1)
    args = ("run", "coupon-usage-stats", "--run-date", "2025-10-26")
    async with on_a_terminal(env, tmp_path, *args) as terminal:
        assert await terminal.wait() == 0, terminal.text
    lines = terminal.text.replace("\r\n", "\n").split("\n")
    progress = [line for line in lines if "items/s" in line]
    assert progress, terminal.text  # it ran long enough to show some
    # Each progress line is drawn in place (\r ... erase to its end), alone on its line.
    for line in progress:
        assert re.fullmatch(r"(\rread [\d,]+  written .* items/s\x1b\[K)+", line), repr(line)
    finished = [line for line in lines if "job finished" in line]
    assert len(finished) == 1 and re.match(r"\d{4}-\d\d-\d\dT", finished[0]), terminal.text
    assert re.match(r"couponUsageStatsJob execution \d+: COMPLETED; read 40,", lines[-2])


async def test_a_stopped_run_s_summary_gives_its_committed_counts(
    pool: Pool, settings: Settings, tmp_path: Path, slow_store: FakePeers
) -> None:
    """Before: its live counts, with the chunks read but never processed (read 13,000 for
    8,000 written or filtered), unlike `executions` and the API."""
    slow_store.control.update({"latency_ms": 1500})
    env = stats_run(settings, slow_store, ENRICH_WORKERS=1, QUEUE_SIZE=4)
    log = tmp_path / "run.log"
    args = ("run", "coupon-usage-stats", "--run-date", "2025-10-26")
    async with cli_process(args, env, log) as process:

        async def committed() -> bool:
            rows = await fetch_all(pool, "SELECT COMMIT_COUNT FROM BATCH_STEP_EXECUTION")
            return bool(rows and rows[0][0])

        await until(committed, within=30, what="a chunk committed")
        process.process.send_signal(signal.SIGINT)
        assert await process.wait(60) == EXIT_FAILED, process.log_text()
    [(execution, status, code, message)] = await executions(pool)
    ((read, written, filtered),) = await fetch_all(
        pool, "SELECT READ_COUNT, WRITE_COUNT, FILTER_COUNT FROM BATCH_STEP_EXECUTION"
    )
    assert status != "COMPLETED" and 0 < read < 40
    summaries = [
        line for line in process.log_text().splitlines() if line.startswith("couponUsageStatsJob ")
    ]
    assert summaries == [
        f"couponUsageStatsJob execution {execution}: {code}; read {read}, written {written},"
        f" filtered {filtered}, skipped 0; {message}"
    ]


async def test_a_dry_run_of_the_stats_job_prints_its_rows_and_stores_nothing(
    pool: Pool, settings: Settings, tmp_path: Path, slow_store: FakePeers
) -> None:
    """Before: `--dry-run` of the stats job ran it for real: its rows stored, the run
    date's instance COMPLETED (issue 26)."""
    world = stats_world(40)
    args = ("run", "coupon-usage-stats", "--run-date", "2025-10-26", "--dry-run", "--quiet")
    code, out, err = await cli(stats_run(settings, slow_store), tmp_path, *args)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"member_id": m, "top_dong": d, "top_hour": h, "aggregated_at": "2025-10-26"}
        for m, d, h, _ in world.expected
    ]
    assert await fetch_all(pool, "SELECT COUNT(*) FROM coupon_usage_stats") == [(0,)]
    assert re.search(r"^couponUsageStatsJob dry run \d+: COMPLETED; read 40,", err, re.M), err
    [(_, status, _, _)] = await executions(pool)
    (parameters,) = await fetch_all(
        pool,
        "SELECT GROUP_CONCAT(PARAMETER_NAME ORDER BY PARAMETER_NAME) FROM"
        " BATCH_JOB_EXECUTION_PARAMS WHERE IDENTIFYING = 'Y'",
    )
    assert (status, parameters) == ("COMPLETED", ("dryRun,run.id,runDate",))


async def test_ctrl_c_while_a_chunk_outlasts_the_grace_is_one_summary_line(
    pool: Pool, settings: Settings, tmp_path: Path, slow_store: FakePeers
) -> None:
    """Before: a 46-line CancelledError traceback, and no summary line."""
    slow_store.control.update({"latency_ms": 20_000})  # every chunk in flight for 20 s
    env = stats_run(settings, slow_store, SHUTDOWN_GRACE_SECONDS=0.5)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "run", "coupon-usage-stats", "--run-date", "2025-10-26",
            env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip
    try:

        async def store_called() -> bool:
            return bool(slow_store.calls)

        await until(store_called, within=30, what="its chunks wait on the store service")
        process.send_signal(signal.SIGINT)
        async with waiting(30, "the run's exit after SIGINT"):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.read_text(encoding="utf-8")
    assert code == EXIT_FAILED, text
    assert "Traceback" not in text and "CancelledError" not in text
    [(execution, status, code, message)] = await executions(pool)
    # what the cancellation recorded, as `run --help` says of exit code 1
    assert (status, code) == ("FAILED", "INTERRUPTED"), message
    summaries = [line for line in text.splitlines() if line.startswith("couponUsageStatsJob ")]
    assert summaries == [
        f"couponUsageStatsJob execution {execution}: {code}; read 0, written 0, filtered 0,"
        f" skipped 0; {message}"
    ], text
