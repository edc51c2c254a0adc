"""Command line: `python -m app migrate | run <job> | serve`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from asyncmy.errors import OperationalError

from app.composition import JOBS, open_launcher, serve
from app.config import (
    DATABASE_SETTINGS,
    LOG_SETTINGS,
    ConfigError,
    Settings,
    load_settings,
)
from app.edges.db import DatabaseStalled, connect_error_line, open_pool
from app.logs import configure_logging
from app.model import COMPLETED_WITH_SKIPS, LaunchRefused, Status
from app.pipeline.chunk import StepProgress
from app.runtime.job import find_job
from app.runtime.launcher import Launcher
from app.runtime.parameters import ParameterError
from app.schema.migrate import migrate

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
    run.add_argument("--run-date", help="YYYY-MM-DD")
    run.add_argument("--target-hour", help="0..23 (fan-out job)")
    run.add_argument("--rerun", action="store_true", help="run a completed instance again")
    run.add_argument(
        "--dry-run", action="store_true", help="fan-out job: write messages, publish nothing"
    )
    run.add_argument("--output", help="with --dry-run: a file for the messages (default stdout)")
    run.add_argument(
        "--quiet", action="store_true", help="no live progress line (none with LOG_FORMAT=json)"
    )

    commands.add_parser("serve", help="run the daemon: admin API, metrics, schedules")
    return parser


def _say(settings: Settings, text: str, level: int = logging.INFO) -> None:
    """The CLI's own lines on stderr: plain text, or log records where the logs are JSON
    (a log pipeline reading stderr parses every line)."""
    if settings.LOG_FORMAT == "json":
        log.log(level, text)
    else:
        print(text, file=sys.stderr)


async def _migrate(settings: Settings, dev_schema: bool) -> int:
    async with open_pool(settings.database) as pool:
        applied = await migrate(pool, dev_schema=dev_schema)
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
    raw = {"runDate": args.run_date or "", "targetHour": args.target_hour or ""}
    if args.dry_run:
        raw["dryRun"] = "true"
    spec = find_job(JOBS, args.job)
    publishes = spec.publishes and not args.dry_run
    async with open_launcher(settings, broker=publishes) as launcher:
        try:
            run = await launcher.launch(spec, raw, rerun=args.rerun, dry_run_output=output)
        except ParameterError as exc:
            _say(settings, f"error: {exc}", logging.ERROR)
            return EXIT_USAGE
        except LaunchRefused as exc:
            hint = " (use --rerun to run it again)" if "completed" in str(exc) else ""
            _say(settings, f"not launched: {exc}{hint}", logging.WARNING)
            return EXIT_REFUSED
        assert run.task is not None
        progress = None
        if not args.quiet and settings.LOG_FORMAT == "text":
            progress = asyncio.create_task(_show_progress(run.progress, sys.stderr))
        try:
            await _until_done_or_signal(launcher, run.task, settings.SHUTDOWN_GRACE_SECONDS)
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
        f"{spec.name} {kind} {final.id}: {final.exit_code}; read {counts.read:,}, "
        f"written {counts.written:,}, filtered {counts.filtered:,}, skipped {counts.skipped:,}"
        + (f"; {final.exit_message}" if final.exit_message else ""),
        logging.INFO if final.status == Status.COMPLETED else logging.WARNING,
    )
    if final.status != Status.COMPLETED:
        return EXIT_FAILED
    return EXIT_SKIPPED if final.exit_code == COMPLETED_WITH_SKIPS else 0


async def _until_done_or_signal(launcher: Launcher, task: asyncio.Task[None], grace: float) -> None:
    """Wait for the job; on SIGINT/SIGTERM stop it after its chunks in flight (STOPPED)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if stopping.is_set():
            log.info("signal received: stopping the job after its chunks in flight")
            await launcher.shutdown(grace)
        await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _tune_gc() -> None:
    """Streaming millions of rows allocates tuples by the million, none of them cyclic:
    the default thresholds run full collections over everything imported, a fifth of
    the stats job's CPU. Freeze what start-up made, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # migrate reaches the database only: it needs no JWT_SECRET_KEY, nor any other.
        only = DATABASE_SETTINGS | LOG_SETTINGS if args.command == "migrate" else None
        settings = load_settings(only=only)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(
        settings.LOG_LEVEL, settings.LOG_FORMAT, settings.APPLICATION_NAME, settings.timezone
    )
    _tune_gc()
    try:
        return _command(settings, args)
    except (OperationalError, DatabaseStalled) as exc:
        line = connect_error_line(exc, settings.database.target)
        if line is None:
            raise
        _say(settings, f"error: {line}", logging.ERROR)
        return EXIT_USAGE


def _command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "migrate":
        return asyncio.run(_migrate(settings, args.dev_schema))
    if args.command == "run":
        if not args.dry_run:
            return asyncio.run(_run(settings, args, None))
        if not args.output:
            return asyncio.run(_run(settings, args, sys.stdout))
        with open(args.output, "w", encoding="utf-8") as output:
            return asyncio.run(_run(settings, args, output))
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
