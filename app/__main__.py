"""Command line: `python -m app migrate | run | serve | executions | stop | restart |
abandon | backfill | token | prepare-rollback`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import re
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from asyncmy.errors import OperationalError

from app.composition import JOBS, open_launcher, serve
from app.config import (
    BROKER_SETTINGS,
    DATABASE_SETTINGS,
    LOG_SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    parse_time_zone,
)
from app.edges.auth import TOKEN_LIFETIME_SECONDS, mint_token
from app.edges.db import DatabaseUnavailable, connect_error_line, open_pool
from app.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_SKIPPED,
    EXIT_USAGE,
    Refusal,
)
from app.logs import configure_logging
from app.model import COMPLETED_WITH_SKIPS, AlreadyComplete, JobExecution, Status
from app.pipeline.chunk import StepProgress
from app.repository.mariadb import MariaDbJobRepository
from app.runtime.job import JobSpec, Parameter, declared_parameters, find_job, takers
from app.runtime.launcher import Launcher, RunningJob
from app.runtime.memory import tune_gc
from app.runtime.operator import JobOperator, Stopped
from app.runtime.parameters import BOOLEAN, DRY_RUN, backfill_dates, now_in
from app.runtime.rollback import ABANDON, STOP, SpringZone, prepare_rollback
from app.runtime.signals import stop_signals
from app.schema.migrate import migrate

log = logging.getLogger("app")


# What each exit code means, per command: `--help` shows them (README, "The commands").
_EXIT_CODES = {
    EXIT_OK: "done: COMPLETED, every item written or filtered",
    EXIT_FAILED: "FAILED or STOPPED, restartable from its checkpoint; Ctrl-C or SIGTERM"
    " interrupt a run after its chunks in flight (FAILED, exit code INTERRUPTED; past"
    " SHUTDOWN_GRACE_SECONDS it is cancelled)",
    EXIT_USAGE: "bad arguments or settings (one `error:` line), or a database that cannot be used",
    EXIT_REFUSED: "not launched: the instance is running, or completed (--rerun runs it"
    " again), or a real run was not confirmed",
    EXIT_SKIPPED: "COMPLETED WITH SKIPS: the run ended, but some items were skipped (the"
    " exit message names the first and why)",
}
_OPERATED_EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_USAGE: "no such execution, or bad arguments or settings",
    EXIT_REFUSED: "not done: the execution's status does not allow it",
}


_RESTART_EXIT_CODES = {
    **_EXIT_CODES,
    EXIT_USAGE: "no such execution, " + _EXIT_CODES[EXIT_USAGE],
    EXIT_REFUSED: "not restarted: the execution is not FAILED or STOPPED, not its instance's"
    " last, or of a job this service does not run; or its instance runs or completed since",
}


def _exit_codes(codes: dict[int, str]) -> str:
    return "exit codes:\n" + "\n".join(
        textwrap.fill(meaning, 88, initial_indent=f"  {code}  ", subsequent_indent="     ")
        for code, meaning in codes.items()
    )


def _command_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    codes: dict[int, str] | None = None,
    **extra: Any,
) -> argparse.ArgumentParser:
    """A command with its one-line help, and its exit codes after its options."""
    return commands.add_parser(
        name,
        help=text,
        description=textwrap.fill(extra.pop("description", text[0].upper() + text[1:] + "."), 88),
        epilog=_exit_codes(codes or {EXIT_OK: "done", EXIT_USAGE: _EXIT_CODES[EXIT_USAGE]}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **extra,
    )


class _Once(argparse.Action):
    """An option given at most once: a second is a usage error naming it, as the API
    refuses a parameter given twice (before, the last one was taken without a word)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest) is not None:
            raise argparse.ArgumentError(self, "given twice; give it once")
        setattr(namespace, self.dest, values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description=__doc__,
        epilog="`python -m app COMMAND --help`: a command's options, defaults and exit codes.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    migrate_cmd = _command_parser(commands, "migrate", "apply the schema migrations")
    migrate_cmd.add_argument(
        "--dev-schema",
        action="store_true",
        help="also create the peer-owned tables (local work and tests only)",
    )
    migrate_cmd.add_argument(
        "--dev-queue",
        action="store_true",
        help="also declare the notification service's queue, bound to the routing key, in"
        " RABBITMQ_VHOST, as that service does (local work only: without it, a fan-out's"
        " pushes come back unroutable)",
    )

    run = _command_parser(
        commands,
        "run",
        "run one job in the foreground",
        _EXIT_CODES,
        description="Run one job in the foreground: live progress on a terminal, one summary"
        " line at the end. A job's options are its declared parameters: an option the job"
        " does not take is refused.",
    )
    run.add_argument("job", choices=sorted(spec.path for spec in JOBS))
    for parameter, jobs in declared_parameters(JOBS).values():
        text = f"{parameter.help} ({takers(parameter.name, jobs)})"
        if parameter.type == BOOLEAN:
            run.add_argument(parameter.flag, dest=parameter.name, action="store_true", help=text)
        else:
            metavar = parameter.flag.removeprefix("--").replace("-", "_").upper()
            run.add_argument(
                parameter.flag, dest=parameter.name, metavar=metavar, action=_Once, help=text
            )
    run.add_argument(
        "--rerun", action="store_true", help="run a completed instance again (default: exit 3)"
    )
    run.add_argument(
        "--output", action=_Once, help="with --dry-run: a file for what it writes (default: stdout)"
    )
    run.add_argument(
        "--quiet", action="store_true", help="no live progress line (none with LOG_FORMAT=json)"
    )
    run.add_argument(
        "--yes",
        action="store_true",
        help="a real run of a job that publishes, with a parameter left to its default (the"
        " fan-out without --run-date or --target-hour: today, this hour), without asking;"
        " without it, the run asks on a terminal and is refused elsewhere",
    )

    _command_parser(commands, "serve", "run the daemon: admin API, metrics, schedules", {
        EXIT_OK: "stopped by SIGTERM or SIGINT, every outcome recorded",
        EXIT_FAILED: "an outcome could not be recorded before the deadline (it says which)",
        EXIT_USAGE: "bad settings, a database that cannot be used, or SERVER_PORT in use",
    })  # fmt: skip

    listing = _command_parser(commands, "executions", "recent executions of every job")
    listing.add_argument(
        "--status", choices=[status.value for status in Status], help="only this status"
    )
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    for name, text in (
        ("stop", "ask a running execution to stop (on whichever replica runs it)"),
        ("abandon", "mark a STOPPED, FAILED or STOPPING execution ABANDONED (never restarted)"),
        ("restart", "restart a FAILED or STOPPED execution from its checkpoint, here"),
    ):
        codes = _RESTART_EXIT_CODES if name == "restart" else _OPERATED_EXIT_CODES
        command = _command_parser(commands, name, text, codes)
        command.add_argument("execution", type=int, help="the execution id")
        if name == "restart":
            command.add_argument("--quiet", action="store_true", help="no live progress line")

    backfill = _command_parser(
        commands,
        "backfill",
        "run a job for every date of a range, each its own instance",
        {**_EXIT_CODES, EXIT_OK: "every date COMPLETED; else the worst of the runs' codes: 1,"
         " then 3, then 4"},
    )  # fmt: skip
    backfill.add_argument("job", choices=sorted(spec.path for spec in JOBS if spec.backfills))
    backfill.add_argument("--from", dest="first", required=True, action=_Once, help="YYYY-MM-DD")
    backfill.add_argument(
        "--to", dest="last", required=True, action=_Once, help="YYYY-MM-DD (included)"
    )
    backfill.add_argument(
        "--rerun", action="store_true", help="run completed dates again (default: exit 3)"
    )

    token = _command_parser(
        commands,
        "token",
        "print a short-lived admin token for the API and the console (for operators"
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

    rollback = commands.add_parser(
        "prepare-rollback",
        help="before a roll-back to the Spring Batch service: list what it would trip on;"
        " stop or abandon the running executions; exit 0 when nothing is left",
        description="List what Spring Batch 5.2 would trip on in the job repository (running"
        " executions, instances it would refuse, a second clock); offer to stop or abandon"
        " each running execution; exit 0 when nothing is left, 1 otherwise (docs/rollback.md).",
    )
    rollback.add_argument(
        "--spring-timezone",
        metavar="ZONE",
        help="the zone the old service writes BATCH_* times in: its JDBC URL's serverTimezone"
        " (or connectionTimeZone), else its JVM's zone",
    )
    answer = rollback.add_mutually_exclusive_group()
    answer.add_argument(
        "--stop", action="store_true", help="stop every running execution, without asking"
    )
    answer.add_argument(
        "--abandon", action="store_true", help="abandon every running execution, without asking"
    )
    return parser


class NotTaken(Refusal):
    """An option the job does not declare (before, dropped without a word)."""

    code = "INVALID_PARAMETER"


def _given_parameters(args: argparse.Namespace, spec: JobSpec) -> dict[str, str]:
    """The parameters given on the command line, as the API takes them (a flag: true);
    NotTaken for an option of another job."""
    given = {name: getattr(args, name) for name in declared_parameters(JOBS)}
    raw = {name: "true" if value is True else value for name, value in given.items() if value}
    undeclared = spec.undeclared(raw)
    if undeclared:
        flags = ", ".join(_flag(name) for name in undeclared)
        takes = ", ".join(parameter.flag for parameter in spec.parameters) or "none"
        raise NotTaken(f"{spec.path} takes no {flags} (its options: {takes})")
    return raw


def _flag(name: str) -> str:
    parameter, _ = declared_parameters(JOBS)[name]
    return parameter.flag


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


async def _migrate(settings: Settings, dev_schema: bool, dev_queue: bool) -> int:
    async with open_pool(settings.database) as pool:
        applied = await migrate(pool, dev_schema=dev_schema)
        repository = MariaDbJobRepository.of(pool, settings)
        for line in await repository.second_clock_warnings(settings.database.clock.source):
            _say(settings, f"warning: {line}", logging.WARNING)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    if dev_queue:  # imported here: the broker's client is no part of any other command
        from app.contracts import CONSUMER_QUEUE, ROUTING_KEY
        from app.devtools.consumer_queue import CannotDeclare, declare_consumer_queue

        where = (
            f"{settings.RABBITMQ_HOST}:{settings.RABBITMQ_PORT} vhost {settings.RABBITMQ_VHOST!r}"
        )
        try:
            held = await declare_consumer_queue(settings.broker.url)
        except CannotDeclare as exc:
            _say(settings, f"error: the consumer queue at {where}: {exc}", logging.ERROR)
            return EXIT_USAGE
        print(f"consumer queue {CONSUMER_QUEUE} at {where}: bound to {ROUTING_KEY} ({held} held)")
    return 0


class _LiveLine:
    """The progress line: on a terminal rewritten in place, and ended (a newline) before
    any other line reaches the terminal, a log record's or the summary's; elsewhere, a
    plain line each time."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.open = False  # a line is drawn and not ended

    def show(self, text: str) -> None:
        self.out.write(f"\r{text}\x1b[K" if self.live else f"{text}\n")
        self.out.flush()
        self.open = self.live

    def end(self, record: object = None) -> bool:
        """End the drawn line, if any; also a logging filter (it lets every record pass)."""
        if self.open:
            self.out.write("\n")
            self.out.flush()
            self.open = False
        return True


async def _show_progress(progress: StepProgress, line: _LiveLine) -> None:
    """The live counts, once a second."""
    while True:
        await asyncio.sleep(1.0)
        line.show(
            f"read {progress.read:,}  written {progress.written:,}  filtered {progress.filtered:,}"
            f"  skipped {progress.skipped:,}  {progress.rate():,.0f} items/s"
        )


def _run_command(settings: Settings, args: argparse.Namespace) -> int:
    """`run`: the options checked against the job's declaration before anything is
    opened; a real run of a job that publishes with a parameter left to its default
    confirmed first; then the run, its output where a dry run writes."""
    spec = find_job(JOBS, args.job)
    raw = _given_parameters(args, spec)
    defaulted = _left_to_default(spec, raw)
    if defaulted and not args.yes:
        flags = ", ".join(parameter.flag for parameter in defaulted)
        if not sys.stdin.isatty():
            _say(
                settings,
                f"error: a real run of {spec.path} publishes, and {flags} not given would"
                f" take {', '.join(str(p.default) for p in defaulted)}: give {flags}, or"
                " --yes to run it so",
                logging.ERROR,
            )
            return EXIT_USAGE
        confirmed = _confirm(settings, spec, raw)
        if confirmed is None:
            _say(settings, f"not launched: {spec.path} not confirmed", logging.WARNING)
            return EXIT_REFUSED
        raw = confirmed
    if raw.get(DRY_RUN) != "true":
        return asyncio.run(_run(settings, args, raw, None))
    if not args.output:
        return asyncio.run(_run(settings, args, raw, sys.stdout))
    with open(args.output, "w", encoding="utf-8") as output:
        return asyncio.run(_run(settings, args, raw, output))


def _left_to_default(spec: JobSpec, raw: Mapping[str, str]) -> list[Parameter]:
    """The parameters a real run of a job that publishes (one with a question for it)
    would take from its defaults: the fan-out's runDate and targetHour, which move."""
    if not (spec.publishes and spec.confirm) or raw.get(DRY_RUN) == "true":
        return []
    return [
        p for p in spec.parameters if p.name != DRY_RUN and not p.required and p.name not in raw
    ]


def _confirm(settings: Settings, spec: JobSpec, raw: Mapping[str, str]) -> dict[str, str] | None:
    """The job's own question, its values and estimate filled in, answered on the
    terminal: the parameters it named, given explicitly (the hour may turn meanwhile),
    or None."""
    values = {
        p.name: p.value
        for p in spec.read(raw, now_in(settings.timezone))
        if p.identifying and p.name != DRY_RUN
    }
    estimate = asyncio.run(_estimate(settings, spec, values)) if spec.estimate else ""
    filled = {**values, "zone": settings.APP_TIMEZONE, "estimate": estimate}
    question = re.sub(r"\{(\w+)\}", lambda m: filled.get(m[1], m[0]), spec.confirm)
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if not answer.endswith("\n"):  # Ctrl-C or Ctrl-D: the question's line ended here
        sys.stderr.write("\n")
    return {**raw, **values} if answer.strip().lower() in ("y", "yes") else None


async def _estimate(settings: Settings, spec: JobSpec, values: Mapping[str, str]) -> str:
    assert spec.estimate is not None
    async with open_launcher(settings, broker=False) as launcher:
        found = await spec.estimate(launcher.resources, values)
    return f"about {found.count:,} {found.unit}"


async def _run(
    settings: Settings, args: argparse.Namespace, raw: dict[str, str], output: TextIO | None
) -> int:
    spec = find_job(JOBS, args.job)
    publishes = spec.publishes and raw.get(DRY_RUN) != "true"
    async with open_launcher(settings, broker=publishes) as launcher:
        run = await JobOperator.of(launcher).start(
            spec.path, raw, rerun=args.rerun, dry_run_output=output
        )
        return await _follow(settings, launcher, run, quiet=args.quiet)


async def _follow(settings: Settings, launcher: Launcher, run: RunningJob, *, quiet: bool) -> int:
    """Wait for the run with live progress; its last line; its exit code."""
    line = _LiveLine(sys.stderr)
    progress = None
    handlers = logging.getLogger().handlers
    if not quiet and settings.LOG_FORMAT == "text":
        progress = asyncio.create_task(_show_progress(run.progress, line))
        for handler in handlers:
            handler.addFilter(line.end)
    try:
        await _until_done_or_signal(launcher, [run.task], settings.SHUTDOWN_GRACE_SECONDS)
    finally:
        if progress is not None:
            progress.cancel()
            for handler in handlers:
                handler.removeFilter(line.end)
        line.end()
    final = await launcher.repository.get_execution(run.execution.id)
    assert final is not None
    # The committed counts, as `executions` and the API show them: a stopped run's chunks
    # read but never processed are no part of them.
    read, written, filtered, skipped = _committed(final)
    kind = "dry run" if final.dry_run else "execution"
    # A job that publishes: its messages, which are not its items (a member, one message
    # per push token).
    messages = "".join(
        f"; messages published {sent['published']:,}, confirmed {sent['confirmed']:,}"
        for sent in (step.context.get("messages") for step in final.steps)
        if sent
    )
    _say(
        settings,
        f"{run.spec.name} {kind} {final.id}: {final.exit_code}; read {read:,}, "
        f"written {written:,}, filtered {filtered:,}, skipped {skipped:,}"
        + messages
        + (f"; {final.exit_message}" if final.exit_message else ""),
        logging.INFO if final.status == Status.COMPLETED else logging.WARNING,
    )
    return _exit_code(final)


def _committed(execution: JobExecution) -> tuple[int, int, int, int]:
    """Its committed counts over its steps: read, written, filtered, skipped."""
    steps = execution.steps
    return (
        sum(step.read_count for step in steps),
        sum(step.write_count for step in steps),
        sum(step.filter_count for step in steps),
        sum(step.skip_count for step in steps),
    )


def _exit_code(execution: JobExecution) -> int:
    if execution.status != Status.COMPLETED:
        return EXIT_FAILED
    return EXIT_SKIPPED if execution.exit_code == COMPLETED_WITH_SKIPS else 0


async def _restart(settings: Settings, execution_id: int, quiet: bool) -> int:
    async with open_launcher(settings, broker=True) as launcher:
        run = await JobOperator.of(launcher).restart(execution_id)
        return await _follow(settings, launcher, run, quiet=quiet)


async def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    """Every date its own instance, MAX_RUNNING_EXECUTIONS at a time; one summary."""
    days = backfill_dates(args.first, args.last)  # checked before connecting
    spec = find_job(JOBS, args.job)
    outcomes: list[tuple[str, str, int]] = []  # run date, what became of it, exit code
    async with open_launcher(settings, broker=False) as launcher:
        runs, refusals = await JobOperator.of(launcher).backfill(
            spec.path, args.first, args.last, {}, rerun=args.rerun
        )
        for day, refusal in refusals:
            outcomes.append((day.isoformat(), f"not launched: {refusal}", refusal.exit_code))
        tasks = [run.task for _, run in runs]
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
        repository = MariaDbJobRepository.of(pool, settings)
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
        counts = "/".join(map(str, _committed(e)))
        parameters = " ".join(
            f"{k}={v}" for k, v in e.parameters.items() if k not in ("dryRun", "run.id")
        )
        # The status, but the exit code of a completed run (COMPLETED WITH SKIPS): an
        # abandoned one keeps the exit code it had, as Spring's abandon writes it.
        exit_code = e.exit_code if e.status == Status.COMPLETED else e.status.value
        print(
            f"{e.id:>7}  {e.job_name:<27}  {exit_code:<20}  {start:<19}  {counts:<29}  "
            f"{parameters}{' (dry run)' if e.dry_run else ''}"
            + (f"  {e.exit_message[:120]}" if e.exit_message else "")
        )
    return 0


async def _operate(settings: Settings, action: str, execution_id: int) -> int:
    """stop or abandon, through the job repository (any replica's runner obeys)."""
    async with open_pool(settings.database) as pool:
        repository = MariaDbJobRepository.of(pool, settings)
        operator = JobOperator(repository)
        if action == "stop":
            said = _stopped(execution_id, await operator.stop(execution_id))
        else:
            found = await operator.abandon(execution_id)
            said = f"execution {execution_id} ABANDONED (was {found})"
    _say(settings, said)
    return 0


def _stopped(execution_id: int, stopped: Stopped) -> str:
    """What a stop did, in words."""
    reached = stopped.execution_id
    went_on = "" if reached == execution_id else f"its run went on as execution {reached}; "
    if stopped.was == Status.FAILED:
        return (
            f"stopped: {went_on}execution {reached} had ended FAILED: STOPPED now,"
            " restartable by an operator, never automatically"
        )
    return (
        f"stop requested: {went_on}execution {reached} was {stopped.was}; it ends STOPPED"
        " after the chunks it is processing, at its next chunk commit"
    )


async def _prepare_rollback(settings: Settings, args: argparse.Namespace) -> int:
    spring = None
    if args.spring_timezone is not None:
        try:
            spring = SpringZone(parse_time_zone(args.spring_timezone), args.spring_timezone)
        except ValueError as exc:
            _say(settings, f"error: --spring-timezone {exc}", logging.ERROR)
            return EXIT_USAGE
    action = STOP if args.stop else ABANDON if args.abandon else None
    async with open_pool(settings.database) as pool:
        ready = await prepare_rollback(
            MariaDbJobRepository.of(pool, settings),
            settings.database.clock,
            spring,
            action=action,
            ask=_ask,
            say=print,
            wait=settings.JOB_ABANDON_AFTER_SECONDS + settings.HEARTBEAT_SECONDS,
        )
    return 0 if ready else EXIT_FAILED


async def _ask(question: str) -> str:
    """The operator's answer on stdin (read off the event loop); none where stdin ended.
    Answers piped in are echoed, so that the transcript reads as a terminal's."""
    try:
        answer = await asyncio.to_thread(input, question)
    except EOFError:
        answer = ""
    if not sys.stdin.isatty():
        print(answer)
    return answer


async def _until_done_or_signal(
    launcher: Launcher, tasks: Sequence[asyncio.Task[None]], grace: float
) -> None:
    """Wait for the runs; on SIGINT/SIGTERM stop them after their chunks in flight. A run
    cancelled past the grace has its outcome recorded (STOPPED) like any other: its
    cancellation is not this command's failure. A runner's own failure is raised."""
    with stop_signals() as stopping:
        waiter: asyncio.Future[Any] = asyncio.create_task(stopping.wait())
        # A cancelled run is one of the results, not the cancellation of the whole.
        everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait({everything, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if stopping.is_set():
            log.info("signal received: stopping the runs after their chunks in flight")
            await launcher.shutdown(grace)
        await everything
    for task in tasks:
        if not task.cancelled():
            task.result()


# The settings a command reads, where it needs not all: migrate reaches the database
# only, token signs only (neither needs the other's secret); the operator's commands on
# executions read and write the job repository alone (no peer, no broker, no token).
_REPOSITORY_SETTINGS = DATABASE_SETTINGS | LOG_SETTINGS | {"JOB_ABANDON_AFTER_SECONDS"}
_SETTINGS_READ = {
    "migrate": DATABASE_SETTINGS | LOG_SETTINGS,
    "token": LOG_SETTINGS | {"JWT_SECRET_KEY"},
    "executions": _REPOSITORY_SETTINGS,
    "stop": _REPOSITORY_SETTINGS,
    "abandon": _REPOSITORY_SETTINGS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_arguments(argv)
    only = _SETTINGS_READ.get(args.command)
    if only is not None and getattr(args, "dev_queue", False):
        only |= BROKER_SETTINGS
    try:
        settings = load_settings(only=only)
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
        return EXIT_FAILED  # as an uncaught exception exits


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
    return exc.exit_code


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
    """The command; a refusal (`_refused`) or a database that cannot be used is one line
    and its exit code."""
    try:
        return _command(settings, args)
    except Refusal as exc:
        return _refused(settings, args.command, exc)
    except (OperationalError, DatabaseUnavailable) as exc:
        line = connect_error_line(exc, settings.database.target)
        if line is None:
            raise
        _say(settings, f"error: {line}", logging.ERROR)
        return EXIT_USAGE


# What a command refused says it did not do.
_NOT_DONE = {"run": "not launched", "restart": "not restarted"}


def _refused(settings: Settings, command: str, refusal: Refusal) -> int:
    """Every command's refusals, mapped by class: bad usage (exit 2) is an `error:` line;
    a refusal of the command itself (exit 3) says what was not done, and, for a run of a
    completed instance, how to run it again."""
    if refusal.exit_code == EXIT_USAGE:
        _say(settings, f"error: {refusal}", logging.ERROR)
        return EXIT_USAGE
    rerun = command == "run" and isinstance(refusal, AlreadyComplete)
    hint = " (use --rerun to run it again)" if rerun else ""
    _say(settings, f"{_NOT_DONE.get(command, 'not done')}: {refusal}{hint}", logging.WARNING)
    return refusal.exit_code


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
        return asyncio.run(_migrate(settings, args.dev_schema, args.dev_queue))
    if args.command == "run":
        return _run_command(settings, args)
    if args.command == "executions":
        return asyncio.run(_executions(settings, args.status, args.limit))
    if args.command in ("stop", "abandon"):
        return asyncio.run(_operate(settings, args.command, args.execution))
    if args.command == "restart":
        return asyncio.run(_restart(settings, args.execution, args.quiet))
    if args.command == "backfill":
        return asyncio.run(_backfill(settings, args))
    if args.command == "prepare-rollback":
        return asyncio.run(_prepare_rollback(settings, args))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
