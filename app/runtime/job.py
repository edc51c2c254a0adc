"""What a job is: its declaration (name, path, parameters, schedule, what its writer
needs), from which the CLI, the admin API's document, the console's forms and the
schedules derive, and how to build its step."""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from app.errors import Refusal
from app.model import JobParameter
from app.pipeline.chunk import StepDefinition
from app.runtime.parameters import (
    BOOLEAN,
    DRY_RUN,
    INTEGER,
    LOCAL_DATE,
    LONG,
    ParameterError,
    iso_date,
)
from app.runtime.resources import Resources


@dataclass(frozen=True)
class JobContext:
    """One execution's view of the world, handed to the job's step builder."""

    resources: Resources
    execution_id: int
    parameters: Mapping[str, str]  # as recorded: runDate=2025-10-31, targetHour=10, ...
    dry_run_output: TextIO | None = None  # a dry run: where its writer writes


@dataclass(frozen=True)
class Estimate:
    """How much a run would process, counted before it is launched."""

    count: int
    unit: str  # what is counted, plural: "members"


@dataclass(frozen=True)
class Parameter:
    """A parameter as operators give it: `--run-date` in the CLI, `runDate` in the API."""

    name: str  # as recorded and in the API: runDate
    type: str  # the Java type Spring records: java.time.LocalDate (parameters.LOCAL_DATE)
    help: str  # what it is: the CLI's help, the OpenAPI document, the console's form
    default: str | None = None  # its value when not given, in words; None: required
    choices: tuple[str, ...] = ()  # the values it takes, where they are few (a select)

    @property
    def flag(self) -> str:
        """Its CLI option: runDate is --run-date."""
        return "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", self.name).lower()

    @property
    def required(self) -> bool:
        return self.default is None

    def check(self, value: str) -> None:
        """A ParameterError naming it unless `value` reads as its type: a job's parse
        may then read it so (`int(raw["limit"])`) without failing on the operator's typo
        (before, a 500)."""
        if self.type in (INTEGER, LONG) and not _INTEGER.fullmatch(value):
            values = [int(choice) for choice in self.choices]
            bounds = f" from {min(values)} to {max(values)}" if values else ""
            raise ParameterError(self.name, f"must be an integer{bounds}, got {value[:40]!r}")
        if self.type == LOCAL_DATE:
            iso_date(self.name, value)
        if self.type == BOOLEAN and value.lower() not in ("true", "false"):
            raise ParameterError(self.name, f"must be true or false, got {value[:40]!r}")


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")  # within a LONG


# The parameter of a job that can dry-run: it declares this among its parameters, and its
# parse gives `parameters.dry_run` (its step then writes to the dry run's output).
DRY_RUN_PARAMETER = Parameter(
    DRY_RUN,
    BOOLEAN,
    "everything but storing or publishing: what the run would store or publish goes as JSON"
    " lines to DRY_RUN_DIR (the CLI: stdout or --output); an instance of its own (dryRun=true"
    " and a fresh run.id), which no real run meets",
    default="false",
)


@dataclass(frozen=True)
class Cron:
    """When the daemon launches the job, in APP_TIMEZONE."""

    cron: str
    parameters: Callable[[datetime], dict[str, str]]  # from the scheduled time
    punctual: bool = False  # worth running only within the misfire grace of its time
    # How long after its time a scheduled run may take to end COMPLETED: a run still
    # not COMPLETED then raises the alert BatchScheduledRunNotCompleted (the metric
    # batch_job_scheduled_run_timestamp_seconds), whichever job it is.
    completes_within: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class JobSpec:
    name: str  # the Spring job name, as recorded in BATCH_JOB_INSTANCE
    path: str  # its name in the CLI and the admin API
    title: str  # its name for people: the console's form, the API's job list
    # What `parse` reads, as declared to operators; nothing else is taken (`read`). A job
    # that declares DRY_RUN_PARAMETER can dry-run; one that does not refuses dryRun.
    parameters: tuple[Parameter, ...]
    parse: Callable[[Mapping[str, str], datetime], list[JobParameter]]  # raises ParameterError
    build: Callable[[JobContext], StepDefinition[Any, Any]]
    publishes: bool = False  # its writer needs the broker, unless in a dry run
    backfills: bool = False  # `backfill` runs it for every date of a range (runDate)
    schedule: Cron | None = None  # None: launched by operators only
    # The console's question before a real run of a job that publishes: {name} is the
    # form's value of that parameter, {zone} APP_TIMEZONE, {estimate} what it would read.
    confirm: str = ""
    # What a run with these parsed parameters would process (the console's confirmation
    # before a real fan-out); None: the job has no estimate.
    estimate: Callable[[Resources, Mapping[str, str]], Awaitable[Estimate]] | None = None

    @property
    def dry_runs(self) -> bool:
        """Whether the job can dry-run (it declares dryRun); one that cannot refuses it."""
        return any(parameter.name == DRY_RUN for parameter in self.parameters)

    def undeclared(self, names: Iterable[str]) -> list[str]:
        """Those of `names` that are not parameters of this job, in their order."""
        declared = {parameter.name for parameter in self.parameters}
        return [name for name in names if name not in declared]

    def read(self, raw: Mapping[str, str], now: datetime) -> list[JobParameter]:
        """The parameters an operator (or a schedule) gave, parsed: a name the job does
        not declare is a ParameterError naming it, never dropped (a `dryRun` given to a
        job that cannot dry-run would otherwise make a real run)."""
        for name in self.undeclared(raw):
            takes = ", ".join(parameter.name for parameter in self.parameters) or "none"
            raise ParameterError(name, f"is not a parameter of {self.path} (it takes {takes})")
        for parameter in self.parameters:
            if raw.get(parameter.name):  # empty: its default
                parameter.check(raw[parameter.name])
        return self.parse(raw, now)


def code(target: str) -> Callable[..., Any]:
    """The function `module:name`, imported at its first call: a job's declaration names
    its step code so, and a run loads its own job's code and libraries alone (the
    fan-out job's broker client is no part of a stats run's start-up)."""
    module, _, name = target.partition(":")

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args)

    call.__qualname__ = call.__name__ = target
    return call


def declared_parameters(jobs: Iterable[JobSpec]) -> dict[str, tuple[Parameter, list[JobSpec]]]:
    """Every job's parameters by name (as the first job declares each), with the jobs
    that take it: the CLI's `run` options, the API's query parameters."""
    declared: dict[str, tuple[Parameter, list[JobSpec]]] = {}
    for spec in jobs:
        for parameter in spec.parameters:
            declared.setdefault(parameter.name, (parameter, []))[1].append(spec)
    return declared


def takers(name: str, jobs: Iterable[JobSpec]) -> str:
    """Which of `jobs` take the parameter `name`, each with its default or `required`,
    and its own help where it differs from the first's: the CLI's help, the OpenAPI
    document's description (`coupon-usage-stats: required; ...: default today`)."""
    found = [(spec, p) for spec in jobs for p in spec.parameters if p.name == name]
    first = found[0][1].help if found else ""
    return "; ".join(
        f"{spec.path}: "
        + ("required" if mine.required else f"default {mine.default}")
        + ("" if mine.help == first else f", {mine.help}")
        for spec, mine in found
    )


class UnknownJob(Refusal):
    code = "INVALID_PARAMETER"


def find_job(jobs: Iterable[JobSpec], name: str) -> JobSpec:
    """By CLI/API path (`coupon-usage-stats`) or Spring name (`couponUsageStatsJob`)."""
    known = []
    for spec in jobs:
        if name in (spec.path, spec.name):
            return spec
        known.append(spec.path)
    raise UnknownJob(f"unknown job {name!r}; known: {', '.join(known)}")
