"""Command line: `python -m app migrate | run | serve | executions | stop | restart |
abandon | backfill | token`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from asyncmy.errors import OperationalError

from app.composition import JOBS, CannotListen, open_launcher, serve
from app.config import (
    DATABASE_SETTINGS,
    LOG_SETTINGS,
    ConfigError,
    Settings,
    load_settings,
)
from app.edges.auth import TOKEN_LIFETIME_SECONDS, mint_token
from app.edges.db import DatabaseUnavailable, connect_error_line, open_pool
from app.logs import configure_logging
from app.model import (
    COMPLETED_WITH_SKIPS,
    RUNNING,
    JobExecution,
    LaunchRefused,
    Status,
)
from app.pipeline.chunk import StepProgress
from app.repository import JobRepository
from app.runtime.job import declared_parameters, find_job
from app.runtime.launcher import Launcher, RunningJob
from app.runtime.memory import tune_gc
from app.runtime.operator import JobOperator, NoSuchExecution, NotRestartable, Refused
from app.runtime.parameters import BOOLEAN, DRY_RUN, ParameterError, backfill_dates
from app.runtime.signals import stop_signals
from app.schema.migrate import MigrationDenied, migrate

log = logging.getLogger("app")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_SKIPPED = 4  # COMPLETED WITH SKIPS: the run ended, but some items were not done


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    migrate_cmd = commands.add_parser("migrate", help="apply the schema migrations")
    migrate_cmd.add_argument(
        "--dev-schema",
        action="store_true",
        help="also create the peer-owned tables (local work and tests only)",
    )

    run = commands.add_parser("run", help="run one job in the foreground")
    run.add_argument("job", choices=sorted(spec.path for spec in JOBS))
    for parameter, jobs in declared_parameters(JOBS).values():
        only = "" if len(jobs) == len(JOBS) else f" ({', '.join(spec.path for spec in jobs)})"
        if parameter.type == BOOLEAN:
            run.add_argument(
                parameter.flag, dest=parameter.name, action="store_true", help=parameter.help + only
            )
        else:
            metavar = parameter.flag.removeprefix("--").replace("-", "_").upper()
            run.add_argument(
                parameter.flag, dest=parameter.name, metavar=metavar, help=parameter.help + only
            )
    run.add_argument("--rerun", action="store_true", help="run a completed instance again")
    run.add_argument("--output", help="with --dry-run: a file for the messages (default stdout)")
    run.add_argument(
        "--quiet", action="store_true", help="no live progress line (none with LOG_FORMAT=json)"
    )

    commands.add_parser("serve", help="run the daemon: admin API, metrics, schedules")

    listing = commands.add_parser("executions", help="recent executions of every job")
    listing.add_argument("--status", choices=[status.value for status in Status])
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    for name, text in (
        ("stop", "ask a running execution to stop (on whichever replica runs it)"),
        ("abandon", "mark a STOPPED, FAILED or STOPPING execution ABANDONED (never restarted)"),
        ("restart", "restart a FAILED or STOPPED execution from its checkpoint, here"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("execution", type=int, help="the execution id")
        if name == "restart":
            command.add_argument("--quiet", action="store_true", help="no live progress line")

    backfill = commands.add_parser(
        "backfill", help="run a job for every date of a range, each its own instance"
    )
    backfill.add_argument("job", choices=sorted(spec.path for spec in JOBS if spec.backfills))
    backfill.add_argument("--from", dest="first", required=True, help="YYYY-MM-DD")
    backfill.add_argument("--to", dest="last", required=True, help="YYYY-MM-DD (included)")
    backfill.add_argument("--rerun", action="store_true", help="run completed dates again")

    token = commands.add_parser(
        "token",
        help="print a short-lived admin token for the API and the console (for operators"
        " who hold JWT_SECRET_KEY)",
        description="Mint an ADMIN token of the platform's scheme, signed with"
        " JWT_SECRET_KEY, and print it alone on stdout: TOKEN=$(python -m app token)."
        " For operators who hold the secret: anyone with it can mint any token.",
    )
    token.add_argument(
        "--ttl", default="15m", help="lifetime, such as 90s, 15m or 1h (default 15m, at most 1h)"
    )
    token.add_argument(
        "--sub", default="operator", help="who the token names (the API logs it as by=NAME)"
    )
    return parser


def _given_parameters(args: argparse.Namespace) -> dict[str, str]:
    """The parameters given on the command line, as the API takes them (a flag: true)."""
    given = {name: getattr(args, name) for name in declared_parameters(JOBS)}
    return {name: "true" if value is True else value for name, value in given.items() if value}


_TTL = re.compile(r"(\d+)([smh])")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600}


def _ttl_seconds(text: str) -> int:
    """`90s`, `15m`, `1h` in seconds; ValueError unless within 1 s .. the platform's hour."""
    match = _TTL.fullmatch(text.strip())
    seconds = int(match[1]) * _TTL_UNITS[match[2]] if match else 0
    if not 0 < seconds <= TOKEN_LIFETIME_SECONDS:
        raise ValueError(
            f"--ttl expects a lifetime such as 90s, 15m or 1h, at most 1h (got {text!r})"
        )
    return seconds


def _say(settings: Settings, text: str, level: int = logging.INFO) -> None:
    """The CLI's own lines on stderr: plain text, or log records where the logs are JSON
    (a log pipeline reading stderr parses every line)."""
    if settings.LOG_FORMAT == "json":
        log.log(level, text)
    else:
        print(text, file=sys.stderr)


async def _migrate(settings: Settings, dev_schema: bool) -> int:
    async with open_pool(settings.database) as pool:
        try:
            applied = await migrate(pool, dev_schema=dev_schema)
        except MigrationDenied as exc:
            _say(settings, f"error: {exc}", logging.ERROR)
            return EXIT_USAGE
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


async def _show_progress(progress: StepProgress, out: TextIO) -> None:
    """One line a second: a rewritten line on a terminal, plain lines otherwise."""
    live = out.isatty()
    while True:
        await asyncio.sleep(1.0)
        line = (
            f"read {progress.read:,}  written {progress.written:,}  filtered {progress.filtered:,}"
            f"  skipped {progress.skipped:,}  {progress.rate():,.0f} items/s"
        )
        out.write(f"\r{line}   " if live else f"{line}\n")
        out.flush()


async def _run(settings: Settings, args: argparse.Namespace, output: TextIO | None) -> int:
    raw = _given_parameters(args)
    spec = find_job(JOBS, args.job)
    publishes = spec.publishes and raw.get(DRY_RUN) != "true"
    async with open_launcher(settings, broker=publishes) as launcher:
        try:
            run = await JobOperator.of(launcher).start(
                spec.path, raw, rerun=args.rerun, dry_run_output=output
            )
        except ParameterError as exc:
            _say(settings, f"error: {exc}", logging.ERROR)
            return EXIT_USAGE
        except LaunchRefused as exc:
            hint = " (use --rerun to run it again)" if "completed" in str(exc) else ""
            _say(settings, f"not launched: {exc}{hint}", logging.WARNING)
            return EXIT_REFUSED
        return await _follow(settings, launcher, run, quiet=args.quiet)


async def _follow(settings: Settings, launcher: Launcher, run: RunningJob, *, quiet: bool) -> int:
    """Wait for the run with live progress; its last line; its exit code."""
    assert run.task is not None
    progress = None
    if not quiet and settings.LOG_FORMAT == "text":
        progress = asyncio.create_task(_show_progress(run.progress, sys.stderr))
    try:
        await _until_done_or_signal(launcher, [run.task], settings.SHUTDOWN_GRACE_SECONDS)
    finally:
        if progress is not None:
            progress.cancel()
            sys.stderr.write("\n")
    final = await launcher.repository.get_execution(run.execution.id)
    assert final is not None
    counts = run.progress
    kind = "dry run" if final.dry_run else "execution"
    _say(
        settings,
        f"{run.spec.name} {kind} {final.id}: {final.exit_code}; read {counts.read:,}, "
        f"written {counts.written:,}, filtered {counts.filtered:,}, skipped {counts.skipped:,}"
        + (f"; {final.exit_message}" if final.exit_message else ""),
        logging.INFO if final.status == Status.COMPLETED else logging.WARNING,
    )
    return _exit_code(final)


def _exit_code(execution: JobExecution) -> int:
    if execution.status != Status.COMPLETED:
        return EXIT_FAILED
    return EXIT_SKIPPED if execution.exit_code == COMPLETED_WITH_SKIPS else 0


async def _restart(settings: Settings, execution_id: int, quiet: bool) -> int:
    async with open_launcher(settings, broker=True) as launcher:
        try:
            run = await JobOperator.of(launcher).restart(execution_id)
        except LookupError as exc:
            _say(settings, f"error: {exc}", logging.ERROR)
            return EXIT_USAGE
        except (NotRestartable, LaunchRefused) as exc:
            _say(settings, f"not restarted: {exc}", logging.WARNING)
            return EXIT_REFUSED
        return await _follow(settings, launcher, run, quiet=quiet)


async def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    """Every date its own instance, MAX_RUNNING_EXECUTIONS at a time; one summary."""
    try:
        days = backfill_dates(args.first, args.last)  # checked before connecting
    except ParameterError as exc:
        _say(settings, f"error: {exc}", logging.ERROR)
        return EXIT_USAGE
    spec = find_job(JOBS, args.job)
    outcomes: list[tuple[str, str, int]] = []  # run date, what became of it, exit code
    async with open_launcher(settings, broker=False) as launcher:
        runs, refusals = await JobOperator.of(launcher).backfill(
            spec.path, args.first, args.last, {}, rerun=args.rerun
        )
        for day, refusal in refusals:
            outcomes.append((day.isoformat(), f"not launched: {refusal}", EXIT_REFUSED))
        tasks = [run.task for _, run in runs if run.task is not None]
        await _until_done_or_signal(launcher, tasks, settings.SHUTDOWN_GRACE_SECONDS)
        for day, run in runs:
            final = await launcher.repository.get_execution(run.execution.id)
            assert final is not None
            line = f"execution {final.id} {final.exit_code}"
            line += f"; {final.exit_message}" if final.exit_message else ""
            outcomes.append((day.isoformat(), line, _exit_code(final)))
    outcomes.sort()
    print(f"{spec.name} backfill {args.first}..{args.last}: {len(days)} dates")
    for run_date, line, _ in outcomes:
        print(f"  {run_date}  {line}")
    codes = {code for _, _, code in outcomes}
    # the worst first: failed or stopped, not launched, completed with skips
    return next((code for code in (EXIT_FAILED, EXIT_REFUSED, EXIT_SKIPPED) if code in codes), 0)


async def _executions(settings: Settings, status: str | None, limit: int) -> int:
    async with open_pool(settings.database) as pool:
        repository = JobRepository(pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS)
        executions = await JobOperator(repository).executions(
            status=status, limit=max(1, min(limit, 100))
        )
    tz = settings.timezone
    counts_title = "read/written/filtered/skipped"
    print(
        f"{'id':>7}  {'job':<27}  {'exit code':<20}  {'start':<19}  {counts_title:<29}  parameters"
    )
    for e in executions:
        start = e.start_time.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if e.start_time else "-"
        counts = "/".join(
            str(sum(getattr(s, f"{what}_count") for s in e.steps))
            for what in ("read", "write", "filter", "skip")
        )
        parameters = " ".join(
            f"{k}={v}" for k, v in e.parameters.items() if k not in ("dryRun", "run.id")
        )
        exit_code = e.exit_code if e.status not in RUNNING else e.status.value
        print(
            f"{e.id:>7}  {e.job_name:<27}  {exit_code:<20}  {start:<19}  {counts:<29}  "
            f"{parameters}{' (dry run)' if e.dry_run else ''}"
            + (f"  {e.exit_message[:120]}" if e.exit_message else "")
        )
    return 0


async def _operate(settings: Settings, action: str, execution_id: int) -> int:
    """stop or abandon, through the job repository (any replica's runner obeys)."""
    async with open_pool(settings.database) as pool:
        repository = JobRepository(pool, abandon_after_seconds=settings.JOB_ABANDON_AFTER_SECONDS)
        operator = JobOperator(repository)
        try:
            if action == "stop":
                found = await operator.stop(execution_id)
            else:
                found = await operator.abandon(execution_id)
        except NoSuchExecution as exc:
            _say(settings, f"error: {exc}", logging.ERROR)
            return EXIT_USAGE
        except Refused as exc:
            _say(settings, f"not done: execution {execution_id} is {exc.status}", logging.WARNING)
            return EXIT_REFUSED
    if action == "stop":
        _say(
            settings,
            f"stop requested: execution {execution_id} was {found}; it ends STOPPED"
            " after the chunks it is processing, at its next chunk commit",
        )
    else:
        _say(settings, f"execution {execution_id} ABANDONED (was {found})")
    return 0


async def _until_done_or_signal(
    launcher: Launcher, tasks: Sequence[asyncio.Task[None]], grace: float
) -> None:
    """Wait for the runs; on SIGINT/SIGTERM stop them after their chunks in flight."""
    with stop_signals() as stopping:
        waiter: asyncio.Future[Any] = asyncio.create_task(stopping.wait())
        everything: asyncio.Future[Any] = asyncio.gather(*tasks)
        await asyncio.wait({everything, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if stopping.is_set():
            log.info("signal received: stopping the runs after their chunks in flight")
            await launcher.shutdown(grace)
        await everything


# The settings a command reads, where it needs not all: migrate reaches the database
# only, token signs only (neither needs the other's secret).
_SETTINGS_READ = {
    "migrate": DATABASE_SETTINGS | LOG_SETTINGS,
    "token": LOG_SETTINGS | {"JWT_SECRET_KEY"},
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_arguments(argv)
    try:
        settings = load_settings(only=_SETTINGS_READ.get(args.command))
    except ConfigError as exc:
        return _bad_settings(exc)
    _configure_logging(settings)
    tune_gc()
    try:
        return _command_or_start_up_error(settings, args)
    except Exception:
        if settings.LOG_FORMAT != "json":
            raise
        # A log pipeline parses every line: the traceback goes in error.stack_trace.
        log.exception("the command failed")
        return 1  # as an uncaught exception exits


def _parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments; argparse's usage error (exit 2) is a log record where the logs are
    JSON, as every other line."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return _parser().parse_args(argv)
    except SystemExit:
        *_, last = said.getvalue().splitlines() or [""]
        _say_before_settings(said.getvalue(), last)  # `python -m app run: error: ...`
        raise


def _configure_logging(settings: Settings) -> None:
    configure_logging(
        settings.LOG_LEVEL, settings.LOG_FORMAT, settings.APPLICATION_NAME, settings.timezone
    )


def _bad_settings(exc: ConfigError) -> int:
    _say_before_settings(f"error: {exc}\n", f"error: {exc}")
    return EXIT_USAGE


def _say_before_settings(plain: str, line: str) -> None:
    """An error before the settings are read: `line` as a log record where the log's own
    settings are good and say json, else `plain` as it is."""
    try:
        log_settings = load_settings(only=LOG_SETTINGS)
    except ConfigError:
        log_settings = None
    if log_settings is not None and log_settings.LOG_FORMAT == "json" and line:
        _configure_logging(log_settings)
        log.error(line)
    else:
        sys.stderr.write(plain)


def _command_or_start_up_error(settings: Settings, args: argparse.Namespace) -> int:
    """The command; a database that cannot be used or a port that cannot be listened on
    is one line and exit 2."""
    try:
        return _command(settings, args)
    except (OperationalError, DatabaseUnavailable) as exc:
        line = connect_error_line(exc, settings.database.target)
        if line is None:
            raise
        _say(settings, f"error: {line}", logging.ERROR)
        return EXIT_USAGE
    except CannotListen as exc:
        _say(settings, f"error: {exc}", logging.ERROR)
        return EXIT_USAGE


def _token(settings: Settings, args: argparse.Namespace) -> int:
    """An ADMIN token alone on stdout, so that `TOKEN=$(python -m app token)` works."""
    try:
        lifetime = _ttl_seconds(args.ttl)
    except ValueError as exc:
        _say(settings, f"error: {exc}", logging.ERROR)
        return EXIT_USAGE
    token, _ = mint_token(
        settings.jwt_key,
        subject=args.sub,
        username=args.sub,
        member_type="ADMIN",
        lifetime_seconds=lifetime,
        now=time.time(),
    )
    print(token)
    return 0


def _command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "token":
        return _token(settings, args)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, args.dev_schema))
    if args.command == "run":
        if not getattr(args, DRY_RUN, False):
            return asyncio.run(_run(settings, args, None))
        if not args.output:
            return asyncio.run(_run(settings, args, sys.stdout))
        with open(args.output, "w", encoding="utf-8") as output:
            return asyncio.run(_run(settings, args, output))
    if args.command == "executions":
        return asyncio.run(_executions(settings, args.status, args.limit))
    if args.command in ("stop", "abandon"):
        return asyncio.run(_operate(settings, args.command, args.execution))
    if args.command == "restart":
        return asyncio.run(_restart(settings, args.execution, args.quiet))
    if args.command == "backfill":
        return asyncio.run(_backfill(settings, args))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
